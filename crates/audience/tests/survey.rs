//! The survey gate's decision (store `survey_scores`, then `spec::IntentGate::passes`)
//! against a reference computed here from the same rows: each respondent's latest answer in
//! the run's gated-on waves, treatment only, summed per group, and a group passing when
//! Σ (score − min) ≥ 0 with enough respondents. Property test, seeded as every one is
//! (`testkit`); runs on SQLite, or PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sea_orm::ConnectionTrait;
use store::Store;
use store::runs::NewRun;
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;

/// The groups: the shipped catalogue's brands.
const GROUPS: [&str; 3] = ["gotone", "mzone", "easyown"];
const SUBSCRIBERS: usize = 12;
/// The survey's answers, then responses that are no answer.
const KINDS: [(&str, &str, i64); 10] = [
    ("reply", "1", 1000),
    ("reply", "2", 800),
    ("reply", "3", 500),
    ("reply", "4", 200),
    ("reply", "5", 0),
    ("outcome", "certainly_buy", 1000),
    ("outcome", "probably_not", 200),
    ("reply", "9", -1),
    ("outcome", "unreachable", -1),
    ("order", "vip-premium", -1),
];
const ANSWERS: usize = 7;
/// The run's waves: the gate reads `ask` and `call`, not `other`.
const WAVES: [&str; 3] = ["ask", "call", "other"];

#[derive(Debug, Clone)]
struct Resp {
    subscriber: usize,
    wave: usize,
    kind: usize,
    control: bool,
    other_run: bool,
}

fn arb_resp() -> impl Strategy<Value = Resp> {
    (
        0..SUBSCRIBERS,
        0..WAVES.len(),
        0..KINDS.len(),
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(subscriber, wave, kind, control, other_run)| Resp {
            subscriber,
            wave,
            kind,
            control,
            other_run,
        })
}

struct World {
    store: Store,
    subscribers: Vec<i64>,
    /// (run, wave index) → wave run id.
    wave_runs: BTreeMap<(i64, usize), i64>,
    runs: [i64; 2],
}

async fn world(dir: &std::path::Path) -> World {
    let store = store::testing::fresh_store(dir).await.unwrap();
    let rows: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")))
        .collect();
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, 0)
        .await
        .unwrap();
    let mut subscribers = Vec::new();
    for r in &rows {
        subscribers.push(
            store
                .subscriber_by_msisdn(&r.msisdn)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let version = store.upsert_version("vip", "h", "{}", 0).await.unwrap();
    let waves: Vec<(String, String)> = WAVES
        .iter()
        .map(|w| ((*w).to_owned(), "sms".to_owned()))
        .collect();
    let mut wave_runs = BTreeMap::new();
    let mut runs = [0; 2];
    for (n, run) in runs.iter_mut().enumerate() {
        *run = store
            .start_run(NewRun {
                campaign: "vip",
                version_id: version,
                slot_at: Some(n as i64),
                trigger: "test",
                waves: &waves,
                now: 0,
            })
            .await
            .unwrap()
            .unwrap();
        for w in store.wave_runs(*run).await.unwrap() {
            let i = WAVES.iter().position(|x| *x == w.wave).unwrap();
            wave_runs.insert((*run, i), w.id);
        }
    }
    World {
        store,
        subscribers,
        wave_runs,
        runs,
    }
}

async fn exec(store: &Store, sql: &str, values: Vec<sea_orm::Value>) {
    store
        .db()
        .execute_raw(store::stmt(store.db(), sql, values))
        .await
        .unwrap();
}

async fn check(
    w: &World,
    groups: &[usize],
    responses: &[Resp],
    min: u32,
    min_respondents: u32,
) -> Result<(), TestCaseError> {
    let s = &w.store;
    exec(s, "DELETE FROM response", vec![]).await;
    for (i, g) in groups.iter().enumerate() {
        exec(
            s,
            "UPDATE subscriber SET brand = ? WHERE id = ?",
            vec![GROUPS[*g].into(), w.subscribers[i].into()],
        )
        .await;
    }
    // Inserted in order, so a later response has a higher id: the latest answer.
    for r in responses {
        let run = w.runs[usize::from(r.other_run)];
        let (kind, value, _) = KINDS[r.kind];
        exec(
            s,
            "INSERT INTO response (contact_id, run_id, wave_run_id, subscriber_id, arm, kind, value, at) \
             VALUES (0, ?, ?, ?, ?, ?, ?, 0)",
            vec![
                run.into(),
                w.wave_runs[&(run, r.wave)].into(),
                w.subscribers[r.subscriber].into(),
                if r.control { "control" } else { "treatment" }.into(),
                kind.into(),
                value.into(),
            ],
        )
        .await;
    }

    // The reference: each subscriber's latest answer, summed per group.
    let mut latest: BTreeMap<usize, i64> = BTreeMap::new();
    for r in responses {
        let counts = !r.other_run && !r.control && r.wave < 2 && r.kind < ANSWERS;
        if counts {
            latest.insert(r.subscriber, KINDS[r.kind].2);
        }
    }
    let mut expected: BTreeMap<String, (u64, Vec<i64>)> = BTreeMap::new();
    for (sub, score) in &latest {
        let e = expected.entry(GROUPS[groups[*sub]].to_owned()).or_default();
        e.0 += 1;
        e.1.push(*score);
    }

    let gate = spec::IntentGate {
        min,
        min_respondents,
        from_waves: vec!["ask".into(), "call".into()],
    };
    let answers: Vec<(&str, &str, i64)> = KINDS[..ANSWERS].to_vec();
    let reader = s.plan_reader();
    let cat = spec::catalogue::shipped();
    let fields = reader.field_sql(&cat, 0).await.unwrap();
    let got = reader
        .survey_scores(
            store::survey::SurveyQuery {
                run_id: w.runs[0],
                waves: &gate.from_waves,
                answers: &answers,
            },
            fields.field("brand"),
        )
        .await
        .unwrap();
    let got: BTreeMap<String, (u64, i64)> = got
        .into_iter()
        .map(|g| (g.group.unwrap(), (g.respondents, g.score_sum)))
        .collect();
    let want: BTreeMap<String, (u64, i64)> = expected
        .iter()
        .map(|(g, (n, scores))| (g.clone(), (*n, scores.iter().sum())))
        .collect();
    prop_assert_eq!(&got, &want);
    for (group, (n, scores)) in &expected {
        // P ≥ min ⇔ Σ (score − min) ≥ 0: no division, no product with the count.
        let reference = *n >= u64::from(min_respondents)
            && scores.iter().map(|x| x - i64::from(min)).sum::<i64>() >= 0;
        let (gn, gsum) = got[group];
        prop_assert_eq!(
            gate.passes(gsum, gn),
            reference,
            "group {} scores {:?} min {} min_respondents {}",
            group,
            scores,
            min,
            min_respondents
        );
    }
    Ok(())
}

/// What `proptest!` expands to, written out so that all cases share one database.
#[test]
fn the_gate_decision_matches_a_reference_computation() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = runtime.block_on(world(dir.path()));
    let mut config = proptest::test_runner::contextualize_config(testkit::proptest_config(64));
    config.test_name = Some(concat!(
        module_path!(),
        "::the_gate_decision_matches_a_reference_computation"
    ));
    config.source_file = Some(file!());
    let mut runner = proptest::test_runner::TestRunner::new(config);
    // Thresholds near the scores' means are where rounding would bite: 0.4 among them.
    let min = prop_oneof![Just(400_u32), Just(500), Just(200), 0_u32..=1000];
    let result = runner.run(
        &(
            proptest::collection::vec(0..GROUPS.len(), SUBSCRIBERS),
            proptest::collection::vec(arb_resp(), 0..40),
            min,
            1_u32..=4,
        ),
        |(groups, responses, min, min_respondents)| {
            runtime.block_on(check(&w, &groups, &responses, min, min_respondents))
        },
    );
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
}
