//! A purchase-intent survey and the wave it gates, through the engine on a manual clock: the
//! survey goes out by SMS, replies are attributed, the window closes, and the gated wave
//! targets only the value tiers whose P = Σ score / respondents is at least 0.4; the others
//! are left out with `gate:purchase_intent`, and the report shows P per tier.
//! Runs on SQLite, or PostgreSQL with CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use channels::{Accepted, Channel, Outbound, SendError};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::Millis;
use store::inbound::{NewInbound, source};
use store::story::Step;
use store::subscribers::OnDuplicate;

const WF: &str = r#"
campaign: vip
timezone: Asia/Shanghai
purpose: care
audience:
  where: "value_tier in ['diamond', 'gold', 'silver']"
survey:
  group_by: value_tier
  answers:
    - { reply: "1", score: 1.0 }
    - { reply: "2", score: 0.8 }
    - { reply: "3", score: 0.5 }
    - { reply: "4", score: 0.2 }
    - { reply: "5", score: 0 }
waves:
  - id: survey
    channel: sms
    template: survey.txt
    respond_within: 1d
    responses: [{ reply: "1" }, { reply: "2" }, { reply: "3" }, { reply: "4" }, { reply: "5" }]
  - id: offer
    after: survey
    targets: all
    gate: { purchase_intent: { min: 0.4, min_respondents: 3 } }
    channel: sms
    template: offer.txt
    respond_within: 1d
"#;

const HOUR: Millis = 3_600_000;

/// Monday 2026-09-07 10:00 in Shanghai.
fn t0() -> Millis {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
        .unwrap()
        .timestamp_millis()
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

/// The members: (number, 3-month ARPU, replies in the order sent). Diamond (ARPU > 500):
/// 1, 2, 5 → P = 1.8 / 3 = 0.6. Gold (200-500): 4, 5, 3 → 0.7 / 3 ≈ 0.233. Silver (120-200):
/// 4, 3, 3 → 1.2 / 3 = 0.4 exactly (in doubles 1.2 / 3 < 0.4), the first member having
/// answered 5 before changing to 4 (the latest answer counts).
fn members() -> Vec<(String, f64, Vec<&'static str>)> {
    let mut out = Vec::new();
    let tiers: [(f64, [&[&str]; 4]); 3] = [
        (600.0, [&["1"], &["2"], &["5"], &[]]),
        (250.0, [&["4"], &["5"], &["3"], &[]]),
        (150.0, [&["5", "4"], &["3"], &["3"], &[]]),
    ];
    for (t, (arpu, replies)) in tiers.iter().enumerate() {
        for (i, r) in replies.iter().enumerate() {
            out.push((format!("1380000{t}{i:03}"), *arpu, r.to_vec()));
        }
    }
    out
}

#[tokio::test]
async fn a_gated_wave_runs_only_for_the_tiers_whose_purchase_intent_reaches_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    let members = members();
    let subs: Vec<_> = members
        .iter()
        .map(|(m, arpu, _)| store::testing::subscriber(m).with("arpu_3m", *arpu))
        .collect();
    store
        .insert_subscribers(&subs, OnDuplicate::Fail, t0() - 86_400_000)
        .await
        .unwrap();
    let wf_dir = dir.path().join("workflows");
    std::fs::create_dir_all(&wf_dir).unwrap();
    std::fs::write(wf_dir.join("survey.txt"), "{name}: reply 1 to 5").unwrap();
    std::fs::write(wf_dir.join("offer.txt"), "Premium service for {name}").unwrap();
    std::fs::write(wf_dir.join("vip.yaml"), WF).unwrap();
    let wf = spec::load_file(&wf_dir.join("vip.yaml")).unwrap_or_else(|d| panic!("{d:#?}"));
    let clock = ManualClock::new(t0());
    let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    chans.insert("sms".into(), Arc::new(Accept));
    let engine = Engine::new(
        store.clone(),
        clock.clock(),
        chans,
        EngineConfig::new("survey", dir.path().join("no-calendars")),
    )
    .unwrap();
    engine.load(vec![wf.clone()]).await.unwrap();

    let run_id = engine.trigger("vip", "test").await.unwrap();
    assert_eq!(engine.tick().await.unwrap().waves_planned, 1);
    while engine.dispatch_round("sms").await.unwrap().claimed > 0 {}

    // The replies, an hour apart per round so a changed mind is the later answer.
    let mut replies = Vec::new();
    for round in 0..2 {
        for (m, _, said) in &members {
            if let Some(word) = said.get(round) {
                replies.push(NewInbound {
                    source: source::MO,
                    idem_key: None,
                    msisdn: Some(m.clone()),
                    kind: "reply".into(),
                    value: Some((*word).to_owned()),
                    payload: "{}".into(),
                    received_at: t0() + (round as i64 + 1) * HOUR,
                });
            }
        }
    }
    store.insert_inbound(&replies).await.unwrap();
    clock.set(t0() + 3 * HOUR);
    engine.tick().await.unwrap();

    // The survey's window closes; the offer plans.
    let waves = store.wave_runs(run_id).await.unwrap();
    clock.set(waves[0].closes_at.unwrap() + 60_000);
    let mut planned = 0;
    for _ in 0..3 {
        planned += engine.tick().await.unwrap().waves_planned;
    }
    assert_eq!(planned, 1, "the offer planned");
    let waves = store.wave_runs(run_id).await.unwrap();
    let offer = waves.iter().find(|w| w.wave == "offer").unwrap();
    let mut offered: Vec<i64> = store
        .contact_states(offer.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    offered.sort_unstable();
    let mut ids = Vec::new();
    for (m, _, _) in &members {
        ids.push(store.subscriber_by_msisdn(m).await.unwrap().unwrap());
    }
    // Diamond (0..4) and silver (8..12), the non-respondents of their tier too; gold not.
    let mut expected: Vec<i64> = ids[0..4].iter().chain(&ids[8..12]).copied().collect();
    expected.sort_unstable();
    assert_eq!(offered, expected);
    let counts = store.wave_counts(offer.id).await.unwrap();
    assert!(
        counts
            .funnel
            .contains(&(spec::IntentGate::REASON.to_owned(), 4)),
        "{:?}",
        counts.funnel
    );
    // `campaignd why` tells each gold member why.
    for id in &ids[4..8] {
        let story = store.subscriber_story(*id, Some("vip")).await.unwrap();
        assert!(
            story.iter().any(|s| s.wave == "offer"
                && s.step
                    == Step::LeftOut {
                        reason: "gate:purchase_intent".to_owned()
                    }),
            "{story:?}"
        );
    }

    // The report: P per tier with its respondents.
    let run = store.run(run_id).await.unwrap().unwrap();
    let report = engine::build_report(&store, &wf, &run, clock.now(), false)
        .await
        .unwrap();
    let survey = report.survey.as_ref().expect("a survey section");
    assert_eq!(survey.group_by, "value_tier");
    let by: Vec<(&str, u64, i64)> = survey
        .groups
        .iter()
        .map(|g| (g.group.as_str(), g.respondents, g.score_permille_sum))
        .collect();
    assert_eq!(
        by,
        [("diamond", 3, 1800), ("gold", 3, 700), ("silver", 3, 1200)]
    );
    let text = evaluate::render_text(&report);
    assert!(text.contains("SURVEY SCORE P by value_tier"), "{text}");
    assert!(text.contains("0.600"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&evaluate::render_json(&report)).unwrap();
    assert_eq!(json["survey"]["groups"][2]["group"], "silver");
    assert_eq!(json["survey"]["groups"][2]["respondents"], 3);
}
