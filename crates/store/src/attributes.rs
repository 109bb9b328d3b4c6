//! The catalogue's columns: each declared attribute is a column of `subscriber`, named as
//! the attribute, created by [`Store::apply_catalogue`] (`campaignd migrate`).
//!
//! The database itself is the record of what was applied: a declared attribute is usable
//! when `subscriber` has a column of that name whose type stores its kind. Columns are never
//! dropped (an attribute taken out of the catalogue keeps its data and is reported as
//! unused), and a column's type is never changed in place (that needs a data migration).

use std::sync::Arc;

use catalogue::{Catalogue, Storage};
use sea_orm::{ConnectionTrait, DbBackend};

use crate::{Result, Store, StoreError, query};

/// What [`Store::apply_catalogue`] changed and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogueReport {
    /// Columns added for newly declared attributes.
    pub added: Vec<String>,
    /// Indexes created for attributes declared `indexed: true`.
    pub indexed: Vec<String>,
    /// Indexes dropped for attributes no longer declared `indexed`.
    pub unindexed: Vec<String>,
    /// Columns of `subscriber` no attribute declares: kept with their data, not used.
    pub unused: Vec<String>,
}

/// Columns of `subscriber` that are neither core, bookkeeping nor an attribute.
const BOOKKEEPING: [&str; 2] = ["id", "updated_at"];

fn index_name(attr: &str) -> String {
    format!("ix_sub_{attr}")
}

/// The storage class a column's declared SQL type gives, if it is one campaignd uses.
pub(crate) fn storage_of(sql_type: &str) -> Option<Storage> {
    let t = sql_type.to_ascii_lowercase();
    if t.contains("bool") {
        Some(Storage::Bool)
    } else if t.contains("int") {
        Some(Storage::Integer)
    } else if ["real", "doub", "floa", "numeric", "decimal"]
        .iter()
        .any(|k| t.contains(k))
    {
        Some(Storage::Real)
    } else if ["char", "text", "clob"].iter().any(|k| t.contains(k)) {
        Some(Storage::Text)
    } else {
        None
    }
}

fn storage_name(s: Storage) -> &'static str {
    match s {
        Storage::Integer => "whole numbers",
        Storage::Real => "decimals",
        Storage::Text => "text",
        Storage::Bool => "true/false",
    }
}

/// The declared attributes whose existing column does not store their kind, as one
/// message; `None` when there are none. A missing column is not a mismatch.
fn type_mismatches(cat: &Catalogue, columns: &[(String, String)]) -> Option<String> {
    let wrong: Vec<String> = cat
        .declared()
        .filter_map(|a| {
            let (_, ty) = columns.iter().find(|(n, _)| *n == a.name)?;
            (storage_of(ty) != Some(a.kind.storage())).then(|| {
                format!(
                    "`{}` is declared {} but its column holds {}",
                    a.name,
                    a.kind.name(),
                    storage_of(ty).map_or("an unknown type", storage_name)
                )
            })
        })
        .collect();
    (!wrong.is_empty()).then(|| {
        format!(
            "{}: a type is never changed in place; declare a new attribute and import into it",
            wrong.join("; ")
        )
    })
}

impl Store {
    /// The catalogue this store reads subscriber rows with (claims, lookups). The shipped
    /// catalogue until [`Store::use_catalogue`] or [`Store::apply_catalogue`] says another.
    pub fn catalogue(&self) -> Arc<Catalogue> {
        self.catalogue
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads subscriber rows with `cat` from now on, after checking the database has a
    /// column of the right type for every attribute it declares.
    pub async fn use_catalogue(&self, cat: Arc<Catalogue>) -> Result<()> {
        self.check_catalogue(&cat).await?;
        *self.catalogue.write().unwrap_or_else(|e| e.into_inner()) = cat;
        Ok(())
    }

    /// Whether every declared attribute has a column of a type that stores its kind. The
    /// error names every attribute that has none, and what to do.
    pub async fn check_catalogue(&self, cat: &Catalogue) -> Result<()> {
        let columns = self.subscriber_columns().await?;
        let missing: Vec<&str> = cat
            .declared()
            .filter(|a| !columns.iter().any(|(n, _)| *n == a.name))
            .map(|a| a.name.as_str())
            .collect();
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!(
                "the database has no column for attribute(s) {}: run `campaignd migrate` to add them",
                missing.join(", ")
            ));
        }
        problems.extend(type_mismatches(cat, &columns));
        problems.extend(self.history_plan(cat).await?.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Catalogue(problems.join("; ")))
        }
    }

    /// Adds a column (and index) for every declared attribute that has none, drops indexes
    /// no longer declared, and uses `cat` from then on. Refuses, changing nothing, when an
    /// existing column's type does not store the declared kind.
    pub async fn apply_catalogue(&self, cat: Arc<Catalogue>) -> Result<CatalogueReport> {
        let columns = self.subscriber_columns().await?;
        let pg = self.db().get_database_backend() == DbBackend::Postgres;
        let mut report = CatalogueReport::default();
        // Check everything first: a refusal must leave the schema as it was.
        let history = self.history_plan(&cat).await?;
        if let Some(wrong) = type_mismatches(&cat, &columns).or(history.refusal()) {
            return Err(StoreError::Catalogue(wrong));
        }
        let tx = sea_orm::TransactionTrait::begin(self.db()).await?;
        report.added.extend(history.apply(&tx).await?);
        for a in cat.declared() {
            if !columns.iter().any(|(n, _)| *n == a.name) {
                let ty = match (a.kind.storage(), pg) {
                    (Storage::Integer, _) => "BIGINT",
                    (Storage::Real, _) => "DOUBLE PRECISION",
                    (Storage::Bool, _) => "BOOLEAN",
                    // Byte order, as every text column of `subscriber` (see migration 6).
                    (Storage::Text, true) => "varchar COLLATE \"C\"",
                    (Storage::Text, false) => "TEXT",
                };
                tx.execute_unprepared(&format!(
                    "ALTER TABLE subscriber ADD COLUMN \"{}\" {ty}",
                    a.name
                ))
                .await?;
                report.added.push(a.name.clone());
            }
            let index = index_name(&a.name);
            let exists = self.index_exists(&tx, &index).await?;
            if a.indexed && !exists {
                tx.execute_unprepared(&format!(
                    "CREATE INDEX {index} ON subscriber (\"{}\")",
                    a.name
                ))
                .await?;
                report.indexed.push(a.name.clone());
            } else if !a.indexed && exists {
                tx.execute_unprepared(&format!("DROP INDEX {index}"))
                    .await?;
                report.unindexed.push(a.name.clone());
            }
        }
        tx.commit().await?;
        report.unused = columns
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| {
                !catalogue::CORE.contains(&n.as_str())
                    && !BOOKKEEPING.contains(&n.as_str())
                    && cat.get(n).is_none()
            })
            .collect();
        *self.catalogue.write().unwrap_or_else(|e| e.into_inner()) = cat;
        Ok(report)
    }

    /// (name, declared SQL type) of every column of `subscriber`.
    async fn subscriber_columns(&self) -> Result<Vec<(String, String)>> {
        self.table_columns("subscriber").await
    }

    async fn index_exists<C: ConnectionTrait>(&self, c: &C, name: &str) -> Result<bool> {
        let sql = if self.db().get_database_backend() == DbBackend::Postgres {
            "SELECT COUNT(*) AS n FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ?"
        } else {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' AND name = ?"
        };
        let rows = query(c, sql, [name.into()]).await?;
        Ok(rows[0].try_get::<i64>("", "n")? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_map_to_storage() {
        for (ty, want) in [
            ("bigint", Storage::Integer),
            ("INTEGER", Storage::Integer),
            ("double precision", Storage::Real),
            ("REAL", Storage::Real),
            ("character varying", Storage::Text),
            ("varchar", Storage::Text),
            ("TEXT", Storage::Text),
            ("boolean", Storage::Bool),
        ] {
            assert_eq!(storage_of(ty), Some(want), "{ty}");
        }
        assert_eq!(storage_of("blob"), None);
    }
}
