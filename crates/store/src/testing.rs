//! Test support (feature `test-util`): a fresh, migrated store per test on the backend named
//! by `CAMPAIGND_TEST_BACKEND` (`sqlite`, the default, or `postgres`), so the whole test
//! suite can run on both backends unchanged.
//!
//! A PostgreSQL that cannot be reached is an error here, never a reason to skip: under CI a
//! test that silently ran nothing would prove nothing.

use std::path::Path;

use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};

use crate::contacts::{Arm, NewContact, Purpose, WaveContacts, insert_contacts};
use crate::inbound::NewTask;
use crate::runs::{self, NewRun, wave_state};
use crate::subscribers::{NewSubscriber, OnDuplicate};
use crate::{Millis, Result, Store, StoreError};

/// The test-only door to the raw connection (`use store::testing::RawDb as _;`), for tests
/// that set up or inspect rows the store's API has no function for. Product crates never
/// enable `test-util` (`tests/architecture.rs`), so for them `Store::db` does not exist.
pub trait RawDb {
    fn db(&self) -> &DatabaseConnection;
}

impl RawDb for Store {
    fn db(&self) -> &DatabaseConnection {
        Store::db(self)
    }
}

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend named by `CAMPAIGND_TEST_BACKEND`: `sqlite` (the default) or `postgres`.
pub fn backend() -> Result<Backend> {
    match std::env::var("CAMPAIGND_TEST_BACKEND").as_deref() {
        Ok("postgres") => Ok(Backend::Postgres),
        Ok("sqlite") | Err(_) => Ok(Backend::Sqlite),
        Ok(other) => Err(StoreError::Invalid(format!(
            "CAMPAIGND_TEST_BACKEND={other}: expected sqlite or postgres"
        ))),
    }
}

/// The PostgreSQL server tests use: `CAMPAIGND_TEST_PG_URL`, by default the local one.
pub fn pg_url() -> String {
    std::env::var("CAMPAIGND_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Where a test's database lives, for tests that hand it to the `campaignd` binary
/// (`database_url`, `database_schema` in its config) as well as for [`fresh_store`].
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub url: String,
    /// The PostgreSQL schema of this test alone (`None` on SQLite).
    pub schema: Option<String>,
}

impl TestDatabase {
    /// Connects without migrating (a test may want the binary to migrate it).
    pub async fn connect(&self) -> Result<Store> {
        Store::connect(&self.url, self.schema.as_deref()).await
    }
}

/// An empty database of the test's own: a SQLite file in `dir` (not created yet), or a new,
/// empty PostgreSQL schema, so tests running in parallel never see each other's rows.
pub async fn fresh_database(backend: Backend, dir: &Path) -> Result<TestDatabase> {
    match backend {
        Backend::Sqlite => Ok(TestDatabase {
            url: format!("sqlite://{}", dir.join("test.db").display()),
            schema: None,
        }),
        Backend::Postgres => Ok(TestDatabase {
            url: pg_url(),
            schema: Some(fresh_pg_schema().await?),
        }),
    }
}

/// The id of this test run, the prefix of every PostgreSQL schema it creates
/// (`t_<run>_<uuid>`): `CAMPAIGND_TEST_RUN`, which scripts/test.sh sets so that it can drop
/// exactly its own schemas afterwards and never those of a run beside it; else one id per
/// test process. Either way `<unix seconds>_<lowercase letters or digits>`: the seconds let a
/// later run drop the schemas of a run that crashed, by age (scripts/test.sh).
pub fn run_id() -> Result<&'static str> {
    static RUN: std::sync::OnceLock<std::result::Result<String, String>> =
        std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| match std::env::var("CAMPAIGND_TEST_RUN") {
        Ok(run) if valid_run_id(&run) => Ok(run),
        Ok(run) => Err(format!(
            "CAMPAIGND_TEST_RUN={run:?}: expected <unix seconds>_<lowercase letters or digits>, \
             e.g. 1796000000_a1b2c3d4"
        )),
        Err(_) => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let random = uuid::Uuid::new_v4().simple().to_string();
            Ok(format!("{secs}_{}", &random[..8]))
        }
    });
    run.as_deref().map_err(|e| StoreError::Invalid(e.clone()))
}

/// Ten digits of seconds (until 2286), then a short lowercase tag: it goes into schema names
/// unquoted, and PostgreSQL names end at 63 bytes.
fn valid_run_id(run: &str) -> bool {
    let Some((secs, tag)) = run.split_once('_') else {
        return false;
    };
    secs.len() == 10
        && secs.bytes().all(|b| b.is_ascii_digit())
        && (1..=16).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Creates a new, empty schema `t_<run>_<uuid>` (see [`run_id`]) on the server at [`pg_url`]
/// and returns its name. Schemas are kept after the test, for inspection; scripts/test.sh
/// drops its run's schemas when the run passes, and any run's after a few days.
pub async fn fresh_pg_schema() -> Result<String> {
    let run = run_id()?;
    let admin = Store::connect(&pg_url(), None).await?;
    let schema = format!("t_{run}_{}", uuid::Uuid::new_v4().simple());
    admin
        .db()
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await?;
    admin.close().await?;
    Ok(schema)
}

/// A migrated, empty store on the backend named by `CAMPAIGND_TEST_BACKEND`.
pub async fn fresh_store(dir: &Path) -> Result<Store> {
    let store = fresh_database(backend()?, dir).await?.connect().await?;
    store.migrate().await?;
    Ok(store)
}

/// A plain subscriber of the shipped catalogue for tests: a freshman on SMS in the
/// evening, no complaints, not opted out. Tests change what they are about with
/// [`NewSubscriber::with`] or by setting the core fields.
pub fn subscriber(msisdn: &str) -> NewSubscriber {
    subscriber_in(msisdn, catalogue::shipped())
}

/// [`subscriber`] of `catalogue`, which declares the shipped catalogue's attributes (and
/// more: a test's own).
pub fn subscriber_in(
    msisdn: &str,
    catalogue: std::sync::Arc<catalogue::Catalogue>,
) -> NewSubscriber {
    NewSubscriber::new(msisdn, catalogue)
        .with("name", "Test")
        .with("gender", "female")
        .with("age", 19)
        .with("region", "beijing")
        .with("brand", "mzone")
        .with("arpu_3m", 50.0)
        .with("balance", 10.0)
        .with("tenure_months", 2)
        .with("student_stage", "freshman")
        .with("first_channel", "sms")
        .with("first_channel_slot", "18:00-21:00")
        .with("second_channel", "outbound_call")
        .with("second_channel_slot", "18:00-21:00")
        .with("complaints_30d", 0)
        .with("churn_risk", 0.1)
}

/// An open `outbound_call` wave of a started run, with one contact per subscriber: what
/// the call-centre tests build their tasks on ([`call_wave`]).
#[derive(Debug, Clone)]
pub struct CallWave {
    pub run_id: i64,
    pub wave_run_id: i64,
    /// One per subscriber, in the order given.
    pub contacts: Vec<CallContact>,
}

/// One contact of a [`CallWave`].
#[derive(Debug, Clone)]
pub struct CallContact {
    pub subscriber_id: i64,
    pub contact_id: i64,
    /// The contact's idempotency key (what outcomes and callbacks name).
    pub key: String,
}

impl CallContact {
    /// An unpaced task of `team` for this contact with the shipped outcomes and no SLA;
    /// tests change what they are about with struct update syntax.
    pub fn task<'a>(&self, team: &'a str, script: &'a str) -> NewTask<'a> {
        NewTask {
            contact_id: self.contact_id,
            team,
            kind: "outbound_call",
            subscriber_id: self.subscriber_id,
            script,
            due_at: None,
            escalate_to: None,
            outcomes: &[],
            queued: false,
        }
    }
}

/// Inserts `subs`, starts a run of `campaign` with one `outbound_call` wave `call`, opens
/// the wave from `now` to `closes_at` and gives it a treatment contact (stratum `stratum`)
/// per subscriber: the fixture every call-centre test starts from.
pub async fn call_wave(
    store: &Store,
    campaign: &str,
    subs: &[NewSubscriber],
    stratum: &str,
    now: Millis,
    closes_at: Millis,
) -> Result<CallWave> {
    let routes = vec![None; subs.len()];
    open_wave(
        store,
        campaign,
        ("call", "outbound_call"),
        subs,
        &routes,
        stratum,
        now,
        closes_at,
    )
    .await
}

/// As [`call_wave`], for a `channel: preferred` wave `w` whose contacts take `routes` (one
/// per subscriber, `None`: on `channel`): the fixture of the fallback tests. The contacts
/// are due at `now` with no send-by (the window's close bounds their fallbacks).
pub async fn routed_wave(
    store: &Store,
    campaign: &str,
    channel: &str,
    subs: &[NewSubscriber],
    routes: &[Option<crate::contacts::Route>],
    now: Millis,
    closes_at: Millis,
) -> Result<CallWave> {
    open_wave(
        store,
        campaign,
        ("w", channel),
        subs,
        routes,
        "all",
        now,
        closes_at,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn open_wave(
    store: &Store,
    campaign: &str,
    (wave, channel): (&str, &str),
    subs: &[NewSubscriber],
    routes: &[Option<crate::contacts::Route>],
    stratum: &str,
    now: Millis,
    closes_at: Millis,
) -> Result<CallWave> {
    let missing = |what: &str| StoreError::Invalid(format!("test fixture: no {what}"));
    store
        .insert_subscribers(subs, OnDuplicate::Fail, now)
        .await?;
    let mut sub_ids = Vec::with_capacity(subs.len());
    for s in subs {
        sub_ids.push(
            store
                .subscriber_by_msisdn(&s.msisdn)
                .await?
                .ok_or_else(|| missing("subscriber"))?,
        );
    }
    let version_id = store
        .upsert_version(campaign, "test", &format!("campaign: {campaign}"), now)
        .await?;
    let run_id = store
        .start_run(NewRun {
            campaign,
            version_id,
            slot_at: None,
            trigger: "manual",
            waves: &[(wave.to_owned(), channel.to_owned())],
            now,
        })
        .await?
        .ok_or_else(|| missing("run"))?;
    let wave_run_id = store.wave_runs(run_id).await?[0].id;
    let contacts: Vec<NewContact> = sub_ids
        .iter()
        .zip(routes)
        .map(|(s, route)| NewContact {
            subscriber_id: *s,
            arm: Arm::Treatment,
            due_at: now,
            send_by: None,
            stratum: stratum.into(),
            variant: None,
            route: route.clone(),
        })
        .collect();
    let tx = store.db().begin().await?;
    runs::transition_wave(&tx, wave_run_id, wave_state::PENDING, wave_state::OPEN).await?;
    runs::set_wave_window(&tx, wave_run_id, now, closes_at).await?;
    insert_contacts(
        &tx,
        &WaveContacts {
            run_id,
            wave_run_id,
            wave,
            channel,
            purpose: Purpose::Marketing,
            at_most_once: false,
        },
        &contacts,
    )
    .await?;
    tx.commit().await?;
    let mut out = Vec::with_capacity(sub_ids.len());
    for s in sub_ids {
        let key = store
            .contact_key(run_id, wave, s)
            .await?
            .ok_or_else(|| missing("contact key"))?;
        let c = store
            .contact_by_key(&key)
            .await?
            .ok_or_else(|| missing("contact"))?;
        out.push(CallContact {
            subscriber_id: s,
            contact_id: c.id,
            key,
        });
    }
    Ok(CallWave {
        run_id,
        wave_run_id,
        contacts: out,
    })
}

/// The agent recorded on a task (`agent_task.agent`), which no store function reads back.
pub async fn task_agent(store: &Store, task_id: i64) -> Result<Option<String>> {
    let row = store
        .db()
        .query_one_raw(crate::stmt(
            store.db(),
            "SELECT agent FROM agent_task WHERE id = ?",
            [task_id.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<Option<String>>("", "agent")?,
        None => None,
    })
}

/// Takes one pending batch as [`Store::write_planned_batch`] does (its contacts and queue
/// rows inserted, its row deleted) and rolls the transaction back instead of committing:
/// a crash in the middle of writing a batch. The contacts it had inserted.
pub async fn write_batch_and_crash(store: &Store, wave_run_id: Option<i64>) -> Result<Option<u64>> {
    let tx = store.db().begin().await?;
    let n = crate::batches::take_one(&tx, wave_run_id, crate::batches::Wait::Skip).await?;
    tx.rollback().await?;
    Ok(n)
}

/// [`Store::write_planned_batch`] with PostgreSQL's planner pushed to a nested loop that
/// rescans the batch subquery (hash, merge, materialize, sort off for the transaction): the
/// plan under which a `DELETE ... IN (SELECT ... LIMIT 1 FOR UPDATE)` took every batch.
pub async fn write_batch_as_nested_loop(store: &Store) -> Result<Option<u64>> {
    let tx = store.db().begin().await?;
    if store.is_postgres() {
        tx.execute_unprepared(
            "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
             SET LOCAL enable_material = off; SET LOCAL enable_hashagg = off; SET LOCAL enable_sort = off",
        )
        .await?;
    }
    let n = crate::batches::take_one(&tx, None, crate::batches::Wait::Skip).await?;
    tx.commit().await?;
    Ok(n)
}

/// Whether each TCP connection of this process to `peer_port` (PostgreSQL's) has
/// `TCP_NODELAY` set (Linux; empty elsewhere).
pub fn tcp_nodelay_to(peer_port: u16) -> Vec<bool> {
    #[cfg(target_os = "linux")]
    {
        crate::nodelay::sockets_to(peer_port)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = peer_port;
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_fit_unquoted_schema_names() {
        assert!(valid_run_id("1796000000_a1b2c3d4"));
        assert!(valid_run_id("1796000000_ci"));
        for bad in [
            "",
            "dev",
            "1796000000",
            "1796000000_",
            "179600000_ab",
            "1796000000_AB",
            "1796000000_a-b",
            "1796000000_a;drop",
            "1796000000_0123456789abcdefg",
        ] {
            assert!(!valid_run_id(bad), "{bad:?}");
        }
        // The longest name still fits PostgreSQL's 63 bytes.
        let longest = format!(
            "t_{}_{}",
            "1796000000_0123456789abcdef",
            uuid::Uuid::nil().simple()
        );
        assert!(longest.len() <= 63, "{longest}");
        let run = run_id().unwrap();
        assert!(valid_run_id(run), "{run}");
    }
}
