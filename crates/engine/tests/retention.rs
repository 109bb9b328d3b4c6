//! Retention goals: a run's members, treated and control, are retained when no churn or
//! port-out event is recorded within the goal's window after the run's start. The report is
//! provisional (retained so far) until the window ends and is rebuilt final after it; runs
//! roll up by season, each member once, judged from their first run of the season. Runs on
//! SQLite, or PostgreSQL with CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use channels::{Accepted, Channel, Outbound, SendError};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::events::{EventSource, NewEvent};
use store::subscribers::OnDuplicate;
use store::{Millis, Store};

const N: usize = 10;
const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

/// Monthly on the 1st at 10:00 in March and April; control held for the season; retained
/// when no churn or port-out comes within 30 days of the run's start.
const KEEP: &str = r#"
campaign: keep
timezone: Asia/Shanghai
schedule:
  cron: "0 0 10 1 * *"
  season: { from: "03-01", to: "04-30" }
audience:
  where: "student_stage == 'freshman'"
control: { share: 0.5, hold: season }
waves:
  - id: sms
    channel: sms
    template: offer.txt
    respond_within: 2d
evaluate:
  goal: { retained: 30d }
"#;

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

fn at(y: i32, m: u32, d: u32) -> Millis {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(y, m, d, 10, 0, 0)
        .unwrap()
        .timestamp_millis()
}

fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

struct Rig {
    store: Store,
    clock: ManualClock,
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = store::testing::fresh_store(dir.path()).await.unwrap();
        let subs: Vec<_> = (0..N)
            .map(|i| store::testing::subscriber(&format!("1370000{i:04}")))
            .collect();
        store
            .insert_subscribers(&subs, OnDuplicate::Fail, at(2026, 2, 1))
            .await
            .unwrap();
        let wf_dir = dir.path().join("workflows");
        std::fs::create_dir_all(&wf_dir).unwrap();
        std::fs::write(wf_dir.join("offer.txt"), "Stay with us, {name}").unwrap();
        std::fs::write(wf_dir.join("keep.yaml"), KEEP).unwrap();
        let (wfs, diags) = spec::load_dir(&wf_dir);
        assert!(diags.is_empty(), "{diags:#?}");
        let clock = ManualClock::new(at(2026, 2, 28));
        let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
        chans.insert("sms".into(), Arc::new(Accept));
        let engine = Engine::new(
            store.clone(),
            clock.clock(),
            chans,
            EngineConfig::new("keep", dir.path().join("no-calendars")),
        )
        .unwrap();
        engine.load(wfs).await.unwrap();
        Rig {
            store,
            clock,
            engine,
            _dir: dir,
        }
    }

    async fn tick_at(&self, t: Millis) {
        self.clock.set(t);
        self.engine.tick().await.unwrap();
        self.engine.dispatch_round("sms").await.unwrap();
        self.engine.tick().await.unwrap();
    }

    /// Starts the slot at `slot` and lets its window close: the run is finished.
    async fn run_slot(&self, slot: Millis) -> i64 {
        self.tick_at(slot + 10_000).await;
        self.tick_at(slot + 2 * DAY + HOUR).await;
        let run = self
            .store
            .runs_of("keep")
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.started_at >= slot)
            .expect("the slot started a run");
        assert!(run.finished_at.is_some(), "run {} finished", run.id);
        run.id
    }

    async fn record(&self, subscriber_id: i64, kind: &str, when: Millis) {
        self.store
            .record_events(&[NewEvent {
                subscriber_id,
                kind: kind.into(),
                at: when,
                value: None,
                detail: None,
                source: EventSource::Import,
                received_at: when,
            }])
            .await
            .unwrap();
    }

    async fn report(&self, run_id: i64) -> evaluate::Report {
        let json = self.store.run_report(run_id).await.unwrap().unwrap();
        serde_json::from_str(&json).unwrap()
    }

    /// (treated, control) members of a run's first wave, by subscriber id.
    async fn arms(&self, run_id: i64) -> (Vec<i64>, Vec<i64>) {
        let w = self.store.wave_runs(run_id).await.unwrap()[0].id;
        let pop = self.store.run_population(w).await.unwrap();
        let (c, t): (Vec<_>, Vec<_>) = pop.into_iter().partition(|(_, arm, _)| arm == "control");
        (
            t.into_iter().map(|p| p.0).collect(),
            c.into_iter().map(|p| p.0).collect(),
        )
    }
}

fn counts(cell: &evaluate::Cell) -> ((u64, u64), (u64, u64)) {
    (
        (cell.treatment.n, cell.treatment.converted),
        (cell.control.n, cell.control.converted),
    )
}

#[tokio::test]
async fn retention_is_provisional_until_the_window_ends_and_rolls_up_by_season() {
    let r = Rig::new().await;
    let t1 = at(2026, 3, 1);
    let t2 = at(2026, 4, 1);
    let t3 = at(2027, 3, 1);

    // Run 1, with one churn inside the window before the run finishes.
    r.tick_at(t1 + 10_000).await;
    let run1 = r.store.runs_of("keep").await.unwrap()[0].id;
    let (treated, control) = r.arms(run1).await;
    let (nt, nc) = (treated.len() as u64, control.len() as u64);
    assert_eq!(nt + nc, N as u64);
    assert!(nt >= 3 && nc >= 2, "the split: {nt} treated, {nc} control");
    let (a, b, e) = (treated[0], treated[1], treated[2]);
    let (c, d) = (control[0], control[1]);
    let started1 = r.store.run(run1).await.unwrap().unwrap().started_at;
    r.clock.set(t1 + DAY);
    r.record(a, "churn", t1 + DAY).await;
    // An event at the run's start is not after it: not lost.
    r.record(d, "churn", started1).await;
    r.tick_at(t1 + 2 * DAY + HOUR).await;

    let rep = r.report(run1).await;
    assert!(rep.retention);
    let end1 = started1 + 30 * DAY;
    assert_eq!(
        rep.provisional_until.as_deref(),
        Some(rfc3339(end1).as_str())
    );
    assert_eq!(counts(&rep.overall), ((nt, nt - 1), (nc, nc)));
    let text = evaluate::render_text(&rep);
    assert!(text.contains("PROVISIONAL until"), "{text}");
    assert!(text.contains("retained"), "{text}");

    // A control churn inside the window and a complaint (not a lost event); the daily
    // rebuild says provisional still, with what is known by then.
    r.clock.set(t1 + 10 * DAY);
    r.record(d, "complaint", t1 + 3 * DAY).await;
    r.record(c, "churn", t1 + 9 * DAY).await;
    r.tick_at(t1 + 10 * DAY).await;
    let rep = r.report(run1).await;
    assert_eq!(
        rep.provisional_until.as_deref(),
        Some(rfc3339(end1).as_str())
    );
    assert_eq!(counts(&rep.overall), ((nt, nt - 1), (nc, nc - 1)));

    // A treated churn at the window's very end (inclusive), recorded just after it: the
    // rebuild after the window counts it and is final.
    r.clock.set(end1 + HOUR);
    r.record(e, "churn", end1).await;
    r.tick_at(end1 + HOUR).await;
    let rep = r.report(run1).await;
    assert_eq!(rep.provisional_until, None, "final after {}", rfc3339(end1));
    assert_eq!(counts(&rep.overall), ((nt, nt - 2), (nc, nc - 1)));
    assert!(!evaluate::render_text(&rep).contains("PROVISIONAL"));

    // Run 2 in the same season: B's port-out falls inside its window; the others' events
    // came before it started.
    let run2 = r.run_slot(t2).await;
    assert_eq!(
        r.arms(run2).await,
        (treated.clone(), control.clone()),
        "the season's control is held, and treatment is drawn alike"
    );
    r.clock.set(t2 + 9 * DAY + 60_000);
    r.record(b, "port_out", t2 + 9 * DAY).await;
    r.tick_at(t2 + 31 * DAY).await;
    let rep2 = r.report(run2).await;
    assert_eq!(rep2.provisional_until, None);
    assert_eq!(counts(&rep2.overall), ((nt, nt - 1), (nc, nc)));

    // Next year's season.
    let run3 = r.run_slot(t3).await;
    let started3 = r.store.run(run3).await.unwrap().unwrap().started_at;
    let now = t3 + 2 * DAY + HOUR;
    let seasons = engine::season_report(&r.store, "keep", now).await.unwrap();
    assert!(seasons.retention);
    let got: Vec<_> = seasons
        .seasons
        .iter()
        .map(|s| {
            (
                s.season.clone(),
                s.runs.clone(),
                counts(&s.overall),
                s.provisional_until.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            // Each member once, judged from run 1's start: A, E and C lost; B's port-out
            // came after run 1's window (a member lost in any run would make it nt - 3; a
            // member retained in any run, nt and nc).
            (
                "season-2026".to_owned(),
                vec![run1, run2],
                ((nt, nt - 2), (nc, nc - 1)),
                None
            ),
            (
                "season-2027".to_owned(),
                vec![run3],
                ((nt, nt), (nc, nc)),
                Some(rfc3339(started3 + 30 * DAY))
            ),
        ]
    );
    let s = &seasons.seasons[0].overall;
    let expected = evaluate::uplift(s.treatment, s.control, 0.95);
    assert_eq!(s.uplift, expected);
    let text = evaluate::render_seasons_text(&seasons);
    assert!(text.contains("PROVISIONAL until"), "{text}");
}
