//! Churn-warning alert episodes (`alert_episode`) and monitor evaluations (`monitor_eval`),
//! migration 23.
//!
//! A monitor's evaluation reads the base on the pool ([`Store::monitor_scan`]: who in the
//! population raises which signal), then applies what changed in one transaction
//! ([`Store::begin_monitor_eval`]): the slot's row first, unique per (monitor, slot), so a
//! second replica evaluating the same slot waits for the first and then writes nothing;
//! then episodes opened, re-levelled and closed, and each owner's digest mail queued with
//! the episodes it reports marked told, so a crash loses no alert and repeats no digest.
//! An open episode is unique per (monitor, subscriber) through `open_key` (the subscriber
//! while open, NULL once closed).

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{Alias, CaseStatement, Condition, Expr, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult, TransactionTrait};

use crate::derived::FieldSql;
use crate::mail::NewMail;
use crate::{Millis, Result, Store, StoreError, exec, marks, query};

/// Where an episode is; stored in `alert_episode.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeState {
    Open,
    Closed,
}

impl EpisodeState {
    pub const ALL: [EpisodeState; 2] = [EpisodeState::Open, EpisodeState::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            EpisodeState::Open => "open",
            EpisodeState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<EpisodeState> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Why an episode closed; stored in `alert_episode.close_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The score fell below the lowest level (or the subscriber left the population).
    Recovered,
    /// A closing event (churn, port-out) came after the episode opened.
    Churned,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Recovered => "recovered",
            CloseReason::Churned => "churned",
        }
    }
}

/// What staff recorded about an alert; stored in `alert_episode.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertOutcome {
    /// Staff reached the subscriber.
    Contacted,
    /// The subscriber took a retention offer.
    Retained,
    /// The subscriber is leaving anyway.
    Lost,
    /// Nothing was wrong.
    FalseAlarm,
}

impl AlertOutcome {
    pub const ALL: [AlertOutcome; 4] = [
        AlertOutcome::Contacted,
        AlertOutcome::Retained,
        AlertOutcome::Lost,
        AlertOutcome::FalseAlarm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertOutcome::Contacted => "contacted",
            AlertOutcome::Retained => "retained",
            AlertOutcome::Lost => "lost",
            AlertOutcome::FalseAlarm => "false_alarm",
        }
    }

    pub fn parse(s: &str) -> Option<AlertOutcome> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A watched subscriber who raised at least one signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRow {
    pub subscriber_id: i64,
    /// One per condition passed to [`Store::monitor_scan`] (`signals`, then `flags`).
    pub flags: Vec<bool>,
    /// One per expression in `texts`.
    pub texts: Vec<Option<String>>,
}

/// An open episode, as the evaluation needs it.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct OpenEpisode {
    pub id: i64,
    pub subscriber_id: i64,
    pub level_rank: i32,
    pub score: i32,
    pub owner: String,
    pub opened_at: i64,
}

/// A new episode.
#[derive(Debug, Clone)]
pub struct NewEpisode<'a> {
    pub subscriber_id: i64,
    pub level: &'a str,
    pub level_rank: i32,
    pub score: i32,
    pub signals: String,
    pub owner: &'a str,
}

/// An episode whose owner has not been told of its current level.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct PendingAlert {
    pub id: i64,
    pub subscriber_id: i64,
    pub msisdn: String,
    pub external_id: Option<String>,
    pub level: String,
    pub level_rank: i32,
    /// -1 when the owner was never told of this episode.
    pub notified_rank: i32,
    pub score: i32,
    pub signals: String,
    pub owner: String,
    pub opened_at: i64,
}

/// A stored episode, for `GET /alerts` and `campaignd alerts`.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct AlertRow {
    pub id: i64,
    pub monitor: String,
    pub subscriber_id: i64,
    pub msisdn: String,
    pub level: String,
    pub score: i32,
    pub signals: String,
    pub owner: String,
    pub state: String,
    pub opened_at: i64,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    pub close_reason: Option<String>,
    pub outcome: Option<String>,
    pub outcome_by: Option<String>,
}

/// What one evaluation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvalCounts {
    pub watched: u64,
    pub opened: u64,
    pub escalated: u64,
    pub closed: u64,
}

/// One monitor slot's writes: the slot is claimed; dropped, it rolls back.
#[derive(Debug)]
pub struct MonitorTx {
    tx: DatabaseTransaction,
    monitor: String,
    slot_at: Millis,
    now: Millis,
}

impl Store {
    /// The latest slot of `monitor` evaluated, if any.
    pub async fn last_monitor_slot(&self, monitor: &str) -> Result<Option<Millis>> {
        let rows = query(
            self.db(),
            "SELECT MAX(slot_at) AS s FROM monitor_eval WHERE monitor = ?",
            [monitor.into()],
        )
        .await?;
        Ok(rows
            .first()
            .map(|r| r.try_get::<Option<i64>>("", "s"))
            .transpose()?
            .flatten())
    }

    /// The field compiler for a monitor evaluation at `now` (derived windows fixed once).
    pub async fn monitor_fields<'c>(
        &self,
        cat: &'c catalogue::Catalogue,
        now: Millis,
    ) -> Result<FieldSql<'c>> {
        Ok(FieldSql::new(cat, self.as_of(now).await?))
    }

    /// The subscribers matching `population` who raise at least one of `signals`, each with
    /// every signal's and flag's truth (NULL counts as false) and the values of `texts`.
    pub async fn monitor_scan(
        &self,
        population: Condition,
        signals: Vec<Condition>,
        flags: Vec<Condition>,
        texts: Vec<Expr>,
    ) -> Result<Vec<ScanRow>> {
        let n_flags = signals.len() + flags.len();
        let mut q = Query::select();
        q.column(Alias::new("id")).from(Alias::new("subscriber"));
        let mut any = Condition::any();
        for s in &signals {
            any = any.add(s.clone());
        }
        for (i, c) in signals.into_iter().chain(flags).enumerate() {
            let case = CaseStatement::new()
                .case(c, Expr::val(1))
                .finally(Expr::val(0));
            q.expr_as(case, Alias::new(format!("f{i}")));
        }
        for (i, t) in texts.iter().enumerate() {
            q.expr_as(t.clone(), Alias::new(format!("t{i}")));
        }
        q.cond_where(population).cond_where(any);
        let rows = self.db().query_all(&q).await?;
        rows.iter()
            .map(|r| {
                let mut f = Vec::with_capacity(n_flags);
                for i in 0..n_flags {
                    f.push(r.try_get::<i32>("", &format!("f{i}"))? == 1);
                }
                let mut t = Vec::with_capacity(texts.len());
                for i in 0..texts.len() {
                    t.push(r.try_get::<Option<String>>("", &format!("t{i}"))?);
                }
                Ok(ScanRow {
                    subscriber_id: r.try_get("", "id")?,
                    flags: f,
                    texts: t,
                })
            })
            .collect()
    }

    /// Claims `monitor`'s slot: `None` when it was evaluated already (by another replica,
    /// or an earlier life of this one), and then nothing was written.
    pub async fn begin_monitor_eval(
        &self,
        monitor: &str,
        slot_at: Millis,
        now: Millis,
    ) -> Result<Option<MonitorTx>> {
        let tx = self.db().begin().await?;
        let claimed = exec(
            &tx,
            "INSERT INTO monitor_eval (monitor, slot_at, evaluated_at, watched, opened, escalated, closed) \
             VALUES (?, ?, ?, 0, 0, 0, 0) ON CONFLICT (monitor, slot_at) DO NOTHING",
            [monitor.into(), slot_at.into(), now.into()],
        )
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            return Ok(None);
        }
        Ok(Some(MonitorTx {
            tx,
            monitor: monitor.to_owned(),
            slot_at,
            now,
        }))
    }

    /// Episodes, newest first: those of `owner` (all when `None`) in `state` (all when
    /// `None`), at most `limit`.
    pub async fn alerts(
        &self,
        owner: Option<&str>,
        state: Option<EpisodeState>,
        limit: u64,
    ) -> Result<Vec<AlertRow>> {
        let mut sql = String::from(
            "SELECT a.id, a.monitor, a.subscriber_id, s.msisdn, a.level, a.score, a.signals, a.owner, \
             a.state, a.opened_at, a.updated_at, a.closed_at, a.close_reason, a.outcome, a.outcome_by \
             FROM alert_episode a JOIN subscriber s ON s.id = a.subscriber_id WHERE 1 = 1",
        );
        let mut values: Vec<sea_orm::Value> = Vec::new();
        if let Some(o) = owner {
            sql.push_str(" AND a.owner = ?");
            values.push(o.into());
        }
        if let Some(s) = state {
            sql.push_str(" AND a.state = ?");
            values.push(s.as_str().into());
        }
        sql.push_str(" ORDER BY a.id DESC LIMIT ?");
        values.push((limit.min(i64::MAX as u64) as i64).into());
        query(self.db(), &sql, values)
            .await?
            .iter()
            .map(|r| Ok(AlertRow::from_query_result(r, "")?))
            .collect()
    }

    /// The owner of episode `id`, if it exists.
    pub async fn alert_owner(&self, id: i64) -> Result<Option<String>> {
        let rows = query(
            self.db(),
            "SELECT owner FROM alert_episode WHERE id = ?",
            [id.into()],
        )
        .await?;
        Ok(rows
            .first()
            .map(|r| r.try_get::<String>("", "owner"))
            .transpose()?)
    }

    /// Records what staff did about episode `id`; false when it does not exist. A later
    /// outcome replaces an earlier one (staff follow up).
    pub async fn record_alert_outcome(
        &self,
        id: i64,
        outcome: AlertOutcome,
        by: &str,
        now: Millis,
    ) -> Result<bool> {
        let n = exec(
            self.db(),
            "UPDATE alert_episode SET outcome = ?, outcome_by = ?, outcome_at = ? WHERE id = ?",
            [outcome.as_str().into(), by.into(), now.into(), id.into()],
        )
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}

impl MonitorTx {
    /// The monitor's open episodes.
    pub async fn open_episodes(&self) -> Result<Vec<OpenEpisode>> {
        query(
            &self.tx,
            "SELECT id, subscriber_id, level_rank, score, owner, opened_at FROM alert_episode \
             WHERE monitor = ? AND state = ?",
            [
                self.monitor.as_str().into(),
                EpisodeState::Open.as_str().into(),
            ],
        )
        .await?
        .iter()
        .map(|r| Ok(OpenEpisode::from_query_result(r, "")?))
        .collect()
    }

    /// Subscribers with an open episode who had an event of `types` since it opened.
    pub async fn churned(&self, types: &[String]) -> Result<HashSet<i64>> {
        if types.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = format!(
            "SELECT DISTINCT a.subscriber_id FROM alert_episode a JOIN subscriber_event e \
             ON e.subscriber_id = a.subscriber_id AND e.at >= a.opened_at \
             WHERE a.monitor = ? AND a.state = ? AND e.type IN ({})",
            marks(types.len())
        );
        let mut values: Vec<sea_orm::Value> = vec![
            self.monitor.as_str().into(),
            EpisodeState::Open.as_str().into(),
        ];
        values.extend(types.iter().map(|t| t.as_str().into()));
        query(&self.tx, &sql, values)
            .await?
            .iter()
            .map(|r| Ok(r.try_get::<i64>("", "subscriber_id")?))
            .collect()
    }

    /// Subscribers with an event of `types` at or after `since` (who churned recently: not
    /// alerted again while their history still shows what preceded it).
    pub async fn closing_events_since(
        &self,
        types: &[String],
        since: Millis,
    ) -> Result<HashSet<i64>> {
        if types.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = format!(
            "SELECT DISTINCT subscriber_id FROM subscriber_event WHERE at >= ? AND type IN ({})",
            marks(types.len())
        );
        let mut values: Vec<sea_orm::Value> = vec![since.into()];
        values.extend(types.iter().map(|t| t.as_str().into()));
        query(&self.tx, &sql, values)
            .await?
            .iter()
            .map(|r| Ok(r.try_get::<i64>("", "subscriber_id")?))
            .collect()
    }

    /// Opens episodes, many rows per statement; returns how many were opened (a subscriber
    /// who already has one open for this monitor is skipped).
    pub async fn open(&self, episodes: &[NewEpisode<'_>]) -> Result<u64> {
        // 12 values a row: far below both backends' bind limits.
        const ROWS: usize = 1000;
        let mut opened = 0;
        for chunk in episodes.chunks(ROWS) {
            let mut sql = String::from(
                "INSERT INTO alert_episode (monitor, subscriber_id, open_key, level, level_rank, score, signals, \
                 owner, state, opened_at, updated_at, notified_rank) VALUES ",
            );
            let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 11);
            for (i, e) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, -1)");
                values.extend([
                    self.monitor.as_str().into(),
                    e.subscriber_id.into(),
                    e.subscriber_id.into(),
                    e.level.into(),
                    e.level_rank.into(),
                    e.score.into(),
                    e.signals.as_str().into(),
                    e.owner.into(),
                    EpisodeState::Open.as_str().into(),
                    self.now.into(),
                    self.now.into(),
                ]);
            }
            sql.push_str(" ON CONFLICT (monitor, open_key) DO NOTHING");
            opened += exec(&self.tx, &sql, values).await?.rows_affected();
        }
        Ok(opened)
    }

    /// Moves an open episode to a new level and score. A fall to a lower level is recorded
    /// but its owner, already told of the higher one, is not told again.
    pub async fn relevel(
        &self,
        id: i64,
        level: &str,
        level_rank: i32,
        score: i32,
        signals: &str,
    ) -> Result<()> {
        exec(
            &self.tx,
            "UPDATE alert_episode SET level = ?, level_rank = ?, score = ?, signals = ?, updated_at = ?, \
             notified_rank = CASE WHEN notified_rank > ? THEN ? ELSE notified_rank END \
             WHERE id = ? AND state = ?",
            [
                level.into(),
                level_rank.into(),
                score.into(),
                signals.into(),
                self.now.into(),
                level_rank.into(),
                level_rank.into(),
                id.into(),
                EpisodeState::Open.as_str().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Updates an open episode's score and signals at the same level.
    pub async fn rescore(&self, id: i64, score: i32, signals: &str) -> Result<()> {
        exec(
            &self.tx,
            "UPDATE alert_episode SET score = ?, signals = ? WHERE id = ? AND state = ?",
            [
                score.into(),
                signals.into(),
                id.into(),
                EpisodeState::Open.as_str().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Closes an open episode.
    pub async fn close(&self, id: i64, reason: CloseReason) -> Result<()> {
        exec(
            &self.tx,
            "UPDATE alert_episode SET state = ?, open_key = NULL, closed_at = ?, close_reason = ?, \
             updated_at = ? WHERE id = ? AND state = ?",
            [
                EpisodeState::Closed.as_str().into(),
                self.now.into(),
                reason.as_str().into(),
                self.now.into(),
                id.into(),
                EpisodeState::Open.as_str().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Open episodes whose owner has not been told of their current level, by owner.
    pub async fn pending(&self) -> Result<HashMap<String, Vec<PendingAlert>>> {
        let rows = query(
            &self.tx,
            "SELECT a.id, a.subscriber_id, s.msisdn, s.external_id, a.level, a.level_rank, a.notified_rank, \
             a.score, a.signals, a.owner, a.opened_at FROM alert_episode a \
             JOIN subscriber s ON s.id = a.subscriber_id \
             WHERE a.monitor = ? AND a.state = ? AND a.level_rank > a.notified_rank \
             ORDER BY a.level_rank DESC, a.score DESC, a.id",
            [
                self.monitor.as_str().into(),
                EpisodeState::Open.as_str().into(),
            ],
        )
        .await?;
        let mut out: HashMap<String, Vec<PendingAlert>> = HashMap::new();
        for r in &rows {
            let p = PendingAlert::from_query_result(r, "")?;
            out.entry(p.owner.clone()).or_default().push(p);
        }
        Ok(out)
    }

    /// Queues `mail` (the digest for the alerts [`MonitorTx::pending`] read for `owner`) and
    /// marks those alerts told at their current level, together; false, and nothing marked,
    /// when a digest with its key is already queued (the owner was told in this interval:
    /// they wait for the next).
    pub async fn digest(&self, mail: &NewMail, owner: &str) -> Result<bool> {
        if !crate::mail::enqueue_mail_in(&self.tx, mail, self.now).await? {
            return Ok(false);
        }
        // The same predicate `pending` read with: nothing changes levels or owners inside
        // this transaction, so these are exactly the alerts the mail was built from, at the
        // rank it shows. One statement per owner: marking by id lists cost a scan each and
        // made a large evaluation quadratic.
        exec(
            &self.tx,
            "UPDATE alert_episode SET notified_rank = level_rank \
             WHERE monitor = ? AND state = ? AND owner = ? AND level_rank > notified_rank",
            [
                self.monitor.as_str().into(),
                EpisodeState::Open.as_str().into(),
                owner.into(),
            ],
        )
        .await?;
        Ok(true)
    }

    /// Records the counts and commits everything.
    pub async fn commit(self, counts: EvalCounts) -> Result<()> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        exec(
            &self.tx,
            "UPDATE monitor_eval SET watched = ?, opened = ?, escalated = ?, closed = ? \
             WHERE monitor = ? AND slot_at = ?",
            [
                n(counts.watched).into(),
                n(counts.opened).into(),
                n(counts.escalated).into(),
                n(counts.closed).into(),
                self.monitor.as_str().into(),
                self.slot_at.into(),
            ],
        )
        .await?;
        self.tx.commit().await.map_err(StoreError::from)
    }
}
