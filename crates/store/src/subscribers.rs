//! The subscriber base: bulk insert and lookups.

/// A subscriber row to insert. Field meanings are documented in `spec::fields`.
#[derive(Debug, Clone, PartialEq, sea_orm::FromQueryResult)]
pub struct NewSubscriber {
    pub msisdn: String,
    pub external_id: Option<String>,
    pub name: String,
    pub gender: String,
    pub age: i32,
    pub region: String,
    pub brand: String,
    pub value_tier: String,
    pub arpu_3m: f64,
    pub balance: f64,
    pub tenure_months: i32,
    pub student_stage: String,
    pub campus: Option<String>,
    pub first_channel: String,
    pub first_channel_slot: String,
    pub second_channel: String,
    pub second_channel_slot: String,
    pub complaints_30d: i32,
    pub do_not_disturb: bool,
    pub churn_risk: f64,
    pub timezone: Option<String>,
    pub opt_out: bool,
}

/// The value tier for a 3-month ARPU in yuan (DOMAIN.md: >500, 200-500, 120-200, <120).
pub fn value_tier_for_arpu(arpu: f64) -> &'static str {
    if arpu > 500.0 {
        "diamond"
    } else if arpu >= 200.0 {
        "gold"
    } else if arpu >= 120.0 {
        "silver"
    } else {
        "ordinary"
    }
}

use sea_orm::{ConnectionTrait, TransactionTrait, Value};

use crate::{Millis, Result, Store, exec, query};

const COLUMNS: &str = "msisdn, external_id, name, gender, age, region, brand, value_tier, arpu_3m, balance, tenure_months, student_stage, campus, first_channel, first_channel_slot, second_channel, second_channel_slot, complaints_30d, do_not_disturb, churn_risk, timezone, opt_out, updated_at";
const N_COLUMNS: usize = 23;
/// Rows per INSERT: keeps bound parameters under SQLite's and PostgreSQL's limits.
const CHUNK: usize = 1000;

/// How an insert treats a subscriber whose msisdn is already in the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    /// Refuse the whole batch.
    Fail,
    /// Replace the stored attributes with the new ones (re-import of a fresher export).
    Update,
}

impl Store {
    /// Inserts all rows in one transaction: either every row is stored or none is.
    pub async fn insert_subscribers(
        &self,
        rows: &[NewSubscriber],
        on_dup: OnDuplicate,
        now: Millis,
    ) -> Result<u64> {
        let tx = self.db().begin().await?;
        let mut n = 0;
        for chunk in rows.chunks(CHUNK) {
            n += insert_chunk(&tx, chunk, on_dup, now).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn count_subscribers(&self) -> Result<u64> {
        let rows = query(self.db(), "SELECT COUNT(*) AS n FROM subscriber", []).await?;
        Ok(rows[0].try_get::<i64>("", "n")? as u64)
    }

    /// Looks a subscriber up by phone number.
    pub async fn subscriber_by_msisdn(&self, msisdn: &str) -> Result<Option<i64>> {
        let rows = query(
            self.db(),
            "SELECT id FROM subscriber WHERE msisdn = ?",
            [msisdn.into()],
        )
        .await?;
        Ok(match rows.first() {
            Some(r) => Some(r.try_get::<i64>("", "id")?),
            None => None,
        })
    }

    /// Records an opt-out; every later plan and every claim honours it.
    pub async fn set_opt_out(&self, subscriber_id: i64, now: Millis) -> Result<()> {
        exec(
            self.db(),
            "UPDATE subscriber SET opt_out = ?, updated_at = ? WHERE id = ?",
            [true.into(), now.into(), subscriber_id.into()],
        )
        .await?;
        Ok(())
    }
}

async fn insert_chunk<C: ConnectionTrait>(
    c: &C,
    chunk: &[NewSubscriber],
    on_dup: OnDuplicate,
    now: Millis,
) -> Result<u64> {
    let row = format!("({})", crate::marks(N_COLUMNS));
    let mut sql = format!("INSERT INTO subscriber ({COLUMNS}) VALUES ");
    let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * N_COLUMNS);
    for (i, s) in chunk.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&row);
        values.extend([
            s.msisdn.clone().into(),
            s.external_id.clone().into(),
            s.name.clone().into(),
            s.gender.clone().into(),
            s.age.into(),
            s.region.clone().into(),
            s.brand.clone().into(),
            s.value_tier.clone().into(),
            s.arpu_3m.into(),
            s.balance.into(),
            s.tenure_months.into(),
            s.student_stage.clone().into(),
            s.campus.clone().into(),
            s.first_channel.clone().into(),
            s.first_channel_slot.clone().into(),
            s.second_channel.clone().into(),
            s.second_channel_slot.clone().into(),
            s.complaints_30d.into(),
            s.do_not_disturb.into(),
            s.churn_risk.into(),
            s.timezone.clone().into(),
            s.opt_out.into(),
            now.into(),
        ]);
    }
    if on_dup == OnDuplicate::Update {
        sql.push_str(" ON CONFLICT (msisdn) DO UPDATE SET ");
        let sets: Vec<String> = COLUMNS
            .split(", ")
            .filter(|c| *c != "msisdn")
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        sql.push_str(&sets.join(", "));
    }
    Ok(exec(c, &sql, values).await?.rows_affected())
}

impl Store {
    /// Phone numbers of the given subscribers.
    pub async fn msisdns_of(&self, ids: &[i64]) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT id, msisdn FROM subscriber WHERE id IN ({})",
                crate::marks(chunk.len())
            );
            let rows = query(self.db(), &sql, chunk.iter().map(|i| Value::from(*i))).await?;
            for r in rows {
                out.push((r.try_get("", "id")?, r.try_get("", "msisdn")?));
            }
        }
        Ok(out)
    }
}
