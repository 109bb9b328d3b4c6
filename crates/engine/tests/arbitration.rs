//! Arbitration under the frequency cap: two marketing campaigns planned the same day over
//! the same audience, with room for one contact each: the higher priority wins whichever is
//! planned first, and each subscriber the lower one leaves out has a decision naming the
//! winner. Runs on SQLite, or PostgreSQL with CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use channels::{Accepted, Channel, Outbound, SendError};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use sea_orm::ConnectionTrait;
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;
use store::{Millis, Store};

const N: usize = 6;

/// Monday 2026-09-07 09:59:30 in Shanghai.
fn morning() -> Millis {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 9, 59, 30)
        .unwrap()
        .timestamp_millis()
}

fn campaign(id: &str, priority: u8, hour: u32) -> String {
    format!(
        r#"
campaign: {id}
timezone: Asia/Shanghai
priority: {priority}
schedule:
  cron: "0 0 {hour} * * *"
audience:
  where: "student_stage == 'freshman'"
policy:
  max_contacts: {{ count: 1, per: 7d }}
waves:
  - id: sms
    channel: sms
    template: offer.txt
    respond_within: 2d
"#
    )
}

struct Accept;

#[async_trait]
impl Channel for Accept {
    fn kind(&self) -> &'static str {
        "sms"
    }

    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        batch
            .iter()
            .map(|_| {
                Ok(Accepted {
                    gateway_ref: None,
                    queued: false,
                })
            })
            .collect()
    }
}

/// Plans `premium` (priority 80) and `bulk` (priority 40) at the hours given; returns, per
/// campaign, how many it targeted, and the decision reasons `bulk` recorded.
async fn day(high_at: u32, low_at: u32) -> (HashMap<String, u64>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    let subs: Vec<_> = (0..N)
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")))
        .collect();
    store
        .insert_subscribers(&subs, OnDuplicate::Fail, morning() - 86_400_000)
        .await
        .unwrap();
    let wf_dir = dir.path().join("workflows");
    std::fs::create_dir_all(&wf_dir).unwrap();
    std::fs::write(wf_dir.join("offer.txt"), "Hello {name}").unwrap();
    for (id, p, at) in [("premium", 80, high_at), ("bulk", 40, low_at)] {
        std::fs::write(wf_dir.join(format!("{id}.yaml")), campaign(id, p, at)).unwrap();
    }
    let (wfs, diags) = spec::load_dir(&wf_dir);
    assert!(diags.is_empty(), "{diags:#?}");
    let clock = ManualClock::new(morning());
    let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    chans.insert("sms".into(), Arc::new(Accept));
    let engine = Engine::new(
        store.clone(),
        clock.clock(),
        chans,
        EngineConfig::new("arb", dir.path().join("no-calendars")),
    )
    .unwrap();
    engine.load(wfs).await.unwrap();
    // 10:00 and then 14:00 (and 10:00 again for slots at the same hour).
    for at in [10, 14] {
        let t = chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2026, 9, 7, at, 0, 10)
            .unwrap()
            .timestamp_millis();
        clock.set(t);
        engine.tick().await.unwrap();
        engine.dispatch_round("sms").await.unwrap();
    }
    let targeted = targeted(&store).await;
    let reasons = reasons(&store, "bulk").await;
    (targeted, reasons)
}

async fn targeted(store: &Store) -> HashMap<String, u64> {
    let rows = store
        .db()
        .query_all_raw(store::stmt(
            store.db(),
            "SELECT r.campaign, COUNT(*) AS n FROM contact c JOIN run r ON r.id = c.run_id \
             WHERE c.arm = 'treatment' GROUP BY r.campaign",
            [],
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get::<String>("", "campaign").unwrap(),
                r.try_get::<i64>("", "n").unwrap() as u64,
            )
        })
        .collect()
}

async fn reasons(store: &Store, campaign: &str) -> Vec<String> {
    let rows = store
        .db()
        .query_all_raw(store::stmt(
            store.db(),
            "SELECT d.reason FROM decision d JOIN wave_run w ON w.id = d.wave_run_id \
             JOIN run r ON r.id = w.run_id WHERE r.campaign = ? ORDER BY d.subscriber_id",
            [campaign.into()],
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<String>("", "reason").unwrap())
        .collect()
}

#[tokio::test]
async fn the_higher_priority_wins_the_cap_whichever_plans_first() {
    let everyone_to_high = |(targeted, reasons): (HashMap<String, u64>, Vec<String>)| {
        assert_eq!(targeted.get("premium"), Some(&(N as u64)), "{targeted:?}");
        assert_eq!(targeted.get("bulk"), None, "{targeted:?}");
        assert_eq!(reasons, vec!["arbitration:premium".to_owned(); N]);
    };
    // The lower priority plans first (10:00) and keeps a place for the higher (14:00).
    everyone_to_high(day(14, 10).await);
    // The higher plans first; the lower finds the cap used by it.
    everyone_to_high(day(10, 14).await);
    // Both at 10:00 in one pass: the higher is planned first.
    everyone_to_high(day(10, 10).await);
}
