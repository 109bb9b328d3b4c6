//! The catalogue's columns: `apply_catalogue` adds what is declared and refuses what it
//! cannot do without changing anything; rows carry declared attributes both ways; the
//! migration that handed the shipped columns to the catalogue keeps every row.

use std::sync::Arc;

use catalogue::{Attribute, Catalogue, Kind, Value};
use sea_orm::ConnectionTrait;
use sea_orm_migration::MigratorTrait;
use store::subscribers::{NewSubscriber, OnDuplicate};
use store::testing::RawDb as _;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn attr(name: &str, kind: Kind, indexed: bool) -> Attribute {
    Attribute {
        name: name.into(),
        kind,
        unit: None,
        description: String::new(),
        indexed,
        required: false,
        core: false,
        min: None,
        max: None,
        format: None,
        agents: false,
    }
}

/// The shipped catalogue plus `extra`.
fn extended(extra: Vec<Attribute>) -> Arc<Catalogue> {
    let mut all: Vec<Attribute> = catalogue::shipped().declared().cloned().collect();
    all.extend(extra);
    Arc::new(Catalogue::new(all).expect("valid catalogue"))
}

#[tokio::test]
async fn a_declared_attribute_becomes_a_column_rows_carry() -> Res {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let cat = extended(vec![
        attr("data_gb_month", Kind::Decimal, true),
        attr(
            "plan",
            Kind::Enum {
                values: vec!["a".into(), "b".into()],
            },
            false,
        ),
        attr("roaming_days", Kind::Integer, false),
        attr("prepaid", Kind::Bool, false),
        attr("last_recharge", Kind::Date, false),
    ]);
    // Not there yet: the store says what to run.
    let err = store
        .use_catalogue(cat.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "no column for attribute(s) data_gb_month, plan, roaming_days, prepaid, last_recharge"
        ) && err.contains("campaignd migrate"),
        "{err}"
    );
    let report = store.apply_catalogue(cat.clone()).await?;
    assert_eq!(
        report.added,
        [
            "data_gb_month",
            "plan",
            "roaming_days",
            "prepaid",
            "last_recharge"
        ]
    );
    assert_eq!(report.indexed, ["data_gb_month"]);
    // The first migration's column for the value tier, which the catalogue now derives.
    assert_eq!(report.unused, ["value_tier"], "{report:?}");
    // Applying again changes nothing.
    let again = store.apply_catalogue(cat.clone()).await?;
    assert!(
        again.added.is_empty() && again.indexed.is_empty(),
        "{again:?}"
    );

    let mut rows = Vec::new();
    for i in 0..3_i64 {
        let mut s = NewSubscriber::new(format!("1380000000{i}"), cat.clone());
        for a in catalogue::shipped().declared() {
            let base = store::testing::subscriber("1");
            s.set(&a.name, base.get(&a.name).unwrap());
        }
        s.set("data_gb_month", 2.5 * i as f64);
        s.set("plan", if i == 0 { "a" } else { "b" });
        s.set("roaming_days", i);
        s.set("prepaid", i % 2 == 0);
        // One row leaves the date empty: optional attributes may be.
        if i > 0 {
            s.set("last_recharge", format!("2026-10-0{i}"));
        }
        rows.push(s);
    }
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, 0)
        .await?;
    let id = store
        .subscriber_by_msisdn("13800000002")
        .await?
        .ok_or("missing")?;
    let back = store.subscriber(id).await?.ok_or("missing")?;
    assert_eq!(back.get("data_gb_month"), Some(Value::Dec(5.0)));
    assert_eq!(back.get("plan"), Some(Value::Text("b".into())));
    assert_eq!(back.get("roaming_days"), Some(Value::Int(2)));
    assert_eq!(back.get("prepaid"), Some(Value::Bool(true)));
    assert_eq!(
        back.get("last_recharge"),
        Some(Value::Text("2026-10-02".into()))
    );
    assert_eq!(back.get("region"), Some(Value::Text("beijing".into())));
    let first = store
        .subscriber_by_msisdn("13800000000")
        .await?
        .ok_or("missing")?;
    let first = store.subscriber(first).await?.ok_or("missing")?;
    assert_eq!(first.get("last_recharge"), Some(Value::Null));

    // A catalogue without them: the columns stay, with their data, reported unused.
    let report = store.apply_catalogue(catalogue::shipped()).await?;
    assert_eq!(
        report.unused,
        [
            "value_tier",
            "data_gb_month",
            "plan",
            "roaming_days",
            "prepaid",
            "last_recharge"
        ]
    );
    assert_eq!(
        report.unindexed,
        Vec::<String>::new(),
        "undeclared columns keep their index"
    );
    Ok(())
}

#[tokio::test]
async fn a_type_change_is_refused_and_changes_nothing() -> Res {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    // `age` is a whole-number column; declared as text it cannot be, and the new attribute
    // declared beside it must not be added either.
    let mut all: Vec<Attribute> = catalogue::shipped()
        .declared()
        .filter(|a| a.name != "age")
        .cloned()
        .collect();
    all.push(attr("age", Kind::Text, false));
    all.push(attr("fresh", Kind::Integer, true));
    let cat = Arc::new(Catalogue::new(all)?);
    let err = store
        .apply_catalogue(cat.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`age` is declared text but its column holds whole numbers")
            && err.contains("never changed in place"),
        "{err}"
    );
    // Nothing was added: the shipped catalogue plus `fresh` still lacks its column.
    let err = store
        .use_catalogue(extended(vec![attr("fresh", Kind::Integer, true)]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no column for attribute(s) fresh"), "{err}");
    Ok(())
}

/// Migration 10 rebuilt `subscriber` on SQLite (and relaxed it on PostgreSQL): every row,
/// id and consent flag of a base loaded before it is still there, and the shipped
/// attributes may now be empty.
#[tokio::test]
async fn the_catalogue_migration_keeps_every_row() -> Res {
    let dir = tempfile::tempdir()?;
    let db = store::testing::fresh_database(store::testing::backend()?, dir.path()).await?;
    let store = db.connect().await?;
    migrations::Migrator::up(store.db(), Some(9)).await?;
    for (i, opt_out) in [(1, false), (2, true), (3, false)] {
        store
            .db()
            .execute_raw(store::stmt(
                store.db(),
                "INSERT INTO subscriber (msisdn, name, gender, age, region, brand, value_tier, arpu_3m, balance, \
                 tenure_months, student_stage, first_channel, first_channel_slot, second_channel, second_channel_slot, \
                 complaints_30d, do_not_disturb, churn_risk, opt_out, updated_at) \
                 VALUES (?, 'N', 'female', ?, 'xian', 'mzone', 'gold', 250.5, 10.0, 12, 'student', 'sms', \
                 '18:00-21:00', 'outbound_call', '12:00-14:00', 0, FALSE, 0.25, ?, 0)",
                [format!("1390000000{i}").into(), (20 + i).into(), opt_out.into()],
            ))
            .await?;
    }
    store.migrate().await?;
    store.use_catalogue(catalogue::shipped()).await?;
    assert_eq!(store.count_subscribers().await?, 3);
    for i in 1..=3_i64 {
        let id = store
            .subscriber_by_msisdn(&format!("1390000000{i}"))
            .await?
            .ok_or("row lost")?;
        assert_eq!(id, i, "ids are kept");
        let s = store.subscriber(id).await?.ok_or("row lost")?;
        assert_eq!(s.get("age"), Some(Value::Int(20 + i)));
        assert_eq!(s.get("arpu_3m"), Some(Value::Dec(250.5)));
        assert_eq!(s.opt_out, i == 2);
    }
    // A catalogue that leaves shipped attributes out can insert without them.
    let lean = Arc::new(Catalogue::new(vec![attr("plan", Kind::Text, false)])?);
    store.apply_catalogue(lean.clone()).await?;
    store
        .insert_subscribers(
            &[NewSubscriber::new("13900000009", lean).with("plan", "x")],
            OnDuplicate::Fail,
            0,
        )
        .await?;
    // New ids continue after the old ones.
    assert_eq!(store.subscriber_by_msisdn("13900000009").await?, Some(4));
    Ok(())
}
