//! The per-subscriber event log: recorded all or none, read back typed, counted by type and
//! time, pruned by age; business events from the API land in the log and in `inbound` in one
//! transaction. SQLite, or PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use sea_orm::ConnectionTrait as _;
use store::Store;
use store::events::{EventSource, MAX_DETAIL_LEN, NewEvent};
use store::inbound::{NewInbound, count_unprocessed, source};
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;
use tempfile::TempDir;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 86_400_000;

async fn store_with(msisdns: &[&str]) -> Res<(Store, TempDir, Vec<i64>)> {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let rows: Vec<_> = msisdns
        .iter()
        .map(|m| store::testing::subscriber(m))
        .collect();
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, T0)
        .await?;
    let mut ids = Vec::new();
    for m in msisdns {
        ids.push(
            store
                .subscriber_by_msisdn(m)
                .await?
                .ok_or("no subscriber")?,
        );
    }
    Ok((store, dir, ids))
}

fn ev(subscriber_id: i64, kind: &str, at: i64) -> NewEvent {
    NewEvent {
        subscriber_id,
        kind: kind.into(),
        at,
        value: None,
        detail: None,
        source: EventSource::Import,
        received_at: T0 + 100 * DAY,
    }
}

fn business(msisdn: &str, kind: &str, value: Option<&str>, at: i64) -> NewInbound {
    NewInbound {
        source: source::EVENT,
        idem_key: None,
        msisdn: Some(msisdn.into()),
        kind: kind.into(),
        value: value.map(str::to_owned),
        payload: "{}".into(),
        received_at: at,
    }
}

#[tokio::test]
async fn events_are_recorded_read_counted_and_pruned() -> Res {
    let (store, _dir, ids) = store_with(&["13800000001", "13800000002"]).await?;
    let (a, b) = (ids[0], ids[1]);
    let mut topup = ev(a, "topup", T0 + 2 * DAY);
    topup.value = Some(50.5);
    topup.detail = Some("card".into());
    let events = vec![
        ev(a, "bill_query", T0),
        ev(a, "bill_query", T0 + DAY),
        topup.clone(),
        ev(a, "bill_query", T0 + 3 * DAY),
        ev(b, "bill_query", T0 + 3 * DAY),
    ];
    assert_eq!(store.record_events(&events).await?, 5);

    let of_a = store.events_of(a, T0 + DAY).await?;
    assert_eq!(
        of_a.iter()
            .map(|e| (e.kind.as_str(), e.at))
            .collect::<Vec<_>>(),
        [
            ("bill_query", T0 + DAY),
            ("topup", T0 + 2 * DAY),
            ("bill_query", T0 + 3 * DAY)
        ],
        "oldest first, at or after `since`"
    );
    let t = &of_a[1];
    assert_eq!(
        (
            t.subscriber_id,
            t.value,
            t.detail.as_deref(),
            t.source,
            t.received_at
        ),
        (
            a,
            Some(50.5),
            Some("card"),
            EventSource::Import,
            T0 + 100 * DAY
        )
    );

    assert_eq!(store.count_events(a, "bill_query", T0).await?, 3);
    assert_eq!(store.count_events(a, "bill_query", T0 + DAY).await?, 2);
    assert_eq!(store.count_events(a, "topup", T0).await?, 1);
    assert_eq!(store.count_events(a, "order", T0).await?, 0);
    assert_eq!(store.count_events(b, "bill_query", T0).await?, 1);

    assert_eq!(store.prune_events(T0 + 2 * DAY).await?, 2);
    assert_eq!(store.count_events(a, "bill_query", T0).await?, 1);
    assert_eq!(store.events_of(a, 0).await?.len(), 2);
    assert_eq!(store.prune_events(T0 + 2 * DAY).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_batch_larger_than_one_statement_is_recorded_whole() -> Res {
    let (store, _dir, ids) = store_with(&["13800000001"]).await?;
    let events: Vec<NewEvent> = (0..2_500)
        .map(|i| ev(ids[0], "cell_seen", T0 + i))
        .collect();
    assert_eq!(store.record_events(&events).await?, 2_500);
    assert_eq!(store.count_events(ids[0], "cell_seen", 0).await?, 2_500);
    Ok(())
}

#[tokio::test]
async fn a_bad_event_records_nothing() -> Res {
    let (store, _dir, ids) = store_with(&["13800000001"]).await?;
    let good = ev(ids[0], "order", T0);
    let mut long = ev(ids[0], "order", T0);
    long.detail = Some("x".repeat(MAX_DETAIL_LEN + 1));
    let mut nan = ev(ids[0], "topup", T0);
    nan.value = Some(f64::NAN);
    for bad in [
        ev(ids[0], "", T0),
        ev(ids[0], "big order", T0),
        ev(ids[0], "reply", T0),
        long,
        nan,
    ] {
        let batch = vec![good.clone(), bad.clone()];
        assert!(
            store.record_events(&batch).await.is_err(),
            "{bad:?} is refused"
        );
    }
    assert_eq!(store.events_of(ids[0], 0).await?, []);
    let mut fits = ev(ids[0], "order", T0);
    fits.detail = Some("x".repeat(MAX_DETAIL_LEN));
    assert_eq!(store.record_events(&[fits]).await?, 1);
    Ok(())
}

#[tokio::test]
async fn business_events_are_kept_for_known_subscribers_and_stored_for_attribution() -> Res {
    let (store, _dir, ids) = store_with(&["13800000001"]).await?;
    let rows = vec![
        business("13800000001", "topup", Some("50"), T0),
        business("13800000001", "order", Some("campus-bundle"), T0 + 1),
        business("13900000009", "order", None, T0 + 2),
    ];
    let stored = store.record_business_events(&rows, T0 + 10).await?;
    assert_eq!((stored.inbound, stored.recorded), (3, 2));
    assert_eq!(
        count_unprocessed(store.db()).await?,
        3,
        "every event, unknown number too, is left for attribution"
    );
    let events = store.events_of(ids[0], 0).await?;
    assert_eq!(
        events
            .iter()
            .map(|e| (
                e.kind.as_str(),
                e.at,
                e.value,
                e.detail.as_deref(),
                e.source,
                e.received_at
            ))
            .collect::<Vec<_>>(),
        [
            (
                "topup",
                T0,
                Some(50.0),
                Some("50"),
                EventSource::Api,
                T0 + 10
            ),
            (
                "order",
                T0 + 1,
                None,
                Some("campus-bundle"),
                EventSource::Api,
                T0 + 10
            ),
        ]
    );

    // Not a business event: refused, and nothing of the batch is stored.
    let mut dlr = business("13800000001", "delivered", None, T0);
    dlr.source = source::DLR;
    assert!(
        store
            .record_business_events(&[business("13800000001", "order", None, T0), dlr], T0)
            .await
            .is_err()
    );
    assert_eq!(count_unprocessed(store.db()).await?, 3);
    assert_eq!(store.events_of(ids[0], 0).await?.len(), 2);

    // A type the log refuses, found after the inbound rows are written: rolled back whole.
    assert!(
        store
            .record_business_events(&[business("13800000001", "reply", None, T0)], T0)
            .await
            .is_err()
    );
    assert_eq!(count_unprocessed(store.db()).await?, 3);
    assert_eq!(store.events_of(ids[0], 0).await?.len(), 2);
    Ok(())
}

// Guards: events.rs `insert_events` (ON CONFLICT DO NOTHING) and the unique index of
// migration m20261130_000013_event_dedup.
#[tokio::test]
async fn the_same_event_is_stored_once_from_import_or_the_api() -> Res {
    let (store, _dir, ids) = store_with(&["13800000001"]).await?;
    let a = ids[0];
    let mut topup = ev(a, "topup", T0);
    topup.value = Some(50.0);
    topup.detail = Some("card".into());
    let mut zero = ev(a, "topup", T0);
    zero.value = Some(0.0);
    let mut blank = ev(a, "topup", T0);
    blank.detail = Some(String::new());
    // A NULL value and a 0, a NULL detail and an empty one, are different events.
    let events = vec![ev(a, "topup", T0), topup.clone(), zero, blank];
    assert_eq!(store.record_events(&events).await?, 4);
    assert_eq!(store.record_events(&events).await?, 0, "all already there");
    let mut api = topup.clone();
    api.source = EventSource::Api;
    api.received_at += 1;
    let twice = vec![api.clone(), ev(a, "topup", T0 + 1), api];
    assert_eq!(
        store.record_events(&twice).await?,
        1,
        "the source and receipt time do not make another event; a copy in the batch is one"
    );
    assert_eq!(store.events_of(a, 0).await?.len(), 5);

    // The API's business events: the same event posted twice is recorded once, and
    // counted as already there, in the log and for attribution alike.
    let sent = vec![business(
        "13800000001",
        "order",
        Some("campus-bundle"),
        T0 + 5,
    )];
    let first = store.record_business_events(&sent, T0 + 10).await?;
    assert_eq!(
        (
            first.inbound,
            first.inbound_already,
            first.recorded,
            first.already
        ),
        (1, 0, 1, 0)
    );
    let again = store.record_business_events(&sent, T0 + 20).await?;
    assert_eq!(
        (
            again.inbound,
            again.inbound_already,
            again.recorded,
            again.already
        ),
        (0, 1, 0, 1)
    );
    assert_eq!(store.count_events(a, "order", 0).await?, 1);
    assert_eq!(count_unprocessed(store.db()).await?, 1);
    Ok(())
}

// Guards: events.rs `record_business_events` (the event key) and inbound.rs
// `insert_inbound_in` (ON CONFLICT DO NOTHING) with the unique index of migration
// m20261205_000022_event_inbound_once.
#[tokio::test]
async fn a_retried_business_event_adds_no_second_inbound_row() -> Res {
    let (store, _dir, ids) = store_with(&["13800000001"]).await?;
    let batch = vec![
        business("13800000001", "order", Some("campus-bundle"), T0),
        // The same event twice in one batch: one row.
        business("13800000001", "order", Some("campus-bundle"), T0),
        // Differs by time, by value, by a missing value, by type: other events.
        business("13800000001", "order", Some("campus-bundle"), T0 + 1),
        business("13800000001", "order", Some("other"), T0),
        business("13800000001", "order", None, T0),
        business("13800000001", "topup", Some("campus-bundle"), T0),
        // An unknown number: attribution only, stored once as well.
        business("13900000009", "order", None, T0),
    ];
    let first = store.record_business_events(&batch, T0 + 10).await?;
    assert_eq!(
        (
            first.inbound,
            first.inbound_already,
            first.recorded,
            first.already
        ),
        (6, 1, 5, 1)
    );
    let rows = store.unprocessed_inbound(100).await?;
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| {
        r.idem_key
            .as_deref()
            .is_some_and(|k| k.starts_with("event:"))
    }));
    let again = store.record_business_events(&batch, T0 + 20).await?;
    assert_eq!(
        (
            again.inbound,
            again.inbound_already,
            again.recorded,
            again.already
        ),
        (0, 7, 0, 6)
    );
    assert_eq!(count_unprocessed(store.db()).await?, 6);
    assert_eq!(store.events_of(ids[0], 0).await?.len(), 5);

    // Attributed rows count too: a retry after attribution is not a new response.
    let ids_done: Vec<i64> = rows.iter().map(|r| r.id).collect();
    store.mark_inbound_processed(&ids_done).await?;
    let late = store.record_business_events(&batch[..1], T0 + 30).await?;
    assert_eq!((late.inbound, late.inbound_already), (0, 1));
    let n: i64 = store
        .db()
        .query_one_raw(sea_orm::Statement::from_string(
            store.db().get_database_backend(),
            "SELECT COUNT(*) AS n FROM inbound",
        ))
        .await?
        .ok_or("no count")?
        .try_get("", "n")?;
    assert_eq!(n, 6);

    // Delivery reports keep sharing their contact's key: both stored.
    let dlr = |kind: &str| NewInbound {
        source: source::DLR,
        idem_key: Some("k-1".into()),
        msisdn: None,
        kind: kind.into(),
        value: None,
        payload: "{}".into(),
        received_at: T0,
    };
    assert_eq!(
        store
            .insert_inbound(&[dlr("sent"), dlr("delivered"), dlr("delivered")])
            .await?,
        3
    );
    Ok(())
}

/// A database that recorded copies before the unique index: the migration keeps the first
/// copy of each event (lowest id) and deletes the others.
#[tokio::test]
async fn the_dedup_migration_keeps_the_first_copy_of_existing_duplicates() -> Res {
    let (store, _dir, ids) = store_with(&["13800000001", "13800000002"]).await?;
    let (a, b) = (ids[0], ids[1]);
    let db = store.db();
    // Back to the schema before the migration.
    for sql in [
        "DROP INDEX ux_subscriber_event_same",
        "CREATE INDEX ix_subscriber_event_subscriber ON subscriber_event (subscriber_id, type, at)",
        "DELETE FROM seaql_migrations WHERE version = 'm20261130_000013_event_dedup'",
    ] {
        db.execute_unprepared(sql).await?;
    }
    let rows = [
        (a, "topup", T0, "NULL", "NULL", "import"),
        (a, "topup", T0, "NULL", "NULL", "api"),
        (a, "topup", T0, "NULL", "NULL", "import"),
        (a, "topup", T0, "0", "NULL", "import"),
        (a, "topup", T0, "NULL", "''", "import"),
        (a, "topup", T0, "50", "'card'", "api"),
        (a, "topup", T0, "50", "'card'", "import"),
        (b, "topup", T0, "NULL", "NULL", "import"),
    ];
    for (s, kind, at, value, detail, source) in rows {
        db.execute_unprepared(&format!(
            "INSERT INTO subscriber_event (subscriber_id, type, at, value, detail, source, received_at) \
             VALUES ({s}, '{kind}', {at}, {value}, {detail}, '{source}', 0)"
        ))
        .await?;
    }
    store.migrate().await?;
    let kept: Vec<(i64, Option<f64>, Option<String>, EventSource)> = store
        .events_of(a, 0)
        .await?
        .into_iter()
        .map(|e| (e.id, e.value, e.detail, e.source))
        .collect();
    assert_eq!(
        kept,
        vec![
            (1, None, None, EventSource::Import),
            (4, Some(0.0), None, EventSource::Import),
            (5, None, Some(String::new()), EventSource::Import),
            (6, Some(50.0), Some("card".into()), EventSource::Api),
        ]
    );
    assert_eq!(store.events_of(b, 0).await?.len(), 1);
    assert_eq!(store.record_events(&[ev(a, "topup", T0)]).await?, 0);
    Ok(())
}
