pub mod expr;
pub mod fields;
