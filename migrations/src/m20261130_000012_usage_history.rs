use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Usage history (catalogue `history:`): one table per period length, one row per subscriber
/// and period, one column per measure. The measures belong to the operator's catalogue, so
/// `Store::apply_catalogue` adds their columns; the shipped catalogue's are created here, as
/// the first migration created the shipped attributes' columns, so that a database migrated
/// without `campaignd migrate` (tests, the demo) still matches the shipped catalogue.
///
/// `period` is a number (months since 0000-01, `year * 12 + month - 1`; or days since
/// 1970-01-01), so a window of periods is an integer range on both backends.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum UsageMonth {
    Table,
}

#[derive(DeriveIden, Clone, Copy)]
enum UsageDay {
    Table,
}

#[derive(DeriveIden, Clone, Copy)]
enum Col {
    SubscriberId,
    Period,
}

/// Measures of the shipped catalogue (`workflows/attributes.yaml`, 2026-11-30): name, whether
/// whole numbers. Frozen here: later catalogue changes go through `apply_catalogue`.
const MONTH_MEASURES: [(&str, bool); 13] = [
    ("arpu", false),
    ("voice_minutes", true),
    ("data_mb", false),
    ("sms_sent", true),
    ("top_ups", true),
    ("top_up_amount", false),
    ("balance", false),
    ("bill_queries", true),
    ("hotline_calls", true),
    ("complaints", true),
    ("roaming_days", true),
    ("rival_calls", true),
    ("port_out_enquiries", true),
];
const DAY_MEASURES: [(&str, bool); 2] = [("daily_data_mb", false), ("daily_balance", false)];

#[derive(DeriveIden, Clone, Copy)]
enum Subscriber {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// Four statements: on SQLite they must share one connection and land together.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, pk, ix, measures) in [
            (
                UsageMonth::Table.into_iden(),
                "pk_usage_month",
                "ix_usage_month_period",
                &MONTH_MEASURES[..],
            ),
            (
                UsageDay::Table.into_iden(),
                "pk_usage_day",
                "ix_usage_day_period",
                &DAY_MEASURES[..],
            ),
        ] {
            let mut create = Table::create();
            create
                .table(table.clone())
                .if_not_exists()
                .col(big_integer(Col::SubscriberId))
                .col(big_integer(Col::Period));
            for (name, integer) in measures {
                let name = Alias::new(*name);
                create.col(if *integer {
                    big_integer_null(name)
                } else {
                    double_null(name)
                });
            }
            m.create_table(
                create
                    .primary_key(
                        Index::create()
                            .name(pk)
                            .col(Col::SubscriberId)
                            .col(Col::Period),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(table.clone(), Col::SubscriberId)
                            .to(Subscriber::Table, Subscriber::Id),
                    )
                    .to_owned(),
            )
            .await?;
            // Newest period loaded (retention, windows ending "now"), and pruning by period.
            m.create_index(
                Index::create()
                    .name(ix)
                    .table(table)
                    .col(Col::Period)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
