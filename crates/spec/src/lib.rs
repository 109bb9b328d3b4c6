//! The workflow language: YAML files operators write, parsed into typed, checked workflows.
//!
//! Architecture invariant: this crate knows nothing of the database, the network or the
//! engine. It reads files (a workflow, `segments.yaml`, templates) and returns either a
//! [`Workflow`] or every problem found, each located as `file:line:column`.

pub mod catalogue;
pub mod expr;
pub mod fields;

mod bundle;
mod compile;
mod diag;
mod duration;
mod keys;
mod load;
mod model;
pub mod monitor;
pub mod periods;
pub mod rules;
pub mod teams;
mod template;
mod workflow;

pub use bundle::Bundle;
pub use compile::{Segments, compile, compile_segments};
pub use diag::Diagnostic;
pub use duration::{duration_millis, parse_duration};
pub use load::{calendar_names, load_dir, load_file, schema_json};
pub use template::Template;
pub use workflow::*;
