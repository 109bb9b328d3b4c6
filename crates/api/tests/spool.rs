//! The callback spool on its own: what goes in comes out once, whatever the crash. (The
//! spool under a real PostgreSQL outage, through the HTTP callbacks: tests/e2e/db_outage.rs.)

use api::spool::{Replayed, Spool};
use sea_orm::{ConnectionTrait, Statement};
use store::inbound::{NewInbound, source};
use store::testing::RawDb as _;

fn dlr(n: usize) -> NewInbound {
    NewInbound {
        source: source::DLR,
        idem_key: Some(format!("r1-sms-s{n}-k")),
        msisdn: Some(format!("1380013{n:04}")),
        kind: "1".into(),
        value: Some("ACK/".into()),
        payload: format!("{{\"n\":{n}}}"),
        received_at: 1_000 + n as i64,
    }
}

fn mo(n: usize) -> NewInbound {
    NewInbound {
        source: source::MO,
        idem_key: None,
        msisdn: Some(format!("1390013{n:04}")),
        kind: "reply".into(),
        value: Some(format!("是 {n}")),
        payload: "{}".into(),
        received_at: 2_000 + n as i64,
    }
}

async fn inbound(store: &store::Store) -> Vec<(String, Option<String>, Option<String>, i64)> {
    let rows = store
        .db()
        .query_all_raw(Statement::from_string(
            store.db().get_database_backend(),
            "SELECT source, idem_key, value, received_at FROM inbound ORDER BY id",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get("", "source").unwrap(),
                r.try_get("", "idem_key").unwrap(),
                r.try_get("", "value").unwrap(),
                r.try_get("", "received_at").unwrap(),
            )
        })
        .collect()
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn spooled_callbacks_are_stored_once_in_order_and_the_files_go() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    assert!(spool.is_clear(), "an empty spool owes nothing");
    spool.append(vec![dlr(1)]).await.unwrap();
    spool.append(vec![mo(2), dlr(3)]).await.unwrap();
    assert_eq!(spool.pending(), 3);
    assert!(!spool.is_clear(), "spooled rows are owed to the database");

    let r = spool.replay(&store, 5_000).await.unwrap();
    assert!(spool.is_clear(), "all stored");
    assert_eq!(
        r,
        Replayed {
            batches: 1,
            rows: 3,
            skipped: 0
        }
    );
    let got = inbound(&store).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[1].0, "mo");
    assert_eq!(got[1].2.as_deref(), Some("是 2"));
    assert_eq!(got[2].1.as_deref(), Some("r1-sms-s3-k"));
    assert_eq!(spool.pending(), 0);
    assert!(files(spool.dir()).is_empty(), "{:?}", files(spool.dir()));

    // Nothing new: a replay stores nothing more.
    assert_eq!(
        spool.replay(&store, 6_000).await.unwrap(),
        Replayed::default()
    );
    assert_eq!(inbound(&store).await.len(), 3);
}

#[tokio::test]
async fn a_replay_killed_after_its_commit_does_not_store_the_file_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    let spool_dir = dir.path().join("spool");
    let spool = Spool::open(&spool_dir).unwrap();
    spool.append(vec![dlr(1), dlr(2)]).await.unwrap();
    drop(spool);
    // The next life closes what the last was writing into a batch file ...
    let spool = Spool::open(&spool_dir).unwrap();
    assert!(!spool.is_clear(), "a last life's batch is owed");
    let batch = files(&spool_dir).pop().expect("a batch file");
    assert!(batch.starts_with("batch-"), "{batch}");
    // ... whose rows a replay committed before it died, the file still there.
    assert!(
        store
            .replay_spooled(&batch, &[dlr(1), dlr(2)], 5_000)
            .await
            .unwrap()
    );
    let r = spool.replay(&store, 6_000).await.unwrap();
    assert_eq!(r.skipped, 1, "{r:?}");
    assert!(spool.is_clear());
    assert_eq!(r.rows, 0);
    assert_eq!(inbound(&store).await.len(), 2, "stored once");
    assert!(files(&spool_dir).is_empty());
}

#[tokio::test]
async fn a_torn_last_line_is_dropped_and_a_bad_file_set_aside_without_stopping_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    let spool_dir = dir.path().join("spool");
    let spool = Spool::open(&spool_dir).unwrap();
    spool.append(vec![dlr(1)]).await.unwrap();
    // A crash mid-write: half a line, no newline, never fsynced nor acknowledged.
    let current = spool_dir.join("current.jsonl");
    let mut text = std::fs::read_to_string(&current).unwrap();
    text.push_str("{\"source\":\"dlr\",\"idem_");
    std::fs::write(&current, text).unwrap();
    drop(spool);
    // A file someone edited by hand: a line in the middle is not a callback.
    std::fs::write(
        spool_dir.join("batch-000000000000000000000001-0000000000000000.jsonl"),
        "{\"nonsense\":1}\n{\"also\":2}\n",
    )
    .unwrap();

    let spool = Spool::open(&spool_dir).unwrap();
    spool.append(vec![mo(2)]).await.unwrap();
    let r = spool.replay(&store, 5_000).await.unwrap();
    assert_eq!(r.rows, 2, "{r:?}");
    let got = inbound(&store).await;
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["dlr", "mo"]
    );
    let left = files(&spool_dir);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("bad-batch-"), "{left:?}");
}
