//! Send slots of a gateway account shared by every replica on this database (migration 21,
//! `send_rate`). A replica reserves a run of consecutive slots in one statement; runs never
//! overlap, whoever asks, so the account's messages per second hold across replicas. Times
//! are the database's clock (PostgreSQL `clock_timestamp()`), so replicas' clocks need not
//! agree: the caller gets how long from the database's "now" its run starts.

use crate::{Result, Store, query};

/// A run of reserved send slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// The first slot, microseconds of the database's clock.
    pub start_us: i64,
    /// From the database's clock at the reservation to `start_us` (0 or more).
    pub delay_us: i64,
}

impl Store {
    /// Reserves `slots` consecutive slots `interval_us` apart for `account`, starting at
    /// the first free one (now, if the account is idle). Returns the delay in microseconds
    /// from the database's clock at the reservation to the first reserved slot (0 or more).
    pub async fn reserve_send_slots(
        &self,
        account: &str,
        slots: u32,
        interval_us: i64,
    ) -> Result<Slots> {
        let span = i64::from(slots.max(1)) * interval_us.max(1);
        let now = if self.is_postgres() {
            "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
        } else {
            // One daemon per SQLite file: its clock is the only one.
            "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS BIGINT)"
        };
        let greatest = if self.is_postgres() {
            "GREATEST"
        } else {
            "MAX"
        };
        let sql = format!(
            "INSERT INTO send_rate (account, next_at, stamped_at) SELECT ?, t.now + ?, t.now FROM (SELECT {now} AS now) t WHERE true \
             ON CONFLICT (account) DO UPDATE SET \
             next_at = {greatest}(send_rate.next_at, excluded.stamped_at) + ?, stamped_at = excluded.stamped_at \
             RETURNING next_at - ? AS start_us, stamped_at"
        );
        let rows = query(
            self.db(),
            &sql,
            [account.into(), span.into(), span.into(), span.into()],
        )
        .await?;
        let row = rows.first().ok_or_else(|| {
            crate::StoreError::Invalid("send_rate reservation returned nothing".into())
        })?;
        let start_us: i64 = row.try_get("", "start_us")?;
        let stamped: i64 = row.try_get("", "stamped_at")?;
        Ok(Slots {
            start_us,
            delay_us: (start_us - stamped).max(0),
        })
    }
}
