//! Produces subscriber rows ([`store::subscribers::NewSubscriber`]) for the campaign daemon:
//! a deterministic synthetic base for demos and load tests ([`generate`]), and rows imported
//! from an operator's CSV export through a YAML mapping file ([`parse_mapping`], [`read_csv`]).
//! Both follow an attribute [`catalogue::Catalogue`] given by the caller: names, kinds, enum
//! values, ranges and required-ness come from it, never from a list here.
//!
//! This crate never touches the database: the caller inserts what it returns, so an import
//! that fails validation leaves the subscriber table exactly as it was.

pub mod import;
pub mod past;
pub mod synthetic;

pub use import::{
    CsvImport, ImportError, ImportErrors, Mapping, Record, RecordKind, RecordMapping, RecordReader,
    parse_mapping, read_csv,
};
pub use synthetic::generate;
