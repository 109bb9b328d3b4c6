pub mod filter_sql;
