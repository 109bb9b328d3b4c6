//! Experiment arms: a wave with `variants` sends each treatment subscriber the message of
//! the variant the planner drew for them, and the report has one row per variant against
//! the run's one control. Runs on SQLite, or PostgreSQL with CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use channels::{Accepted, Channel, Outbound, SendError};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::events::{EventSource, NewEvent};
use store::subscribers::OnDuplicate;
use store::{Millis, Store};

const N: usize = 40;
const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

const TRIAL: &str = r#"
campaign: trial
timezone: Asia/Shanghai
schedule:
  cron: "0 0 10 1 * *"
audience:
  where: "student_stage == 'freshman'"
control: { share: 0.25 }
waves:
  - id: sms
    channel: sms
    variants:
      - { name: plain, template: plain.txt, weight: 1 }
      - { name: bonus, template: bonus.txt, weight: 1 }
    respond_within: 2d
evaluate:
  goal: { retained: 30d }
"#;

/// Accepts everything and keeps what it was asked to send.
#[derive(Default)]
struct Keep(Mutex<Vec<(i64, String)>>);

#[async_trait]
impl Channel for Keep {
    fn kind(&self) -> &'static str {
        "sms"
    }

    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let mut sent = self.0.lock().unwrap();
        batch
            .iter()
            .map(|m| {
                sent.push((m.subscriber_id, m.text.clone()));
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

async fn tick_at(clock: &ManualClock, engine: &Engine, t: Millis) {
    clock.set(t);
    engine.tick().await.unwrap();
    engine.dispatch_round("sms").await.unwrap();
    engine.tick().await.unwrap();
}

#[tokio::test]
async fn each_subscriber_gets_their_variant_and_the_report_has_a_row_per_variant() {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = store::testing::fresh_store(dir.path()).await.unwrap();
    let subs: Vec<_> = (0..N)
        .map(|i| store::testing::subscriber(&format!("1370000{i:04}")))
        .collect();
    store
        .insert_subscribers(&subs, OnDuplicate::Fail, at(2026, 2, 1))
        .await
        .unwrap();
    let wf_dir = dir.path().join("workflows");
    std::fs::create_dir_all(&wf_dir).unwrap();
    std::fs::write(wf_dir.join("plain.txt"), "Plain offer, {name}").unwrap();
    std::fs::write(wf_dir.join("bonus.txt"), "Bonus offer, {name}").unwrap();
    std::fs::write(wf_dir.join("trial.yaml"), TRIAL).unwrap();
    let (wfs, diags) = spec::load_dir(&wf_dir);
    assert!(diags.is_empty(), "{diags:#?}");
    let clock = ManualClock::new(at(2026, 2, 28));
    let keep = Arc::new(Keep::default());
    let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    chans.insert("sms".into(), keep.clone());
    let engine = Engine::new(
        store.clone(),
        clock.clock(),
        chans,
        EngineConfig::new("trial", dir.path().join("no-calendars")),
    )
    .unwrap();
    engine.load(wfs).await.unwrap();

    let t1 = at(2026, 3, 1);
    tick_at(&clock, &engine, t1 + 10_000).await;
    let run = store.runs_of("trial").await.unwrap()[0].id;
    let wave = store.wave_runs(run).await.unwrap()[0].id;
    let drawn: HashMap<i64, String> = store
        .variant_contacts(wave)
        .await
        .unwrap()
        .into_iter()
        .map(|(sub, v, _)| (sub, v))
        .collect();
    let pop = store.run_population(wave).await.unwrap();
    let treated: Vec<i64> = pop
        .iter()
        .filter(|(_, arm, _)| arm != "control")
        .map(|p| p.0)
        .collect();
    let control = pop.len() - treated.len();
    assert_eq!(control, N / 4, "the control is drawn as without variants");
    // Every treated subscriber has a variant; no control member has one.
    let mut with_variant: Vec<i64> = drawn.keys().copied().collect();
    with_variant.sort_unstable();
    let mut t_sorted = treated.clone();
    t_sorted.sort_unstable();
    assert_eq!(with_variant, t_sorted);
    let plain: Vec<i64> = t_sorted
        .iter()
        .copied()
        .filter(|s| drawn[s] == "plain")
        .collect();
    let bonus = treated.len() - plain.len();
    assert!(
        !plain.is_empty() && bonus > 0,
        "{} plain, {bonus} bonus",
        plain.len()
    );

    // Each message is its subscriber's variant's text, once.
    let mut sent = keep.0.lock().unwrap().clone();
    sent.sort();
    let want: Vec<(i64, String)> = t_sorted
        .iter()
        .map(|s| {
            let text = if drawn[s] == "plain" {
                "Plain offer, Test"
            } else {
                "Bonus offer, Test"
            };
            (*s, text.to_owned())
        })
        .collect();
    assert_eq!(sent, want);

    // A subscriber's story names the variant they were drawn into; a control member's none.
    let variant_of = |story: Vec<store::story::StoryStep>| {
        story.into_iter().find_map(|s| match s.step {
            store::story::Step::Contact { variant, .. } => Some(variant),
            _ => None,
        })
    };
    for s in [
        plain[0],
        *t_sorted.iter().find(|s| drawn[*s] == "bonus").unwrap(),
    ] {
        let story = store.subscriber_story(s, Some("trial")).await.unwrap();
        assert_eq!(
            variant_of(story),
            Some(Some(drawn[&s].clone())),
            "subscriber {s}"
        );
    }
    let held = pop.iter().find(|(_, arm, _)| arm == "control").unwrap().0;
    let story = store.subscriber_story(held, Some("trial")).await.unwrap();
    assert_eq!(
        variant_of(story),
        Some(None),
        "a control member has no variant"
    );

    // One plain subscriber churns: only the plain row loses a retained member.
    clock.set(t1 + DAY);
    store
        .record_events(&[NewEvent {
            subscriber_id: plain[0],
            kind: "churn".into(),
            at: t1 + DAY,
            value: None,
            detail: None,
            source: EventSource::Import,
            received_at: t1 + DAY,
        }])
        .await
        .unwrap();
    tick_at(&clock, &engine, t1 + 2 * DAY + HOUR).await;
    let json = store
        .run_report(run)
        .await
        .unwrap()
        .expect("the run's report");
    let rep: evaluate::Report = serde_json::from_str(&json).unwrap();
    let rows: Vec<(&str, &str, u64, u64, u64, u64)> = rep
        .variants
        .iter()
        .map(|v| {
            (
                v.wave.as_str(),
                v.variant.as_str(),
                v.outcome.treatment.n,
                v.outcome.treatment.converted,
                v.outcome.control.n,
                v.outcome.control.converted,
            )
        })
        .collect();
    let (np, nb, nc) = (plain.len() as u64, bonus as u64, control as u64);
    assert_eq!(
        rows,
        [
            ("sms", "plain", np, np - 1, nc, nc),
            ("sms", "bonus", nb, nb, nc, nc),
        ]
    );
    assert_eq!(rep.variants[0].outcome.label, "plain");
    let text = evaluate::render_text(&rep);
    assert!(
        text.contains("VARIANTS of sms vs the shared CONTROL"),
        "{text}"
    );
    // Each variant by name, then the shared control once, after the variants.
    let section = &text[text.find("VARIANTS of").unwrap()..];
    let names: Vec<&str> = section
        .lines()
        .skip(3)
        .filter_map(|l| l.split_whitespace().next())
        .take(3)
        .collect();
    assert_eq!(names, ["plain", "bonus", "control"], "{section}");
    let control_row = format!("control {nc} {nc} 100.00%");
    assert!(
        section
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == control_row),
        "{section}"
    );
    assert!(json.contains("\"variants\""), "{json}");
}
