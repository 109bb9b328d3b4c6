//! `campaignd import` end to end on a database (SQLite, or PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres`): a real export streamed in, a failed import leaving the
//! base exactly as it was, and consent that an update import never clears.

use std::path::{Path, PathBuf};

use campaignd::import::{ImportFailure, import_csv, set_consent};
use store::subscribers::ConsentKind;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn mapping(name: &str) -> subscribers::Mapping {
    let path = repo().join("workflows/imports").join(name);
    subscribers::parse_mapping(
        &catalogue::shipped(),
        name,
        &std::fs::read_to_string(path).unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Every subscriber row and consent record, in a stable order, as text.
async fn dump(store: &store::Store) -> Vec<String> {
    let ids: Vec<i64> = (1..=4000).collect();
    let mut out: Vec<String> = store
        .msisdns_of(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, m)| format!("{id} {m}"))
        .collect();
    out.sort();
    for id in [1, 2, 3, 2666] {
        out.push(format!(
            "{id}: {:?}",
            store.consent_history(id).await.unwrap()
        ));
    }
    out.push(format!("n={}", store.count_subscribers().await.unwrap()));
    out
}

// Guards: import.rs `import_csv` (one transaction, dropped on any failure) and the store's
// `SubscriberImport`; subscribers.rs `insert_chunk` (flags only turn on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bigml_export_imports_atomically_and_consent_survives_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    let map = mapping("churn-bigml.mapping.yaml");
    let csv = repo().join("crates/subscribers/tests/fixtures/churn-bigml-80.csv");
    let outcome = import_csv(&store, &map, &csv, false, "ops", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.rows, 2666);
    assert_eq!(store.count_subscribers().await.unwrap(), 2666);

    // Subscriber 2 opts out by SMS, 3 is put on do-not-disturb at the counter.
    store.set_opt_out(2, 1).await.unwrap();
    set_consent(
        &store,
        "13700000003",
        ConsentKind::Dnd,
        true,
        "alice",
        "asked at the counter",
    )
    .await
    .unwrap();
    let before = dump(&store).await;

    // The same file with a bad cell on its last line: nothing changes, not even the rows
    // written before the bad one was read.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.len() - 1;
    let bad = lines[last].replacen(",False", ",Perhaps", 1);
    lines[last] = &bad;
    let bad_csv = dir.path().join("bad.csv");
    std::fs::write(&bad_csv, lines.join("\n")).unwrap();
    match import_csv(&store, &map, &bad_csv, true, "ops", false)
        .await
        .unwrap()
    {
        Err(ImportFailure::Rows(e)) => {
            assert_eq!(e.total(), 1);
            assert!(e.to_string().contains(":2667:20 (Churn)"), "{e}");
        }
        other => panic!("expected a refused row, got {other:?}"),
    }
    assert_eq!(dump(&store).await, before);

    // Without --update, a number already in the base: refused, masked, nothing changes.
    match import_csv(&store, &map, &csv, false, "ops", false)
        .await
        .unwrap()
    {
        Err(ImportFailure::Store(e)) => {
            assert!(e.contains("137****0001 is already in the base"), "{e}");
            assert!(!e.contains("13700000001"), "{e}");
        }
        other => panic!("expected a refused import, got {other:?}"),
    }
    assert_eq!(dump(&store).await, before);

    // The whole file again with --update: the export says nobody opted out; consent stays.
    let outcome = import_csv(&store, &map, &csv, true, "ops", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (outcome.rows, outcome.opt_outs_added, outcome.dnd_added),
        (2666, 0, 0)
    );
    let history = store.consent_history(2).await.unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].state && history[0].source == "sms_reply");
    assert_eq!(store.consent_disagreements().await.unwrap(), 0);
    assert_eq!(dump(&store).await, before);

    // Only the explicit change clears it, and says so without the full number.
    let said = set_consent(
        &store,
        "+8613700000002",
        ConsentKind::OptOut,
        false,
        "alice",
        "form 17",
    )
    .await
    .unwrap();
    assert_eq!(
        said,
        "137****0002 is now opted in (recorded: cli, by alice)"
    );
    let last = store.consent_history(2).await.unwrap().pop().unwrap();
    assert_eq!(
        (
            last.state,
            last.source.as_str(),
            last.principal.as_str(),
            last.reason.as_deref()
        ),
        (false, "cli", "alice", Some("form 17"))
    );
    assert!(
        set_consent(
            &store,
            "13700000002",
            ConsentKind::OptOut,
            false,
            "alice",
            " "
        )
        .await
        .is_err()
    );
}

// Guards: import.rs `import_csv` looking each chunk's numbers up with the store's
// `SubscriberImport::earlier_lines` (the file's numbers are kept in the transaction, not in
// memory) and `CsvImport::duplicates` reporting them in line order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_across_chunks_names_both_lines_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    let bigml = repo().join("crates/subscribers/tests/fixtures/churn-bigml-80.csv");
    import_csv(
        &store,
        &mapping("churn-bigml.mapping.yaml"),
        &bigml,
        false,
        "ops",
        false,
    )
    .await
    .unwrap()
    .unwrap();
    let before = dump(&store).await;

    // 7,043 records: more than one chunk of the import (5,000).
    let telco = mapping("telco-ibm.mapping.yaml");
    let csv = repo().join("crates/subscribers/tests/fixtures/Telco-Customer-Churn.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines.len() > 6500);
    // Line 5801 (second chunk) takes the customer id of line 11 (first chunk); line 6500
    // gets a bad cell after it, in the same chunk.
    let id_of = |l: &str| l.split(',').next().unwrap().to_owned();
    let (first, second) = (10, 5800);
    let copy = id_of(&lines[first]);
    let rest = lines[second][id_of(&lines[second]).len()..].to_owned();
    lines[second] = format!("{copy}{rest}");
    lines[6499] =
        lines[6499]
            .replacen(",Female,", ",Perhaps,", 1)
            .replacen(",Male,", ",Perhaps,", 1);
    let bad_csv = dir.path().join("telco-dup.csv");
    std::fs::write(&bad_csv, lines.join("\n")).unwrap();
    for update in [false, true] {
        match import_csv(&store, &telco, &bad_csv, update, "ops", false)
            .await
            .unwrap()
        {
            Err(ImportFailure::Rows(e)) => {
                assert_eq!(e.total(), 2, "{e}");
                let shown: Vec<String> = e.errors().iter().map(ToString::to_string).collect();
                assert!(
                    shown[0].contains("telco-dup.csv:5801:1 (customerID): msisdn 139****")
                        && shown[0].contains(&format!(
                            "synthesized from {copy:?} is also synthesized on line 11"
                        )),
                    "{e}"
                );
                assert!(shown[1].contains("telco-dup.csv:6500:2 (gender)"), "{e}");
            }
            other => panic!("expected the duplicate refused, got {other:?}"),
        }
        assert_eq!(dump(&store).await, before, "update: {update}");
    }

    // The file as shipped goes in over both chunks, and again with --update.
    for update in [false, true] {
        let outcome = import_csv(&store, &telco, &csv, update, "ops", false)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome.rows, 7043);
        assert_eq!(store.count_subscribers().await.unwrap(), 2666 + 7043);
    }
}
