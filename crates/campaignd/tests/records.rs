//! `campaignd import-history`, `import-events` and `prune` through the real binary, on
//! SQLite (or PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`): rows of known subscribers
//! stored, unknown subscribers counted and masked, a bad file changing nothing, retention.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use catalogue::Value;
use catalogue::history::Period;
use store::Store;
use store::subscribers::OnDuplicate;
use store::testing::TestDatabase;

const OCT_2026: i64 = 2026 * 12 + 9;

fn run(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_campaignd"))
        .args(args)
        .env("CAMPAIGND_CONFIG", config)
        .env_remove("CAMPAIGND_DATABASE_URL")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A migrated database with subscribers 13900000001..=3 (external ids C-1..C-3), and a
/// config file naming it.
async fn setup(dir: &Path) -> (Store, PathBuf) {
    let db: TestDatabase = store::testing::fresh_database(store::testing::backend().unwrap(), dir)
        .await
        .unwrap();
    let store = db.connect().await.unwrap();
    store.migrate().await.unwrap();
    let rows: Vec<_> = (1..=3)
        .map(|i| {
            let mut s = store::testing::subscriber(&format!("1390000000{i}"));
            s.external_id = Some(format!("C-{i}"));
            s
        })
        .collect();
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, 1)
        .await
        .unwrap();
    let mut toml = format!("database_url = {:?}\n", db.url);
    if let Some(schema) = &db.schema {
        toml.push_str(&format!("database_schema = {schema:?}\n"));
    }
    let config = dir.join("db.toml");
    std::fs::write(&config, toml).unwrap();
    (store, config)
}

async fn id(store: &Store, msisdn: &str) -> i64 {
    store.subscriber_by_msisdn(msisdn).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_imports_known_subscribers_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, config) = setup(dir.path()).await;
    let csv = dir.path().join("h.csv");
    std::fs::write(
        &csv,
        "msisdn,period,arpu,voice_minutes\n13900000001,2026-10,55.5,120\n13900000002,2026-10,10,3\n13877776666,2026-10,1,1\n",
    )
    .unwrap();
    let o = run(&["import-history", csv.to_str().unwrap()], &config);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("imported 2 history rows"), "{out}");
    assert!(
        out.contains("left out 1 record(s) of subscribers not in the base, such as 138****6666"),
        "{out}"
    );
    assert!(!out.contains("13877776666"), "{out}");
    let one = id(&store, "13900000001").await;
    let h = store.history_of(one, Period::Month).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].0, OCT_2026);
    assert_eq!(h[0].1[0], Value::Dec(55.5));

    // More good rows than one chunk (written before the bad row is read), then a bad row:
    // refused, located, and nothing is stored.
    let good: Vec<String> = (0..5_001)
        .map(|p| format!("13900000003,{},5", Period::Month.label(OCT_2026 - p)))
        .collect();
    std::fs::write(
        &csv,
        format!(
            "msisdn,period,arpu\n{}\n13900000001,2026-11,lots\n",
            good.join("\n")
        ),
    )
    .unwrap();
    let o = run(&["import-history", csv.to_str().unwrap()], &config);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("h.csv:5003:3 (arpu): expected a decimal number"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("nothing was imported"), "{}", text(&o));
    let three = id(&store, "13900000003").await;
    assert!(
        store
            .history_of(three, Period::Month)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.newest_period(Period::Month).await.unwrap(),
        Some(OCT_2026)
    );

    // Repeats are found across chunks (the pairs are kept in the import's transaction, not
    // in memory): the first line's pair again after 5,001 rows, and one inside the chunk.
    std::fs::write(
        &csv,
        format!(
            "msisdn,period,arpu\n{}\n13900000003,2026-10,6\n13900000002,2026-09,1\n13900000002,2026-09,2\n",
            good.join("\n")
        ),
    )
    .unwrap();
    let o = run(&["import-history", csv.to_str().unwrap()], &config);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains(
            "h.csv:5003:1 (msisdn): subscriber 139****0003 has period 2026-10 on line 2 too"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "h.csv:5005:1 (msisdn): subscriber 139****0002 has period 2026-09 on line 5004 too"
        ),
        "{out}"
    );
    assert!(out.contains("nothing was imported"), "{out}");
    assert!(
        store
            .history_of(three, Period::Month)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_import_through_a_mapping_and_prune_applies_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (store, config) = setup(dir.path()).await;
    let mapping = dir.path().join("events.mapping.yaml");
    std::fs::write(
        &mapping,
        "fields:\n  external_id: { column: CUST }\n  type: { column: EVENT }\n  time: { column: AT }\n  value: { column: AMOUNT_FEN, scale: 0.01 }\n",
    )
    .unwrap();
    let csv = dir.path().join("e.csv");
    let now = store::wall_now();
    let old = chrono::DateTime::from_timestamp_millis(now - 800 * 86_400_000)
        .unwrap()
        .to_rfc3339();
    std::fs::write(
        &csv,
        format!(
            "CUST,EVENT,AT,AMOUNT_FEN\nC-1,topup,2026-10-01T08:00:00+08:00,5000\nC-1,topup,{old},100\nC-9,order,2026-10-01T00:00:00Z,\n"
        ),
    )
    .unwrap();
    let o = run(
        &[
            "import-events",
            csv.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
        ],
        &config,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("imported 2 events"), "{}", text(&o));
    assert!(
        text(&o).contains("left out 1 record(s)") && text(&o).contains("C-9"),
        "{}",
        text(&o)
    );
    let one = id(&store, "13900000001").await;
    let events = store.events_of(one, 0).await.unwrap();
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .any(|e| e.value == Some(50.0) && e.kind == "topup")
    );

    // The same file again: every event is already in the log, none is stored twice.
    let o = run(
        &[
            "import-events",
            csv.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
        ],
        &config,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("imported 0 events")
            && text(&o).contains("2 events were already present"),
        "{}",
        text(&o)
    );
    assert_eq!(store.events_of(one, 0).await.unwrap(), events);

    // A type campaignd reserves: located, nothing stored.
    std::fs::write(
        &csv,
        "CUST,EVENT,AT,AMOUNT_FEN\nC-2,reply,2026-10-01T00:00:00Z,\n",
    )
    .unwrap();
    let o = run(
        &[
            "import-events",
            csv.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("e.csv:2:2 (EVENT):"), "{}", text(&o));

    // 30 months of history; the shipped catalogue keeps 24 months and 730 days of events.
    let rows: Vec<String> = (0..30)
        .map(|p| format!("13900000002,{},{p}", Period::Month.label(OCT_2026 - p)))
        .collect();
    let h = dir.path().join("h.csv");
    std::fs::write(&h, format!("msisdn,period,sms_sent\n{}\n", rows.join("\n"))).unwrap();
    let o = run(&["import-history", h.to_str().unwrap()], &config);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["prune"], &config);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("pruned 6 monthly and 0 daily history row(s), 1 event(s)"),
        "{}",
        text(&o)
    );
    let two = id(&store, "13900000002").await;
    assert_eq!(
        store.history_of(two, Period::Month).await.unwrap().len(),
        24
    );
    assert_eq!(store.events_of(one, 0).await.unwrap().len(), 1);
}
