//! Derived attributes computed in SQL: the shipped catalogue's tiers, history windows, event
//! counts and need groups give the values worked out by hand here, through both doors that
//! use them (a planner filter and the values a template shows). SQLite, or PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres`.

use std::collections::HashMap;

use catalogue::Period;
use sea_orm::ConnectionTrait as _;
use sea_orm::sea_query::{Condition, ExprTrait as _};
use store::Store;
use store::events::{EventSource, NewEvent};
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;
use tempfile::TempDir;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

// 2026-11-29T11:00:00Z
const NOW: i64 = 1_795_950_000_000;
const DAY: i64 = 86_400_000;

async fn store_with(
    rows: Vec<store::subscribers::NewSubscriber>,
) -> Res<(Store, TempDir, Vec<i64>)> {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let msisdns: Vec<String> = rows.iter().map(|r| r.msisdn.clone()).collect();
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, NOW)
        .await?;
    let mut ids = Vec::new();
    for m in &msisdns {
        ids.push(
            store
                .subscriber_by_msisdn(m)
                .await?
                .ok_or("no subscriber")?,
        );
    }
    Ok((store, dir, ids))
}

fn sub(msisdn: &str, arpu_3m: f64) -> store::subscribers::NewSubscriber {
    store::testing::subscriber(msisdn).with("arpu_3m", arpu_3m)
}

/// One month of `arpu` (and `data_mb`) for a subscriber.
async fn month(store: &Store, id: i64, label: &str, arpu: Option<f64>, extra: &str) -> Res {
    let period = Period::Month.parse_label(label).ok_or("label")?;
    let arpu = arpu.map_or("NULL".to_owned(), |a| a.to_string());
    let (cols, vals) = match extra.split_once('=') {
        Some((c, v)) => (format!(", {c}"), format!(", {v}")),
        None => (String::new(), String::new()),
    };
    store
        .db()
        .execute_unprepared(&format!(
            "INSERT INTO usage_month (subscriber_id, period, arpu{cols}) VALUES ({id}, {period}, {arpu}{vals})"
        ))
        .await?;
    Ok(())
}

fn ev(subscriber_id: i64, kind: &str, at: i64) -> NewEvent {
    NewEvent {
        subscriber_id,
        kind: kind.into(),
        at,
        value: None,
        detail: None,
        source: EventSource::Import,
        received_at: NOW,
    }
}

async fn values(store: &Store, ids: &[i64], names: &[&str]) -> Res<HashMap<i64, Vec<String>>> {
    Ok(store
        .derived_values(&catalogue::shipped(), ids, names, NOW)
        .await?)
}

#[tokio::test]
async fn value_tier_follows_the_arpu_thresholds() -> Res {
    let arpus = [500.01, 500.0, 200.0, 199.99, 120.0, 119.99];
    let rows = arpus
        .iter()
        .enumerate()
        .map(|(i, a)| sub(&format!("1390000000{i}"), *a))
        .collect();
    let (store, _dir, ids) = store_with(rows).await?;
    let got = values(&store, &ids, &["value_tier"]).await?;
    let tiers: Vec<&str> = ids.iter().map(|id| got[id][0].as_str()).collect();
    assert_eq!(
        tiers,
        ["diamond", "gold", "gold", "silver", "silver", "ordinary"]
    );

    // The planner's filter selects with the same expression.
    let cat = catalogue::shipped();
    let reader = store.plan_reader();
    let fields = reader.field_sql(&cat, NOW).await?;
    let gold_or_better = Condition::all().add(
        fields
            .field("value_tier")
            .is_in(["diamond".to_owned(), "gold".to_owned()]),
    );
    let mut picked = reader.subscriber_ids(gold_or_better).await?;
    picked.sort();
    assert_eq!(picked, ids[..3]);
    Ok(())
}

#[tokio::test]
async fn history_windows_count_back_from_the_newest_month_loaded() -> Res {
    let rows = ["13900000001", "13900000002", "13900000003", "13900000004"]
        .iter()
        .map(|m| sub(m, 100.0))
        .collect();
    let (store, _dir, ids) = store_with(rows).await?;
    let [down, gap, zero, none] = [ids[0], ids[1], ids[2], ids[3]];
    // down: 100, 100, 100 then 70 in October, the newest month loaded.
    for m in ["2026-07", "2026-08", "2026-09"] {
        month(&store, down, m, Some(100.0), "data_mb=3000").await?;
    }
    month(&store, down, "2026-10", Some(70.0), "data_mb=1000").await?;
    // An older month outside every window must not count.
    month(&store, down, "2026-06", Some(10_000.0), "").await?;
    // gap: no October row, so "last month" is empty.
    for m in ["2026-07", "2026-08", "2026-09"] {
        month(&store, gap, m, Some(50.0), "").await?;
    }
    // zero: the three months before were 0: a zero divisor gives no value, not an error.
    for m in ["2026-07", "2026-08", "2026-09"] {
        month(&store, zero, m, Some(0.0), "").await?;
    }
    month(&store, zero, "2026-10", Some(30.0), "").await?;

    let got = values(
        &store,
        &ids,
        &["arpu_change", "data_change", "data_need", "churn_signals"],
    )
    .await?;
    assert_eq!(got[&down], ["-0.30", "-0.67", "true", "2"]);
    assert_eq!(got[&gap], ["", "", "false", "0"]);
    assert_eq!(got[&zero], ["", "", "false", "0"]);
    assert_eq!(got[&none], ["", "", "false", "0"]);

    // As a filter: spending down 30% or more.
    let cat = catalogue::shipped();
    let reader = store.plan_reader();
    let fields = reader.field_sql(&cat, NOW).await?;
    let falling = Condition::all().add(
        fields
            .field("arpu_change")
            .lte(sea_orm::sea_query::Expr::val(-0.3_f64).cast_as("DOUBLE PRECISION")),
    );
    assert_eq!(reader.subscriber_ids(falling).await?, [down]);
    Ok(())
}

#[tokio::test]
async fn event_counts_use_their_window_and_need_groups_add_up() -> Res {
    let rows = ["13900000001", "13900000002"]
        .iter()
        .map(|m| sub(m, 300.0))
        .collect();
    let (store, _dir, ids) = store_with(rows).await?;
    let (a, b) = (ids[0], ids[1]);
    store
        .record_events(&[
            ev(a, "bill_query", NOW - 29 * DAY),
            ev(a, "bill_query", NOW - DAY),
            ev(a, "bill_query", NOW - 31 * DAY),
            // After `now`: not counted (an evaluation never sees the future).
            ev(a, "bill_query", NOW + DAY),
            ev(a, "complaint", NOW - 80 * DAY),
            ev(b, "complaint", NOW - 91 * DAY),
        ])
        .await?;
    // a: 5 bill queries over three months plus 1 complaint in 90 days = 6: price sensitive.
    month(&store, a, "2026-10", Some(300.0), "bill_queries=5").await?;
    month(&store, b, "2026-10", Some(300.0), "bill_queries=4").await?;
    let got = values(
        &store,
        &ids,
        &[
            "bill_queries_30d",
            "complaints_90d",
            "price_sensitive",
            "vip_service",
        ],
    )
    .await?;
    assert_eq!(got[&a], ["2", "1", "true", "true"]);
    assert_eq!(got[&b], ["0", "0", "false", "true"]);
    Ok(())
}

fn attr(name: &str) -> catalogue::Attribute {
    serde_json::from_value(serde_json::json!({ "name": name, "type": "decimal" }))
        .expect("a decimal attribute")
}

/// A derived attribute of three windows of one table (two measures, overlapping windows) is
/// read by one merged subquery, and a negation: the values worked out by hand, the empty
/// window's NULL included.
#[tokio::test]
async fn merged_windows_and_negation_give_the_hand_worked_values() -> Res {
    let cat = (*catalogue::shipped()).clone().with_derived(vec![
        (attr("neg_arpu"), "-arpu_3m".into()),
        (
            attr("mixed"),
            "coalesce(sum(arpu, months: 2), 0) - min(data_mb, months: 3, skip: 1) \
             + coalesce(max(arpu, months: 1, skip: 3), -1)"
                .into(),
        ),
    ])?;
    let (store, _dir, ids) =
        store_with(vec![sub("13900000001", 100.0), sub("13900000002", 7.5)]).await?;
    let [full, sparse] = [ids[0], ids[1]];
    for (m, arpu, data) in [
        ("2026-07", 10.0, "data_mb=1000"),
        ("2026-08", 20.0, "data_mb=2000"),
        ("2026-09", 30.0, "data_mb=3000"),
        ("2026-10", 40.0, ""),
    ] {
        month(&store, full, m, Some(arpu), data).await?;
    }
    // Older than every window: counts in none.
    month(&store, full, "2026-06", Some(1e6), "data_mb=1").await?;
    month(&store, sparse, "2026-10", Some(5.0), "").await?;
    let got = store
        .derived_values(&cat, &ids, &["neg_arpu", "mixed"], NOW)
        .await?;
    // full: (30 + 40) - min(1000, 2000, 3000) + max(10) = -920.
    assert_eq!(got[&full], ["-100.00", "-920.00"]);
    // sparse: no data_mb in its window, so the difference is NULL.
    assert_eq!(got[&sparse], ["-7.50", ""]);
    Ok(())
}
