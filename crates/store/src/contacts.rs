//! The contact outbox: one row per (wave run, subscriber, choice), planned in one
//! transaction, claimed by dispatchers with a lease, moved through its states with checks.
//! A `channel: preferred` wave plans each subscriber's first choice ([`Route`]); the second
//! choice is written only by the transaction that settles the first as unreached
//! ([`write_fallbacks`]), so at most one fallback exists per subscriber per wave.
//!
//! States of `contact`: `held` (control arm, never sent), `pending` → `sent` → `delivered` or
//! `undelivered` (per the delivery report), or `failed` (the gateway refused it, or attempts
//! ran out) / `expired` (not sent by its deadline).
//!
//! The work queue is a separate narrow table, `dispatch`: one row per `pending` contact,
//! written in the planner's transaction and deleted in the transaction that gives the contact
//! its final state. A claim leases queue rows (token, lease end, attempt); readers see such a
//! contact as `sending`. A row whose lease ran out is claimable again, and the worker that
//! lost it can no longer change it, because every transition names the lease token. Keeping
//! the lease off the wide, many-indexed `contact` row is what makes claim and settle cheap on
//! PostgreSQL (HOT updates, see migration `m20261125_000005_dispatch_queue`).

use std::collections::{BTreeMap, HashMap};

use domain::{ChannelKind, TimeSlot};
pub use domain::{Choice, Purpose};
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Value};

use crate::subscribers::NewSubscriber;
use crate::{Millis, Result, Store, exec, marks, query};

/// The arm of a contact: contacted (treatment) or held out to measure against (control).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arm {
    Treatment,
    Control,
}

impl Arm {
    pub const ALL: [Arm; 2] = [Arm::Treatment, Arm::Control];

    /// The stored text (`contact.arm`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Arm::Treatment => "treatment",
            Arm::Control => "control",
        }
    }

    pub fn parse(s: &str) -> Option<Arm> {
        Arm::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The stored text of [`Arm::Treatment`], for comparing with row fields.
pub const TREATMENT: &str = Arm::Treatment.as_str();
/// The stored text of [`Arm::Control`].
pub const CONTROL: &str = Arm::Control.as_str();

/// The state of a contact (module docs). `Sending` is never stored: it is a `Pending`
/// contact whose queue row holds a lease, as readers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContactState {
    /// Control arm: never sent.
    Held,
    Pending,
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    Expired,
    /// An at-most-once contact left in doubt by a crash (or an ambiguous gateway answer)
    /// with no report from the gateway: it may or may not have gone out, and is never sent
    /// again.
    Unknown,
}

impl ContactState {
    pub const ALL: [ContactState; 9] = [
        ContactState::Held,
        ContactState::Pending,
        ContactState::Sending,
        ContactState::Sent,
        ContactState::Delivered,
        ContactState::Undelivered,
        ContactState::Failed,
        ContactState::Expired,
        ContactState::Unknown,
    ];
    /// Every state of a treatment contact: whom the wave targeted.
    pub const TARGETED: [ContactState; 8] = [
        ContactState::Pending,
        ContactState::Sending,
        ContactState::Sent,
        ContactState::Delivered,
        ContactState::Undelivered,
        ContactState::Failed,
        ContactState::Expired,
        ContactState::Unknown,
    ];
    /// The message left us (the gateway took it), whatever the delivery report said.
    pub const WENT_OUT: [ContactState; 3] = [
        ContactState::Sent,
        ContactState::Delivered,
        ContactState::Undelivered,
    ];
    /// Counted toward the frequency cap: promised or gone out (`undelivered` was sent), or
    /// perhaps gone out (`unknown`): a cap errs on the side of the subscriber.
    pub const COUNTS_TOWARD_CAP: [ContactState; 6] = [
        ContactState::Pending,
        ContactState::Sending,
        ContactState::Sent,
        ContactState::Delivered,
        ContactState::Undelivered,
        ContactState::Unknown,
    ];
    /// The message never left us: planned, refused by the gateway (or out of attempts), or
    /// past its send-by deadline. `undelivered` is not among them: it was sent.
    pub const NEVER_SENT: [ContactState; 3] = [
        ContactState::Pending,
        ContactState::Failed,
        ContactState::Expired,
    ];

    /// The stored text (`contact.state`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ContactState::Held => "held",
            ContactState::Pending => "pending",
            ContactState::Sending => "sending",
            ContactState::Sent => "sent",
            ContactState::Delivered => "delivered",
            ContactState::Undelivered => "undelivered",
            ContactState::Failed => "failed",
            ContactState::Expired => "expired",
            ContactState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<ContactState> {
        ContactState::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether `stored` (a row's state text) is one of `states`.
    pub fn any_is(states: &[ContactState], stored: &str) -> bool {
        states.iter().any(|s| s.as_str() == stored)
    }
}

/// `'a', 'b', …`: states as an SQL list of literals (constants of this crate, never input).
fn sql_list(states: &[ContactState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A contact the planner decided on.
#[derive(Debug, Clone, PartialEq)]
pub struct NewContact {
    pub subscriber_id: i64,
    pub arm: Arm,
    /// Earliest send time (quiet hours already applied).
    pub due_at: Millis,
    /// Latest send time; past it the contact expires unsent.
    pub send_by: Option<Millis>,
    /// The control-group stratum (e.g. the value tier), kept for evaluation by cell.
    pub stratum: String,
    /// The wave's experiment arm (`variants` name) for a treatment contact; `None` for
    /// control and for waves without variants.
    pub variant: Option<String>,
    /// A `channel: preferred` wave's first choice for this subscriber; `None`: the wave's
    /// channel, any time quiet hours allow, no fallback.
    pub route: Option<Route>,
}

/// Where and when a preferred-channel contact goes, and its fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub channel: ChannelKind,
    /// The subscriber's usual slot on `channel`: the dispatcher sends inside it.
    pub slot: Option<TimeSlot>,
    /// The second choice, written as a contact of its own only if this one ends unreached.
    pub fallback: Option<(ChannelKind, Option<TimeSlot>)>,
}

impl Route {
    /// A first choice on `channel` in `slot`, falling back to `second` unless it is the same
    /// channel (a second try on the channel that just failed is not a second choice).
    pub fn new(
        channel: ChannelKind,
        slot: Option<TimeSlot>,
        second: Option<(ChannelKind, Option<TimeSlot>)>,
    ) -> Route {
        Route {
            channel,
            slot,
            fallback: second.filter(|(c, _)| *c != channel),
        }
    }
}

/// The wave a batch of planned contacts belongs to.
#[derive(Debug, Clone, Copy)]
pub struct WaveContacts<'a> {
    pub run_id: i64,
    pub wave_run_id: i64,
    pub wave: &'a str,
    pub channel: &'a str,
    /// The campaign's purpose: only marketing contacts count towards the frequency cap.
    pub purpose: Purpose,
    /// The wave's delivery: at most once means a contact left in doubt by a crash is
    /// recorded `unknown`, never sent again (see [`Store::settle_doubtful`]).
    pub at_most_once: bool,
}

/// The part of a contact's idempotency key that makes it unique per wave and subscriber:
/// `r{run}-{wave}-s{subscriber}-`. The rest is random (see [`new_idem_key`]).
pub fn key_prefix(run_id: i64, wave: &str, subscriber_id: i64) -> String {
    choice_key_prefix(run_id, wave, subscriber_id, Choice::First)
}

/// [`key_prefix`] per choice: a second-choice contact's is `r{run}-{wave}-s{subscriber}f-`,
/// so the gateway never sees one key twice and neither prefix is the start of the other.
pub fn choice_key_prefix(run_id: i64, wave: &str, subscriber_id: i64, choice: Choice) -> String {
    match choice {
        Choice::First => format!("r{run_id}-{wave}-s{subscriber_id}-"),
        Choice::Second => format!("r{run_id}-{wave}-s{subscriber_id}f-"),
    }
}

/// Characters of the random part: lowercase letters and digits without look-alikes.
const KEY_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// A new idempotency key: [`key_prefix`] and 12 random characters (60 bits), so nobody can
/// name another subscriber's contact by counting. The same for every attempt (it is stored
/// with the contact); the prefix keeps it unique.
pub fn new_idem_key(run_id: i64, wave: &str, subscriber_id: i64) -> String {
    new_choice_key(run_id, wave, subscriber_id, Choice::First)
}

/// [`new_idem_key`] for a contact of `choice`.
pub fn new_choice_key(run_id: i64, wave: &str, subscriber_id: i64, choice: Choice) -> String {
    let mut key = choice_key_prefix(run_id, wave, subscriber_id, choice);
    let random = uuid::Uuid::new_v4();
    // Bytes 6 and 8 of a v4 UUID carry version and variant bits; the others are random.
    let bytes = random.as_bytes();
    for &b in bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 6 && *i != 8)
        .map(|(_, b)| b)
        .take(12)
    {
        key.push(KEY_ALPHABET[usize::from(b & 31)] as char);
    }
    key
}

/// Writes planned contacts; rows already present (a re-plan after a crash) are left alone.
/// Every pending contact gets its `dispatch` row in the same transaction (the caller's).
pub async fn insert_contacts<C: ConnectionTrait>(
    c: &C,
    to: &WaveContacts<'_>,
    rows: &[NewContact],
) -> Result<u64> {
    if c.get_database_backend() == DbBackend::Postgres {
        return insert_contacts_pg(c, to, rows).await;
    }
    let WaveContacts {
        run_id,
        wave_run_id,
        wave,
        channel,
        purpose,
        at_most_once,
    } = *to;
    const COLS: usize = 17;
    let mut n = 0;
    for chunk in rows.chunks(1000) {
        let row = format!("({})", marks(COLS));
        let mut sql = String::from(
            "INSERT INTO contact (run_id, wave_run_id, subscriber_id, arm, channel, state, attempt, due_at, send_by, idem_key, stratum, purpose, variant, \
             slot, fallback_channel, fallback_slot, at_most_once) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * COLS);
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&row);
            let routed = RouteCols::of(r, channel);
            values.extend([
                run_id.into(),
                wave_run_id.into(),
                r.subscriber_id.into(),
                r.arm.as_str().into(),
                routed.channel.into(),
                initial_state(r.arm).as_str().into(),
                0i32.into(),
                r.due_at.into(),
                r.send_by.into(),
                new_idem_key(run_id, wave, r.subscriber_id).into(),
                r.stratum.clone().into(),
                purpose.as_str().into(),
                r.variant.clone().into(),
                routed.slot.into(),
                routed.fallback_channel.into(),
                routed.fallback_slot.into(),
                at_most_once.into(),
            ]);
        }
        sql.push_str(" ON CONFLICT (wave_run_id, subscriber_id, choice) DO NOTHING");
        n += exec(c, &sql, values).await?.rows_affected();
        // The queue rows of this chunk's subscribers only: a wave's contacts come in
        // batches (`crate::batches`), and scanning the whole wave per batch would grow
        // with every batch. A pending contact always has its queue row, so one already
        // there (a re-plan) is left alone.
        let mut values: Vec<Value> = vec![at_most_once.into(), wave_run_id.into()];
        values.extend(chunk.iter().map(|r| Value::from(r.subscriber_id)));
        exec(
            c,
            &format!(
                "INSERT INTO dispatch (contact_id, channel, due_at, send_by, at_most_once) SELECT id, channel, due_at, send_by, ? FROM contact \
                 WHERE wave_run_id = ? AND subscriber_id IN ({}) AND state = 'pending' ON CONFLICT (contact_id) DO NOTHING",
                marks(chunk.len())
            ),
            values,
        )
        .await?;
    }
    Ok(n)
}

/// The route columns of a planned contact: its channel (the wave's unless routed), slot and
/// fallback, as stored text.
struct RouteCols {
    channel: String,
    slot: Option<String>,
    fallback_channel: Option<String>,
    fallback_slot: Option<String>,
}

impl RouteCols {
    fn of(r: &NewContact, wave_channel: &str) -> RouteCols {
        let Some(route) = &r.route else {
            return RouteCols {
                channel: wave_channel.to_owned(),
                slot: None,
                fallback_channel: None,
                fallback_slot: None,
            };
        };
        let fallback = route.fallback.filter(|_| r.arm == Arm::Treatment);
        RouteCols {
            channel: route.channel.as_str().to_owned(),
            slot: route.slot.map(|s| s.to_string()),
            fallback_channel: fallback.map(|(c, _)| c.as_str().to_owned()),
            fallback_slot: fallback.and_then(|(_, s)| s).map(|s| s.to_string()),
        }
    }
}

fn initial_state(arm: Arm) -> ContactState {
    match arm {
        Arm::Control => ContactState::Held,
        Arm::Treatment => ContactState::Pending,
    }
}

/// Rows per statement on PostgreSQL: each column travels as one array parameter, so a
/// statement's size is bounded by memory, not by the 65,535-parameter limit.
pub(crate) const PG_ROWS_PER_STATEMENT: usize = 50_000;

/// PostgreSQL: contacts and their queue rows in one statement per 50,000 contacts. Each
/// column is one array parameter sent as text (`$n::text::bigint[]`) and expanded by
/// `unnest`, and the queue rows come from the contact insert's `RETURNING`. A multi-row
/// `VALUES` list costs PostgreSQL a parse and plan of 11,000 parameters per 1,000 rows and a
/// second pass over the wave's contacts for the queue: that was four fifths of planning time.
async fn insert_contacts_pg<C: ConnectionTrait>(
    c: &C,
    to: &WaveContacts<'_>,
    rows: &[NewContact],
) -> Result<u64> {
    let WaveContacts {
        run_id,
        wave_run_id,
        wave,
        channel,
        purpose,
        at_most_once,
    } = *to;
    const SQL: &str = "WITH input AS ( \
           SELECT * FROM unnest(?::text::bigint[], ?::text::text[], ?::text::bigint[], ?::text::bigint[], ?::text::text[], ?::text::text[], ?::text::text[], \
             ?::text::text[], ?::text::text[], ?::text::text[], ?::text::text[]) \
             AS u(subscriber_id, arm, due_at, send_by, idem_key, stratum, variant, channel, slot, fallback_channel, fallback_slot)), \
         ins AS ( \
           INSERT INTO contact (run_id, wave_run_id, subscriber_id, arm, channel, state, attempt, due_at, send_by, idem_key, stratum, purpose, variant, \
             slot, fallback_channel, fallback_slot, at_most_once) \
           SELECT ?, ?, subscriber_id, arm, channel, CASE arm WHEN ? THEN ? ELSE ? END, 0, due_at, send_by, idem_key, stratum, ?, variant, \
             slot, fallback_channel, fallback_slot, ? FROM input \
           ON CONFLICT (wave_run_id, subscriber_id, choice) DO NOTHING \
           RETURNING id, channel, due_at, send_by, state), \
         queued AS ( \
           INSERT INTO dispatch (contact_id, channel, due_at, send_by, at_most_once) \
           SELECT id, channel, due_at, send_by, ? FROM ins WHERE state = ? \
           ON CONFLICT (contact_id) DO NOTHING) \
         SELECT COUNT(*) AS n FROM ins";
    let mut n = 0u64;
    for chunk in rows.chunks(PG_ROWS_PER_STATEMENT) {
        let mut subscriber = PgArray::default();
        let mut arm = PgArray::default();
        let mut due = PgArray::default();
        let mut send_by = PgArray::default();
        let mut key = PgArray::default();
        let mut stratum = PgArray::default();
        let mut variant = PgArray::default();
        let mut routed_channel = PgArray::default();
        let mut slot = PgArray::default();
        let mut fallback_channel = PgArray::default();
        let mut fallback_slot = PgArray::default();
        for r in chunk {
            let routed = RouteCols::of(r, channel);
            routed_channel.text(&routed.channel);
            slot.opt_text(routed.slot.as_deref());
            fallback_channel.opt_text(routed.fallback_channel.as_deref());
            fallback_slot.opt_text(routed.fallback_slot.as_deref());
            subscriber.int(Some(r.subscriber_id));
            arm.text(r.arm.as_str());
            due.int(Some(r.due_at));
            send_by.int(r.send_by);
            key.text(&new_idem_key(run_id, wave, r.subscriber_id));
            stratum.text(&r.stratum);
            variant.opt_text(r.variant.as_deref());
        }
        let values: Vec<Value> = vec![
            subscriber.finish().into(),
            arm.finish().into(),
            due.finish().into(),
            send_by.finish().into(),
            key.finish().into(),
            stratum.finish().into(),
            variant.finish().into(),
            routed_channel.finish().into(),
            slot.finish().into(),
            fallback_channel.finish().into(),
            fallback_slot.finish().into(),
            run_id.into(),
            wave_run_id.into(),
            Arm::Control.as_str().into(),
            ContactState::Held.as_str().into(),
            ContactState::Pending.as_str().into(),
            purpose.as_str().into(),
            at_most_once.into(),
            at_most_once.into(),
            ContactState::Pending.as_str().into(),
        ];
        let row = query(c, SQL, values).await?;
        n += row
            .first()
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0) as u64;
    }
    Ok(n)
}
/// Records the planner's funnel: how many subscribers each reason left out (or kept).
pub async fn insert_funnel<C: ConnectionTrait>(
    c: &C,
    wave_run_id: i64,
    counts: &[(String, u64)],
) -> Result<()> {
    for (reason, count) in counts {
        exec(
            c,
            "INSERT INTO funnel (wave_run_id, reason, count) VALUES (?, ?, ?) ON CONFLICT (wave_run_id, reason) DO NOTHING",
            [wave_run_id.into(), reason.as_str().into(), (*count as i64).into()],
        )
        .await?;
    }
    Ok(())
}

/// Records, per left-out subscriber, why the planner left them out.
pub async fn insert_decisions<C: ConnectionTrait>(
    c: &C,
    wave_run_id: i64,
    rows: &[(i64, &str)],
) -> Result<()> {
    if c.get_database_backend() == DbBackend::Postgres {
        // One array parameter per column, as for contacts (see `insert_contacts_pg`).
        for chunk in rows.chunks(PG_ROWS_PER_STATEMENT) {
            let mut subscriber = PgArray::default();
            let mut reason = PgArray::default();
            for (sub, why) in chunk {
                subscriber.int(Some(*sub));
                reason.text(why);
            }
            exec(
                c,
                "INSERT INTO decision (wave_run_id, subscriber_id, reason) \
                 SELECT ?, s, r FROM unnest(?::text::bigint[], ?::text::text[]) AS u(s, r) \
                 ON CONFLICT (wave_run_id, subscriber_id) DO NOTHING",
                [
                    wave_run_id.into(),
                    subscriber.finish().into(),
                    reason.finish().into(),
                ],
            )
            .await?;
        }
        return Ok(());
    }
    for chunk in rows.chunks(1000) {
        let mut sql =
            String::from("INSERT INTO decision (wave_run_id, subscriber_id, reason) VALUES ");
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 3);
        for (i, (sub, reason)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?)");
            values.extend([wave_run_id.into(), (*sub).into(), (*reason).into()]);
        }
        sql.push_str(" ON CONFLICT (wave_run_id, subscriber_id) DO NOTHING");
        exec(c, &sql, values).await?;
    }
    Ok(())
}

/// A PostgreSQL array literal (`{1,NULL,"a b"}`) built element by element, sent as one text
/// parameter and cast to its array type in SQL.
#[derive(Default)]
pub(crate) struct PgArray(String);

impl PgArray {
    fn sep(&mut self) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
    }

    pub(crate) fn int(&mut self, v: Option<i64>) {
        use std::fmt::Write as _;
        self.sep();
        match v {
            Some(v) => {
                let _ = write!(self.0, "{v}");
            }
            None => self.0.push_str("NULL"),
        }
    }

    /// Always quoted, so that no text (`NULL`, commas, braces, blanks) is misread.
    pub(crate) fn text(&mut self, v: &str) {
        self.sep();
        self.0.push('"');
        for ch in v.chars() {
            if ch == '"' || ch == '\\' {
                self.0.push('\\');
            }
            self.0.push(ch);
        }
        self.0.push('"');
    }

    /// A text or SQL NULL (the unquoted word; [`PgArray::text`] quotes a literal `NULL`).
    pub(crate) fn opt_text(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.text(v),
            None => {
                self.sep();
                self.0.push_str("NULL");
            }
        }
    }

    pub(crate) fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// Marketing treatment contacts since `since` that count toward the frequency cap (planned,
/// sent or delivered: `ContactState::COUNTS_TOWARD_CAP`), as the campaign of each per
/// subscriber: one entry per contact (a campaign twice when it contacted them twice), so the
/// length is the count, and arbitration can name the campaign that used the cap. First
/// choices only: a preferred wave's fallback is the same contact attempt on another
/// channel, so a wave counts once per subscriber.
pub async fn recent_contact_campaigns<C: ConnectionTrait>(
    c: &C,
    since: Millis,
) -> Result<HashMap<i64, Vec<String>>> {
    let rows = query(
        c,
        &format!(
            "SELECT c.subscriber_id, r.campaign FROM contact c JOIN run r ON r.id = c.run_id \
             WHERE c.arm = '{}' AND c.purpose = '{}' AND c.state IN ({}) AND c.due_at >= ? AND c.choice = '{}'",
            Arm::Treatment.as_str(),
            Purpose::Marketing.as_str(),
            sql_list(&ContactState::COUNTS_TOWARD_CAP),
            Choice::First.as_str(),
        ),
        [since.into()],
    )
    .await?;
    let mut out: HashMap<i64, Vec<String>> = HashMap::with_capacity(rows.len());
    for r in rows {
        out.entry(r.try_get::<i64>("", "subscriber_id")?)
            .or_default()
            .push(r.try_get::<String>("", "campaign")?);
    }
    Ok(out)
}

/// Treatment subscribers of a wave run who did not respond within its window.
pub async fn non_responders<C: ConnectionTrait>(c: &C, wave_run_id: i64) -> Result<Vec<i64>> {
    let rows = query(
        c,
        // Per subscriber, not per contact: a preferred wave's subscriber may have two
        // contacts (first and second choice), and a response to either answers the wave.
        "SELECT subscriber_id FROM contact WHERE wave_run_id = ? AND arm = ? GROUP BY subscriber_id \
         HAVING MAX(CASE WHEN responded_at IS NULL THEN 0 ELSE 1 END) = 0 ORDER BY subscriber_id",
        [wave_run_id.into(), Arm::Treatment.as_str().into()],
    )
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<i64>("", "subscriber_id")?))
        .collect()
}

/// The control arm chosen in a run's first wave, carried through every wave.
pub async fn control_members<C: ConnectionTrait>(c: &C, run_id: i64) -> Result<Vec<i64>> {
    let rows = query(
        c,
        "SELECT DISTINCT subscriber_id FROM contact WHERE run_id = ? AND arm = ? ORDER BY subscriber_id",
        [run_id.into(), Arm::Control.as_str().into()],
    )
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<i64>("", "subscriber_id")?))
        .collect()
}

/// A claimed contact with what the channel needs to render and send it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub id: i64,
    pub run_id: i64,
    pub wave_run_id: i64,
    pub wave: String,
    pub campaign: String,
    pub version_id: i64,
    pub subscriber_id: i64,
    pub idem_key: String,
    pub attempt: i32,
    pub send_by: Option<Millis>,
    /// The experiment arm the planner assigned (`NewContact::variant`): which of the
    /// wave's variant templates to render.
    pub variant: Option<String>,
    /// First choice, or the fallback to the second ([`write_fallbacks`]).
    pub choice: Choice,
    /// The subscriber's usual slot on this contact's channel: sent inside it only.
    pub slot: Option<TimeSlot>,
    pub subscriber: NewSubscriber,
}

#[derive(FromQueryResult)]
struct ClaimedHead {
    id: i64,
    run_id: i64,
    wave_run_id: i64,
    subscriber_id: i64,
    idem_key: String,
    attempt: i32,
    send_by: Option<i64>,
    variant: Option<String>,
    choice: String,
    slot: Option<String>,
}

/// How the dispatcher asks for work.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub channel: &'a str,
    pub limit: u64,
    /// Lease end; a worker that has not finished by then loses the rows.
    pub lease_until: Millis,
    /// Unique per claim: every later transition of these rows must present it.
    pub token: &'a str,
    pub now: Millis,
    /// How long a row whose lease ran out waits, past the end of that lease, before it is
    /// claimed again: its worker died with the gateway's answer unrecorded, and the
    /// gateway's proof of submission (Kannel's DLR type 8) may still settle it as sent.
    /// Zero for a channel that gives no such proof.
    pub proof_grace: Millis,
}

/// The last error of an at-most-once contact a crash left in doubt.
pub const IN_DOUBT_AT_MOST_ONCE: &str =
    "in doubt after a worker died (at most once: not sent again; no report from the gateway)";

/// Why a contact did not go out; also stored as its last error.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent {
        at: Millis,
    },
    /// The gateway's answer was ambiguous (a timeout: it may have taken the message) in an
    /// at-most-once wave: recorded `unknown`, never sent again.
    Unknown {
        error: String,
    },
    /// Try again at `due_at` (transient failure or quiet hours reached while leased).
    Retry {
        due_at: Millis,
        error: String,
    },
    Failed {
        error: String,
    },
    Expired,
    /// Not taken: the gateway asked to slow down. Due again at `due_at`, and the claim's
    /// attempt is given back: a throttled channel costs a contact no attempt.
    Deferred {
        due_at: Millis,
        error: String,
    },
}

const SEND_BY_PASSED: &str = "send-by deadline passed";

/// Due, unleased (or lease run out) queue rows of one channel, in due order. Binds: channel,
/// now (due), now (send-by), now (lease), limit.
/// A row whose lease ran out is due again after the proof grace, unless its wave is at most
/// once: such a row is in doubt for good, and [`Store::settle_doubtful`] decides it.
const DUE: &str = "channel = ? AND due_at <= ? AND (send_by IS NULL OR send_by >= ?) \
     AND (lease_until IS NULL OR (lease_until < ? AND at_most_once = ?)) ORDER BY due_at, contact_id LIMIT ?";
/// What a claimed row carries from its queue row `d` and its contact; the subscriber's
/// columns follow (see [`claimed_cols`]).
const CLAIMED_HEAD: &str = "c.id, c.run_id, c.wave_run_id, c.subscriber_id, c.idem_key, d.attempt, d.send_by, c.variant, c.choice, c.slot";

/// Every column a claimed row carries: head, then the subscriber as the catalogue has it.
fn claimed_cols(cat: &catalogue::Catalogue) -> String {
    format!(
        "{CLAIMED_HEAD}, {}",
        crate::subscribers::subscriber_cols(cat)
    )
}
const CLAIMED_JOIN: &str =
    "JOIN contact c ON c.id = d.contact_id JOIN subscriber s ON s.id = c.subscriber_id";

/// A contact with its queue row, if any: `d.lease_token` is set while a worker holds it.
const WITH_LEASE: &str = "contact c LEFT JOIN dispatch d ON d.contact_id = c.id";
/// The state a reader sees: `sending` is a `pending` contact under a lease.
const STATE: &str = "CASE WHEN d.lease_token IS NULL THEN c.state ELSE 'sending' END";

/// Takes contacts this lease still holds out of the queue and gives them their final
/// `state`; returns how many contacts changed. Two statements and no rows sent back: the
/// contact update reads the lease from the queue row it is about to delete.
/// Marks `expired` (with `reason`) the still-pending contacts of queue rows just deleted
/// (`removed`: rows with a `contact_id`, from a `DELETE ... RETURNING`); returns how many.
pub(crate) async fn expire_removed<C: ConnectionTrait>(
    c: &C,
    removed: &[sea_orm::QueryResult],
    reason: &str,
) -> Result<u64> {
    let ids: Vec<i64> = removed
        .iter()
        .map(|r| r.try_get::<i64>("", "contact_id"))
        .collect::<Result<_, _>>()?;
    let mut n = 0;
    for chunk in ids.chunks(1000) {
        let sql = format!(
            "UPDATE contact SET state = 'expired', last_error = ? WHERE state = 'pending' AND id IN ({})",
            marks(chunk.len())
        );
        let mut values: Vec<Value> = vec![reason.into()];
        values.extend(chunk.iter().map(|id| Value::from(*id)));
        n += exec(c, &sql, values).await?.rows_affected();
    }
    Ok(n)
}

/// A first contact's end states that let its fallback go: it never left us (`failed`,
/// `expired`: send-by passed, no address, a call nobody worked) or it did not arrive
/// (`undelivered`). Not `unknown`: it may have reached the subscriber.
pub const UNREACHED: [ContactState; 3] = [
    ContactState::Failed,
    ContactState::Expired,
    ContactState::Undelivered,
];

impl Store {
    /// Staff could not reach the subscriber of task contact `contact_id`, a call or a
    /// service visit (outcome [`domain::UNREACHABLE`]): for a preferred wave's first
    /// choice with a second one to
    /// fall back to, the contact becomes `failed` and its fallback is written in the same
    /// transaction ([`write_fallbacks`], judged at `at`). Any other contact is left as it
    /// is (a plain call wave's unreachable stays a worked call). Returns whether it changed;
    /// a repeat changes nothing.
    pub async fn record_unreachable_call(&self, contact_id: i64, at: Millis) -> Result<bool> {
        let tx = crate::TransactionTrait::begin(self.db()).await?;
        let changed = exec(
            &tx,
            &format!(
                "UPDATE contact SET state = ?, last_error = ? WHERE id = ? AND channel IN (?, ?) \
                 AND state IN (?, ?) AND responded_at IS NULL AND id IN \
                 (SELECT c.id FROM contact c WHERE c.id = ? AND {HAS_FALLBACK})"
            ),
            [
                ContactState::Failed.as_str().into(),
                "not reached by staff (task outcome unreachable)".into(),
                contact_id.into(),
                domain::ChannelKind::OutboundCall.as_str().into(),
                domain::ChannelKind::Service.as_str().into(),
                ContactState::Sent.as_str().into(),
                ContactState::Delivered.as_str().into(),
                contact_id.into(),
                Choice::First.as_str().into(),
            ],
        )
        .await?
        .rows_affected()
            == 1;
        if changed {
            write_fallbacks(&tx, &[contact_id], at).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}

/// SQL over a contact `c`: it is a first choice with a different second choice to fall back
/// to. Binds one value: [`Choice::First`].
pub(crate) const HAS_FALLBACK: &str =
    "c.choice = ? AND c.fallback_channel IS NOT NULL AND c.fallback_channel <> c.channel";

/// SQL over a first contact `f` and its wave run `w`: until when its fallback may go. The
/// first's send-by, else the window's close; for a task (a call, a service visit), whose
/// send-by is when staff must have worked it (its task's deadline), the window's close.
const FALLBACK_DEADLINE: &str = "CASE WHEN f.channel IN ('outbound_call', 'service') THEN w.closes_at ELSE COALESCE(f.send_by, w.closes_at) END";

/// Writes the second-choice contact (and its queue row) of each first contact among `ids`
/// that the caller's transaction has just settled unreached ([`UNREACHED`]), if it has a
/// fallback: the caller is the transaction that settles the first, so a crash loses
/// neither, and the unique (wave run, subscriber, choice) keeps a repeat from doubling it.
/// None for a subscriber who responded, or opted out of marketing, meanwhile, nor once the
/// wave is closed or its window's timer is due (the window's end; a run's early close
/// brings the timer forward to the close) or its deadline ([`FALLBACK_DEADLINE`]) has
/// passed at `now`. The fallback is due at once; the
/// dispatcher holds it until the subscriber's slot on that channel. Returns how many.
pub(crate) async fn write_fallbacks<C: ConnectionTrait>(
    c: &C,
    ids: &[i64],
    now: Millis,
) -> Result<u64> {
    let mut n = 0;
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT f.id, f.run_id, f.wave_run_id, f.subscriber_id, f.fallback_channel, f.fallback_slot, \
             {FALLBACK_DEADLINE} AS deadline, f.stratum, f.purpose, f.variant, f.at_most_once, w.wave \
             FROM contact f JOIN wave_run w ON w.id = f.wave_run_id JOIN subscriber s ON s.id = f.subscriber_id \
             WHERE f.choice = ? AND f.arm = ? AND f.fallback_channel IS NOT NULL AND f.fallback_channel <> f.channel \
             AND f.responded_at IS NULL AND f.state IN ({}) AND w.state = ? \
             AND (f.purpose <> ? OR s.opt_out = ?) \
             AND ({FALLBACK_DEADLINE} IS NULL OR {FALLBACK_DEADLINE} > ?) \
             AND EXISTS (SELECT 1 FROM timer t WHERE t.kind = 'wave_close' AND t.wave_run_id = w.id \
               AND t.state = 'pending' AND t.fire_at > ?) \
             AND f.id IN ({}) ORDER BY f.id",
            sql_list(&UNREACHED),
            marks(chunk.len())
        );
        let values = [
            Choice::First.as_str().into(),
            Arm::Treatment.as_str().into(),
            crate::runs::wave_state::OPEN.into(),
            Purpose::Marketing.as_str().into(),
            false.into(),
            now.into(),
            now.into(),
        ]
        .into_iter()
        .chain(chunk.iter().map(|id| Value::from(*id)));
        for f in query(c, &sql, values).await? {
            let run_id: i64 = f.try_get("", "run_id")?;
            let wave: String = f.try_get("", "wave")?;
            let subscriber_id: i64 = f.try_get("", "subscriber_id")?;
            let channel: String = f.try_get("", "fallback_channel")?;
            let deadline: Option<i64> = f.try_get("", "deadline")?;
            let at_most_once: bool = f.try_get("", "at_most_once")?;
            let inserted = query(
                c,
                "INSERT INTO contact (run_id, wave_run_id, subscriber_id, arm, channel, state, attempt, due_at, send_by, idem_key, \
                 stratum, purpose, variant, choice, slot, at_most_once) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (wave_run_id, subscriber_id, choice) DO NOTHING RETURNING id",
                [
                    run_id.into(),
                    f.try_get::<i64>("", "wave_run_id")?.into(),
                    subscriber_id.into(),
                    Arm::Treatment.as_str().into(),
                    channel.clone().into(),
                    ContactState::Pending.as_str().into(),
                    now.into(),
                    deadline.into(),
                    new_choice_key(run_id, &wave, subscriber_id, Choice::Second).into(),
                    f.try_get::<String>("", "stratum")?.into(),
                    f.try_get::<String>("", "purpose")?.into(),
                    f.try_get::<Option<String>>("", "variant")?.into(),
                    Choice::Second.as_str().into(),
                    f.try_get::<Option<String>>("", "fallback_slot")?.into(),
                    at_most_once.into(),
                ],
            )
            .await?;
            for row in inserted {
                exec(
                    c,
                    "INSERT INTO dispatch (contact_id, channel, due_at, send_by, at_most_once) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (contact_id) DO NOTHING",
                    [
                        row.try_get::<i64>("", "id")?.into(),
                        channel.clone().into(),
                        now.into(),
                        deadline.into(),
                        at_most_once.into(),
                    ],
                )
                .await?;
                n += 1;
            }
        }
    }
    Ok(n)
}

async fn finish<C: ConnectionTrait>(
    c: &C,
    token: &str,
    ids: &[i64],
    state: ContactState,
    sent_at: Option<Millis>,
    error: Option<&str>,
) -> Result<u64> {
    let id_values = || ids.iter().map(|id| Value::from(*id));
    // A row whose lease was cleared (housekeeping on another replica, while this worker's
    // answers waited out a database outage) is still this worker's to settle as sent: the
    // gateway took it, and nobody holds it now. A row another worker claimed is left alone.
    let held = |d: &str| {
        if state == ContactState::Sent {
            format!("({d}lease_token = ? OR {d}lease_token IS NULL)")
        } else {
            format!("{d}lease_token = ?")
        }
    };
    // `contact.state = 'pending'`: a delivery report may have settled the contact first.
    let sql = format!(
        "UPDATE contact SET state = ?, sent_at = COALESCE(?, sent_at), last_error = COALESCE(?, last_error), \
         attempt = d.attempt, lease_token = ? FROM dispatch d \
         WHERE d.contact_id = contact.id AND {} AND contact.state = 'pending' AND contact.id IN ({})",
        held("d."),
        marks(ids.len())
    );
    let values: Vec<Value> = vec![
        state.as_str().into(),
        sent_at.into(),
        error.map(str::to_owned).into(),
        token.into(),
        token.into(),
    ];
    let n = exec(c, &sql, values.into_iter().chain(id_values()))
        .await?
        .rows_affected();
    let sql = format!(
        "DELETE FROM dispatch WHERE {} AND contact_id IN ({})",
        held(""),
        marks(ids.len())
    );
    exec(c, &sql, std::iter::once(token.into()).chain(id_values())).await?;
    Ok(n)
}

/// [`finish`] as `sent` on PostgreSQL in one statement: the contacts this lease (or no
/// lease) still holds are marked sent and their queue rows deleted. The update runs first
/// (the query reads it; the delete, which nothing reads, runs after it), so rows are locked
/// contact first, then queue row, the order every other writer of both tables keeps.
async fn settle_sent_pg<C: ConnectionTrait>(
    c: &C,
    token: &str,
    ids: &[i64],
    at: Millis,
) -> Result<u64> {
    // Every row is reached by one index probe per id, whatever the planner thinks of the
    // group's size: the held queue rows by `LATERAL .. LIMIT 1`, the contacts and queue
    // rows written by `= ANY(ARRAY(SELECT ..))`, an array the planner cannot size. As
    // joins, a group of two hundred made it scan and hash the whole queue and contact
    // table (~28-51 ms against ~5 ms; `bench-dispatch --gateway kannel`, session 19).
    const SQL: &str = "WITH held AS (SELECT h.contact_id \
           FROM unnest(?::text::bigint[]) AS i(id) CROSS JOIN LATERAL \
           (SELECT d.contact_id FROM dispatch d WHERE d.contact_id = i.id \
            AND (d.lease_token = ? OR d.lease_token IS NULL) LIMIT 1) h), \
         changed AS (UPDATE contact SET state = ?, sent_at = COALESCE(?, sent_at), \
           attempt = (SELECT d.attempt FROM dispatch d WHERE d.contact_id = contact.id), \
           lease_token = ? \
           WHERE contact.id = ANY(ARRAY(SELECT contact_id FROM held)) \
           AND contact.state = 'pending' RETURNING contact.id), \
         dequeued AS (DELETE FROM dispatch WHERE contact_id = ANY(ARRAY(SELECT contact_id FROM held)) \
           AND (lease_token = ? OR lease_token IS NULL)) \
         SELECT COUNT(*) AS n FROM changed";
    let mut arr = PgArray::default();
    for id in ids {
        arr.int(Some(*id));
    }
    let values: Vec<Value> = vec![
        arr.finish().into(),
        token.into(),
        ContactState::Sent.as_str().into(),
        at.into(),
        token.into(),
        token.into(),
    ];
    let rows = query(c, SQL, values).await?;
    Ok(rows
        .first()
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0) as u64)
}

impl Store {
    /// The idempotency key of a run's contact with a subscriber in a wave (tests and tools
    /// that know the wave but not the key's random part).
    pub async fn contact_key(
        &self,
        run_id: i64,
        wave: &str,
        subscriber_id: i64,
    ) -> Result<Option<String>> {
        self.choice_contact_key(run_id, wave, subscriber_id, Choice::First)
            .await
    }

    /// [`Store::contact_key`] of the contact of `choice`.
    pub async fn choice_contact_key(
        &self,
        run_id: i64,
        wave: &str,
        subscriber_id: i64,
        choice: Choice,
    ) -> Result<Option<String>> {
        let prefix = choice_key_prefix(run_id, wave, subscriber_id, choice);
        // substr, not LIKE: wave ids contain `_`, a LIKE wildcard.
        let rows = query(
            self.db(),
            "SELECT idem_key FROM contact WHERE run_id = ? AND subscriber_id = ? AND substr(idem_key, 1, ?) = ?",
            [
                run_id.into(),
                subscriber_id.into(),
                i32::try_from(prefix.len()).unwrap_or(i32::MAX).into(),
                prefix.into(),
            ],
        )
        .await?;
        rows.first()
            .map(|r| Ok(r.try_get::<String>("", "idem_key")?))
            .transpose()
    }

    /// Claims due contacts of one channel in ONE statement, so two workers (or replicas)
    /// never get the same row: PostgreSQL skips rows another transaction has locked; SQLite
    /// has one writer at a time. A row whose lease ran out is due again: its worker died or
    /// stalled, and the token it holds no longer settles anything.
    pub async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>> {
        let cat = self.catalogue();
        let lease = [req.lease_until.into(), req.token.into()];
        let due = [
            req.channel.into(),
            req.now.into(),
            req.now.into(),
            (req.now - req.proof_grace).into(),
            false.into(),
            (req.limit as i64).into(),
        ];
        let rows = if self.is_postgres() {
            // One round trip: the claimed rows come back joined. `contact_id =
            // ANY(ARRAY(...))` drives the update through the primary key (an IN subquery
            // became a hash join over the whole queue); SKIP LOCKED passes over rows another
            // replica holds.
            let sql = format!(
                "WITH claimed AS (UPDATE dispatch SET attempt = attempt + 1, lease_until = ?, lease_token = ? \
                 WHERE contact_id = ANY(ARRAY(SELECT contact_id FROM dispatch WHERE {DUE} FOR UPDATE SKIP LOCKED)) \
                 RETURNING contact_id, due_at, attempt, send_by) \
                 SELECT {} FROM claimed d {CLAIMED_JOIN} ORDER BY d.due_at, d.contact_id",
                claimed_cols(&cat)
            );
            query(self.db(), &sql, lease.into_iter().chain(due)).await?
        } else {
            // A read first: on SQLite even an UPDATE that matches nothing takes the one write
            // lock, and every channel's dispatchers poll all the time, most of them with
            // nothing due (seen: the e-mail channel's idle dispatchers held back a call wave
            // in the e2e `two_waves` test on SQLite).
            let mut probe = due.clone();
            probe[5] = 1i64.into();
            let any = query(
                self.db(),
                &format!("SELECT contact_id FROM dispatch WHERE {DUE}"),
                probe,
            )
            .await?;
            if any.is_empty() {
                return Ok(Vec::new());
            }
            // SQLite cannot join a RETURNING, so the claimed rows are read back by primary
            // key, with the token as a check (an index on the token would cost every claim).
            let sql = format!(
                "UPDATE dispatch SET attempt = attempt + 1, lease_until = ?, lease_token = ? \
                 WHERE contact_id IN (SELECT contact_id FROM dispatch WHERE {DUE}) RETURNING contact_id"
            );
            let claimed = query(self.db(), &sql, lease.into_iter().chain(due)).await?;
            if claimed.is_empty() {
                return Ok(Vec::new());
            }
            let mut values: Vec<Value> = Vec::with_capacity(claimed.len() + 1);
            for r in &claimed {
                values.push(r.try_get::<i64>("", "contact_id")?.into());
            }
            let sql = format!(
                "SELECT {} FROM dispatch d {CLAIMED_JOIN} \
                 WHERE d.contact_id IN ({}) AND d.lease_token = ? ORDER BY d.due_at, d.contact_id",
                claimed_cols(&cat),
                marks(values.len())
            );
            values.push(req.token.into());
            query(self.db(), &sql, values).await?
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let heads = rows
            .iter()
            .map(|r| ClaimedHead::from_query_result(r, ""))
            .collect::<Result<Vec<_>, _>>()?;
        let waves = self.wave_names(&heads).await?;
        heads
            .into_iter()
            .zip(&rows)
            .map(|(h, r)| {
                let (wave, campaign, version_id) =
                    waves.get(&h.wave_run_id).cloned().ok_or_else(|| {
                        crate::StoreError::Invalid(format!("wave run {} not found", h.wave_run_id))
                    })?;
                Ok(Claimed {
                    id: h.id,
                    run_id: h.run_id,
                    wave_run_id: h.wave_run_id,
                    wave,
                    campaign,
                    version_id,
                    subscriber_id: h.subscriber_id,
                    idem_key: h.idem_key,
                    attempt: h.attempt,
                    send_by: h.send_by,
                    variant: h.variant,
                    choice: Choice::parse(&h.choice).ok_or_else(|| {
                        crate::StoreError::Invalid(format!(
                            "contact {}: choice {:?}",
                            h.id, h.choice
                        ))
                    })?,
                    // Written from a parsed slot; a stored text that no longer parses means
                    // no slot rather than no message.
                    slot: h.slot.as_deref().and_then(TimeSlot::parse),
                    subscriber: crate::subscribers::read_subscriber(r, &cat)?,
                })
            })
            .collect()
    }

    /// (wave, campaign, version) of each wave run in a batch: one small query instead of two
    /// more joins per claimed row.
    async fn wave_names(
        &self,
        heads: &[ClaimedHead],
    ) -> Result<HashMap<i64, (String, String, i64)>> {
        let mut ids: Vec<i64> = heads.iter().map(|h| h.wave_run_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let sql = format!(
            "SELECT w.id, w.wave, r.campaign, r.version_id FROM wave_run w JOIN run r ON r.id = w.run_id WHERE w.id IN ({})",
            marks(ids.len())
        );
        let rows = query(self.db(), &sql, ids.into_iter().map(Value::from)).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "id")?,
                    (
                        r.try_get("", "wave")?,
                        r.try_get("", "campaign")?,
                        r.try_get("", "version_id")?,
                    ),
                ))
            })
            .collect()
    }

    /// Records what happened to claimed contacts, in one transaction. Only rows this lease
    /// still holds change (a row another worker re-claimed after the lease ran out, or one a
    /// delivery report already settled, is left alone); returns how many contacts changed.
    /// A contact settled `failed` or `expired` gets its fallback in the same transaction
    /// ([`write_fallbacks`], judged at `now`).
    pub async fn settle(
        &self,
        token: &str,
        outcomes: &[(i64, Outcome)],
        now: Millis,
    ) -> Result<u64> {
        // The usual group: every answer "taken", written at one moment. On PostgreSQL that is
        // one statement (its own transaction): the dispatcher settles each group of answers
        // as it arrives, thousands of groups a wave, and a transaction of two statements
        // cost four round trips. A sent contact is reached: it has no fallback to write.
        if self.is_postgres()
            && let Some((_, Outcome::Sent { at })) = outcomes.first()
            && outcomes
                .iter()
                .all(|(_, o)| matches!(o, Outcome::Sent { at: a } if a == at))
        {
            let ids: Vec<i64> = outcomes.iter().map(|(id, _)| *id).collect();
            return settle_sent_pg(self.db(), token, &ids, *at).await;
        }
        let mut sent_by_at: HashMap<Millis, Vec<i64>> = HashMap::new();
        let mut unreached: Vec<i64> = Vec::new();
        let mut changed = 0;
        let tx = crate::TransactionTrait::begin(self.db()).await?;
        for (id, outcome) in outcomes {
            match outcome {
                Outcome::Sent { at } => sent_by_at.entry(*at).or_default().push(*id),
                Outcome::Retry { due_at, error } | Outcome::Deferred { due_at, error } => {
                    let refund = i32::from(matches!(outcome, Outcome::Deferred { .. }));
                    let n = exec(
                        &tx,
                        "UPDATE dispatch SET due_at = ?, attempt = attempt - ?, lease_until = NULL, lease_token = NULL WHERE contact_id = ? AND lease_token = ?",
                        [(*due_at).into(), refund.into(), (*id).into(), token.into()],
                    )
                    .await?
                    .rows_affected();
                    if n == 1 {
                        exec(
                            &tx,
                            "UPDATE contact SET last_error = ? WHERE id = ?",
                            [error.as_str().into(), (*id).into()],
                        )
                        .await?;
                    }
                    changed += n;
                }
                Outcome::Failed { error } => {
                    unreached.push(*id);
                    changed += finish(
                        &tx,
                        token,
                        &[*id],
                        ContactState::Failed,
                        None,
                        Some(error.as_str()),
                    )
                    .await?;
                }
                Outcome::Unknown { error } => {
                    changed += finish(
                        &tx,
                        token,
                        &[*id],
                        ContactState::Unknown,
                        None,
                        Some(error.as_str()),
                    )
                    .await?;
                }
                Outcome::Expired => {
                    unreached.push(*id);
                    changed += finish(
                        &tx,
                        token,
                        &[*id],
                        ContactState::Expired,
                        None,
                        Some(SEND_BY_PASSED),
                    )
                    .await?;
                }
            }
        }
        for (at, ids) in sent_by_at {
            for chunk in ids.chunks(1000) {
                changed += finish(&tx, token, chunk, ContactState::Sent, Some(at), None).await?;
            }
        }
        write_fallbacks(&tx, &unreached, now).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// [`Store::settle`], and when every outcome changed its contact (nothing was left alone
    /// because another worker holds it or a report settled it first), the keys of the
    /// contacts settled `sent` are remembered in [`Store::sent_keys`]: their queue rows are
    /// gone and their state is committed past `pending`, so the gateway's acknowledgement of
    /// them proves nothing anyone will ask. `keys[i]` is the idempotency key of
    /// `outcomes[i]`'s contact.
    ///
    /// All or nothing on purpose: the count says how many rows changed, not which, and a
    /// contact left `pending` (re-claimed by another worker after this lease ran out) must
    /// keep its acknowledgement stored, or that worker, finding no proof, would send it
    /// again. Each outcome changes at most its own row, so `changed == outcomes.len()` with
    /// distinct contacts means each one changed.
    pub async fn settle_noting_sent(
        &self,
        token: &str,
        outcomes: &[(i64, Outcome)],
        keys: &[&str],
        now: Millis,
    ) -> Result<u64> {
        if keys.len() != outcomes.len() {
            return Err(crate::StoreError::Invalid(format!(
                "settle: {} keys for {} outcomes",
                keys.len(),
                outcomes.len()
            )));
        }
        let changed = self.settle(token, outcomes, now).await?;
        if changed == outcomes.len() as u64 {
            let mut ids: Vec<i64> = outcomes.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() == outcomes.len() {
                self.sent_keys().insert(
                    outcomes
                        .iter()
                        .zip(keys)
                        .filter(|((_, o), _)| matches!(o, Outcome::Sent { .. }))
                        .map(|(_, k)| *k),
                );
            }
        }
        Ok(changed)
    }

    /// Clears leases of `channel` that ran out before `before` (their worker died or
    /// stalled, and the channel's proof grace has passed), so the contacts show as waiting
    /// again. The claim takes such rows by itself; this keeps the counts honest. A row still
    /// inside its grace keeps its lease: it is in doubt, not waiting.
    pub async fn reclaim_expired_leases(&self, channel: &str, before: Millis) -> Result<u64> {
        Ok(exec(
            self.db(),
            "UPDATE dispatch SET lease_until = NULL, lease_token = NULL WHERE lease_until < ? AND channel = ?",
            [before.into(), channel.into()],
        )
        .await?
        .rows_affected())
    }

    /// Decides the queue rows of at-most-once waves on `channel` whose lease ran out before
    /// `before` (the channel's proof grace included): the worker died with them in doubt. A
    /// row the gateway reported on went out (`sent`); the rest are `unknown`, and none is
    /// sent again. Returns (sent, unknown).
    pub async fn settle_doubtful(
        &self,
        channel: &str,
        before: Millis,
        now: Millis,
    ) -> Result<(u64, u64)> {
        let tx = crate::TransactionTrait::begin(self.db()).await?;
        let rows = query(
            &tx,
            "SELECT d.contact_id, c.idem_key FROM dispatch d JOIN contact c ON c.id = d.contact_id \
             WHERE d.channel = ? AND d.at_most_once = ? AND d.lease_until < ?",
            [channel.into(), true.into(), before.into()],
        )
        .await?;
        if rows.is_empty() {
            return Ok((0, 0));
        }
        let mut doubtful: Vec<(i64, String)> = Vec::with_capacity(rows.len());
        for r in &rows {
            doubtful.push((r.try_get("", "contact_id")?, r.try_get("", "idem_key")?));
        }
        let keys: Vec<&str> = doubtful.iter().map(|(_, k)| k.as_str()).collect();
        let reported = crate::inbound::reported_keys_in(&tx, &keys).await?;
        let (went, unknown): (Vec<i64>, Vec<i64>) = {
            let (a, b): (Vec<_>, Vec<_>) = doubtful.iter().partition(|(_, k)| reported.contains(k));
            (
                a.into_iter().map(|(id, _)| *id).collect(),
                b.into_iter().map(|(id, _)| *id).collect(),
            )
        };
        let mut counts = (0, 0);
        for (ids, state, error, n) in [
            (&went, ContactState::Sent, None, &mut counts.0),
            (
                &unknown,
                ContactState::Unknown,
                Some(IN_DOUBT_AT_MOST_ONCE),
                &mut counts.1,
            ),
        ] {
            for chunk in ids.chunks(1000) {
                let sql = format!(
                    "UPDATE contact SET state = ?, sent_at = CASE WHEN ? THEN COALESCE(sent_at, ?) ELSE sent_at END, \
                     last_error = COALESCE(?, last_error) WHERE state = 'pending' AND id IN ({})",
                    marks(chunk.len())
                );
                let values = [
                    state.as_str().into(),
                    (state == ContactState::Sent).into(),
                    now.into(),
                    error.map(str::to_owned).into(),
                ]
                .into_iter()
                .chain(chunk.iter().map(|id| Value::from(*id)));
                *n += exec(&tx, &sql, values).await?.rows_affected();
                let sql = format!(
                    "DELETE FROM dispatch WHERE contact_id IN ({})",
                    marks(chunk.len())
                );
                exec(&tx, &sql, chunk.iter().map(|id| Value::from(*id))).await?;
            }
        }
        tx.commit().await?;
        Ok(counts)
    }

    /// Extends the lease of the queue rows of `ids` that `token` still holds to `until`;
    /// returns how many it holds. The dispatcher renews while a batch is in flight, so a slow
    /// gateway never lets a live worker's rows be claimed (and sent) by another. By primary
    /// key: the token has no index (one would cost every claim).
    pub async fn renew_lease(&self, token: &str, ids: &[i64], until: Millis) -> Result<u64> {
        let mut n = 0;
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "UPDATE dispatch SET lease_until = ? WHERE lease_token = ? AND contact_id IN ({})",
                marks(chunk.len())
            );
            let values = [until.into(), token.into()]
                .into_iter()
                .chain(chunk.iter().map(|id| Value::from(*id)));
            n += exec(self.db(), &sql, values).await?.rows_affected();
        }
        Ok(n)
    }

    /// Expires queued contacts past their send-by deadline (an SMS hours late is harm),
    /// unless a live lease holds them: their worker checks the deadline itself.
    pub async fn expire_overdue(&self, now: Millis) -> Result<u64> {
        let tx = crate::TransactionTrait::begin(self.db()).await?;
        let rows = query(
            &tx,
            "DELETE FROM dispatch WHERE send_by IS NOT NULL AND send_by < ? AND (lease_until IS NULL OR lease_until < ?) RETURNING contact_id",
            [now.into(), now.into()],
        )
        .await?;
        let n = expire_removed(&tx, &rows, SEND_BY_PASSED).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Refreshes PostgreSQL's statistics of the queue after a wave was planned into it. With
    /// the statistics of the (often empty) queue from before, the planner estimated a few
    /// dozen due rows and chose to sort the whole queue on every claim, on disk, instead of
    /// walking the claim index in order: 100-160 ms per 1000-row claim at 200k queued,
    /// found with auto_explain under crates/bench. SQLite needs nothing here.
    pub async fn refresh_queue_statistics(&self) -> Result<()> {
        if self.is_postgres() {
            self.db().execute_unprepared("ANALYZE dispatch").await?;
        }
        Ok(())
    }

    /// Contacts of a wave run still waiting or being sent (to know when dispatch is finished),
    /// counting the treatment contacts decided but not yet written (`crate::batches`).
    pub async fn pending_in_wave(&self, wave_run_id: i64) -> Result<u64> {
        let rows = query(
            self.db(),
            "SELECT (SELECT COUNT(*) FROM contact WHERE wave_run_id = ? AND state = 'pending')              + (SELECT CAST(COALESCE(SUM(treatment), 0) AS BIGINT) FROM planned_batch WHERE wave_run_id = ?) AS n",
            [wave_run_id.into(), wave_run_id.into()],
        )
        .await?;
        Ok(rows[0].try_get::<i64>("", "n")? as u64)
    }

    /// Contacts by state (with `sending` for those under a lease), across all runs or one.
    pub async fn state_counts(&self, run_id: Option<i64>) -> Result<BTreeMap<String, u64>> {
        let (filter, values): (&str, Vec<Value>) = match run_id {
            Some(id) => ("WHERE c.run_id = ?", vec![id.into()]),
            None => ("", Vec::new()),
        };
        let sql = format!(
            "SELECT {STATE} AS state, COUNT(*) AS n FROM {WITH_LEASE} {filter} GROUP BY {STATE}"
        );
        let mut out = BTreeMap::new();
        for r in query(self.db(), &sql, values).await? {
            out.insert(r.try_get("", "state")?, r.try_get::<i64>("", "n")? as u64);
        }
        Ok(out)
    }

    /// Counts of a wave run's subscribers by arm and the state of their first contact, plus
    /// responders per arm (a response to either choice). Per subscriber, not per contact: a
    /// preferred wave's fallback is a second contact with the same subscriber, counted in
    /// [`Store::choice_reach`].
    pub async fn wave_counts(&self, wave_run_id: i64) -> Result<WaveStateCounts> {
        let rows = query(
            self.db(),
            &format!(
                "SELECT c.arm, {STATE} AS state, COUNT(*) AS n, \
                 SUM(CASE WHEN c.responded_at IS NOT NULL OR EXISTS (SELECT 1 FROM contact f WHERE f.wave_run_id = c.wave_run_id \
                   AND f.subscriber_id = c.subscriber_id AND f.choice = ? AND f.responded_at IS NOT NULL) THEN 1 ELSE 0 END) AS responded \
                 FROM {WITH_LEASE} WHERE c.wave_run_id = ? AND c.choice = ? GROUP BY c.arm, {STATE}"
            ),
            [
                Choice::Second.as_str().into(),
                wave_run_id.into(),
                Choice::First.as_str().into(),
            ],
        )
        .await?;
        let mut out = WaveStateCounts::default();
        for r in rows {
            let arm: String = r.try_get("", "arm")?;
            let state: String = r.try_get("", "state")?;
            let n = r.try_get::<i64>("", "n")? as u64;
            let responded = r.try_get::<Option<i64>>("", "responded")?.unwrap_or(0) as u64;
            out.by_state.insert((arm, state), (n, responded));
        }
        let funnel = query(
            self.db(),
            "SELECT reason, count FROM funnel WHERE wave_run_id = ? ORDER BY id",
            [wave_run_id.into()],
        )
        .await?;
        for r in funnel {
            out.funnel.push((
                r.try_get("", "reason")?,
                r.try_get::<i64>("", "count")? as u64,
            ));
        }
        Ok(out)
    }

    /// The treatment contacts of a wave run that have an experiment variant, as
    /// (subscriber, variant, responded within the window), by subscriber: for the report's
    /// per-variant rows.
    pub async fn variant_contacts(&self, wave_run_id: i64) -> Result<Vec<(i64, String, bool)>> {
        let rows = query(
            self.db(),
            // One row per subscriber, by their first contact (a preferred wave's fallback
            // keeps the variant, and is the same subscriber), answered by either contact.
            "SELECT c.subscriber_id, c.variant, CAST(CASE WHEN c.responded_at IS NOT NULL OR EXISTS (SELECT 1 FROM contact f \
             WHERE f.wave_run_id = c.wave_run_id AND f.subscriber_id = c.subscriber_id AND f.choice = ? AND f.responded_at IS NOT NULL) \
             THEN 1 ELSE 0 END AS BIGINT) AS responded \
             FROM contact c WHERE c.wave_run_id = ? AND c.arm = ? AND c.choice = ? AND c.variant IS NOT NULL ORDER BY c.subscriber_id",
            [
                Choice::Second.as_str().into(),
                wave_run_id.into(),
                Arm::Treatment.as_str().into(),
                Choice::First.as_str().into(),
            ],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "subscriber_id")?,
                    r.try_get("", "variant")?,
                    r.try_get::<i64>("", "responded")? == 1,
                ))
            })
            .collect()
    }

    /// Every contact row's (subscriber, arm, state) of a wave run: for checks and reports.
    pub async fn contact_states(&self, wave_run_id: i64) -> Result<Vec<(i64, String, String)>> {
        self.per_subscriber(wave_run_id, STATE).await
    }

    /// (subscriber, last error) of every contact of a wave run that has one, by subscriber:
    /// why it was not reached (`failed`: the gateway's or the mail server's refusal, or no
    /// address) or why it waited.
    pub async fn contact_errors(&self, wave_run_id: i64) -> Result<Vec<(i64, String)>> {
        Ok(self
            .per_subscriber(wave_run_id, "COALESCE(c.last_error, '')")
            .await?
            .into_iter()
            .filter(|(_, _, e)| !e.is_empty())
            .map(|(s, _, e)| (s, e))
            .collect())
    }

    /// (subscriber, arm, `column`) for every contact of a wave run, by subscriber.
    /// `column` is an expression over `c` (contact) and `d` (its queue row), a constant of
    /// this crate, never input.
    pub(crate) async fn per_subscriber(
        &self,
        wave_run_id: i64,
        column: &'static str,
    ) -> Result<Vec<(i64, String, String)>> {
        let sql = format!(
            "SELECT c.subscriber_id, c.arm, {column} AS v FROM {WITH_LEASE} WHERE c.wave_run_id = ? ORDER BY c.subscriber_id"
        );
        let rows = query(self.db(), &sql, [wave_run_id.into()]).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "subscriber_id")?,
                    r.try_get("", "arm")?,
                    r.try_get("", "v")?,
                ))
            })
            .collect()
    }
}

/// Reach of a wave's treatment contacts on one channel and choice (the report's rows for
/// `channel: preferred`): how many were targeted there, how many it reached (went out and
/// not reported undelivered: `sent`, `delivered`), how many responded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceReach {
    pub channel: ChannelKind,
    pub choice: Choice,
    pub targeted: u64,
    pub reached: u64,
    pub responded: u64,
}

impl Store {
    /// [`ChoiceReach`] of a wave run, by channel then choice.
    pub async fn choice_reach(&self, wave_run_id: i64) -> Result<Vec<ChoiceReach>> {
        let rows = query(
            self.db(),
            "SELECT channel, choice, COUNT(*) AS n, \
             SUM(CASE WHEN state IN ('sent', 'delivered') THEN 1 ELSE 0 END) AS reached, \
             SUM(CASE WHEN responded_at IS NULL THEN 0 ELSE 1 END) AS responded \
             FROM contact WHERE wave_run_id = ? AND arm = ? GROUP BY channel, choice ORDER BY channel, choice",
            [wave_run_id.into(), Arm::Treatment.as_str().into()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let channel: String = r.try_get("", "channel")?;
                let choice: String = r.try_get("", "choice")?;
                let count = |col: &str| -> Result<u64> {
                    Ok(r.try_get::<Option<i64>>("", col)?.unwrap_or(0) as u64)
                };
                Ok(ChoiceReach {
                    channel: ChannelKind::parse(&channel).ok_or_else(|| {
                        crate::StoreError::Invalid(format!("contact channel {channel:?}"))
                    })?,
                    choice: Choice::parse(&choice).ok_or_else(|| {
                        crate::StoreError::Invalid(format!("contact choice {choice:?}"))
                    })?,
                    targeted: count("n")?,
                    reached: count("reached")?,
                    responded: count("responded")?,
                })
            })
            .collect()
    }
}

/// Counts for one wave run, keyed by (arm, state) → (contacts, responded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaveStateCounts {
    pub by_state: HashMap<(String, String), (u64, u64)>,
    /// The planner's funnel, in the order it was recorded.
    pub funnel: Vec<(String, u64)>,
}

impl WaveStateCounts {
    /// Contacts of `arm` in any of `states`.
    pub fn count(&self, arm: Arm, states: &[ContactState]) -> u64 {
        self.by_state
            .iter()
            .filter(|((a, s), _)| a == arm.as_str() && ContactState::any_is(states, s))
            .map(|(_, (n, _))| n)
            .sum()
    }

    pub fn responded(&self, arm: Arm) -> u64 {
        self.by_state
            .iter()
            .filter(|((a, _), _)| a == arm.as_str())
            .map(|(_, (_, r))| r)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arm_and_state_parses_back_from_its_stored_text() {
        for a in Arm::ALL {
            assert_eq!(Arm::parse(a.as_str()), Some(a));
        }
        for s in ContactState::ALL {
            assert_eq!(ContactState::parse(s.as_str()), Some(s));
        }
        assert_eq!(Arm::parse("Treatment"), None);
        assert_eq!(ContactState::parse("open"), None);
    }

    #[test]
    fn a_second_choice_on_the_first_channel_is_no_fallback() {
        let slot = TimeSlot::parse("18:00-21:00");
        let same = Route::new(ChannelKind::Sms, None, Some((ChannelKind::Sms, slot)));
        assert_eq!(same.fallback, None);
        let other = Route::new(ChannelKind::Sms, None, Some((ChannelKind::Email, slot)));
        assert_eq!(other.fallback, Some((ChannelKind::Email, slot)));
    }

    #[test]
    fn state_lists_are_what_their_names_say() {
        // Every treatment state but `held` (control only) is targeted.
        let targeted: Vec<_> = ContactState::ALL
            .into_iter()
            .filter(|s| *s != ContactState::Held)
            .collect();
        assert_eq!(ContactState::TARGETED.to_vec(), targeted);
        // Nothing both went out and never left us; `undelivered` went out and is capped.
        for s in ContactState::WENT_OUT {
            assert!(!ContactState::NEVER_SENT.contains(&s));
            assert!(ContactState::COUNTS_TOWARD_CAP.contains(&s));
        }
        assert_eq!(
            sql_list(&ContactState::WENT_OUT),
            "'sent', 'delivered', 'undelivered'"
        );
    }
}
