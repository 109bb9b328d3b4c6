//! Consent is never lost: an import may add an opt-out or a do-not-disturb, never erase one;
//! only a recorded consent change (source, principal, reason) clears it, and the cached flags
//! the planner reads agree with the record. SQLite, or PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres`.

use store::Store;
use store::subscribers::{ConsentKind, ConsentSource, NewSubscriber, OnDuplicate};
use store::testing::RawDb as _;
use tempfile::TempDir;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const T0: i64 = 1_700_000_000_000;

async fn store() -> Res<(Store, TempDir)> {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    Ok((store, dir))
}

fn row(msisdn: &str, opt_out: bool, dnd: bool) -> NewSubscriber {
    let mut s = store::testing::subscriber(msisdn);
    s.opt_out = opt_out;
    s.do_not_disturb = dnd;
    s
}

async fn flags(store: &Store, msisdn: &str) -> Res<(bool, bool)> {
    let id = store
        .subscriber_by_msisdn(msisdn)
        .await?
        .ok_or("no subscriber")?;
    let rows = store
        .db()
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            store.db().get_database_backend(),
            if store.is_postgres() {
                "SELECT opt_out, do_not_disturb FROM subscriber WHERE id = $1"
            } else {
                "SELECT opt_out, do_not_disturb FROM subscriber WHERE id = ?"
            },
            [id.into()],
        ))
        .await?;
    Ok((
        rows[0].try_get("", "opt_out")?,
        rows[0].try_get("", "do_not_disturb")?,
    ))
}

use sea_orm::ConnectionTrait;

// Guards: store `subscribers.rs` insert_chunk, `opt_out = (subscriber.opt_out OR excluded.opt_out)`
// (and the same for do_not_disturb). Before it, `import --update` set opt_out back to 0.
#[tokio::test]
async fn an_update_import_never_clears_an_opt_out_or_a_do_not_disturb() -> Res {
    let (store, _dir) = store().await?;
    store
        .insert_subscribers(
            &[
                row("13800000001", true, true),
                row("13800000002", false, false),
            ],
            OnDuplicate::Fail,
            T0,
        )
        .await?;
    // A fresher export that knows nothing of consent: every flag false.
    store
        .insert_subscribers(
            &[
                row("13800000001", false, false),
                row("13800000002", false, false),
            ],
            OnDuplicate::Update,
            T0 + 1,
        )
        .await?;
    assert_eq!(flags(&store, "13800000001").await?, (true, true));
    assert_eq!(flags(&store, "13800000002").await?, (false, false));
    Ok(())
}

// Guards: `SubscriberImport::commit` (the INSERT INTO consent_change ... FROM subscriber for
// flags the import turned on) and `set_consent` (record + cache in one transaction).
#[tokio::test]
async fn every_flag_has_a_record_and_only_a_recorded_change_clears_it() -> Res {
    let (store, _dir) = store().await?;
    store
        .insert_subscribers(
            &[
                row("13800000001", true, false),
                row("13800000002", false, false),
            ],
            OnDuplicate::Fail,
            T0,
        )
        .await?;
    // An update import adds a do-not-disturb to one, an opt-out to the other.
    let mut import = store
        .begin_import(
            catalogue::shipped(),
            OnDuplicate::Update,
            T0 + 10,
            "ops",
            "export.csv",
        )
        .await?;
    import
        .write(&[
            row("13800000001", false, true),
            row("13800000002", true, false),
        ])
        .await?;
    let outcome = import.commit().await?;
    assert_eq!(
        (outcome.rows, outcome.opt_outs_added, outcome.dnd_added),
        (2, 1, 1)
    );
    assert_eq!(store.consent_disagreements().await?, 0);

    let a = store.subscriber_by_msisdn("13800000001").await?.unwrap();
    let history = store.consent_history(a).await?;
    let summary: Vec<_> = history
        .iter()
        .map(|c| {
            (
                c.kind.as_str(),
                c.state,
                c.source.as_str(),
                c.principal.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("opt_out", true, "import", "system"),
            ("dnd", true, "import", "ops")
        ]
    );
    assert_eq!(history[1].reason.as_deref(), Some("import of export.csv"));

    // The explicit change clears it, with who and why, and the cache follows.
    assert!(
        store
            .set_consent(
                a,
                ConsentKind::OptOut,
                false,
                ConsentSource::Cli,
                "alice",
                Some("asked in shop, form 17"),
                T0 + 20
            )
            .await?
    );
    assert_eq!(flags(&store, "13800000001").await?, (false, true));
    // Setting the state it already has records nothing.
    assert!(
        !store
            .set_consent(
                a,
                ConsentKind::OptOut,
                false,
                ConsentSource::Cli,
                "alice",
                None,
                T0 + 21
            )
            .await?
    );
    let last = store.consent_history(a).await?.pop().unwrap();
    assert_eq!(
        (
            last.kind.as_str(),
            last.state,
            last.source.as_str(),
            last.principal.as_str(),
            last.at
        ),
        ("opt_out", false, "cli", "alice", T0 + 20)
    );
    assert_eq!(last.reason.as_deref(), Some("asked in shop, form 17"));
    assert_eq!(store.consent_disagreements().await?, 0);
    let audit = store.audit_since(T0 + 20).await?;
    assert!(
        audit.iter().any(|e| e.action == "consent"
            && e.principal == "alice"
            && e.subject == format!("subscriber {a}")
            && e.detail
                .as_deref()
                .is_some_and(|d| d.contains("asked in shop"))),
        "{audit:?}"
    );
    // An opt-out by SMS reply is recorded as such.
    let b = store.subscriber_by_msisdn("13800000002").await?.unwrap();
    store
        .set_consent(
            b,
            ConsentKind::OptOut,
            false,
            ConsentSource::Cli,
            "alice",
            Some("test"),
            T0 + 30,
        )
        .await?;
    store.set_opt_out(b, T0 + 40).await?;
    let last = store.consent_history(b).await?.pop().unwrap();
    assert_eq!((last.state, last.source.as_str()), (true, "sms_reply"));
    assert_eq!(flags(&store, "13800000002").await?, (true, false));
    assert_eq!(store.consent_disagreements().await?, 0);
    Ok(())
}

// Guards: `SubscriberImport` holds one transaction until `commit`; dropping it rolls back.
#[tokio::test]
async fn an_import_that_is_not_committed_leaves_the_base_as_it_was() -> Res {
    let (store, _dir) = store().await?;
    store
        .insert_subscribers(&[row("13800000001", true, false)], OnDuplicate::Fail, T0)
        .await?;
    {
        let mut import = store
            .begin_import(
                catalogue::shipped(),
                OnDuplicate::Update,
                T0 + 10,
                "ops",
                "bad.csv",
            )
            .await?;
        import
            .write(&[
                row("13800000001", false, true),
                row("13800000009", true, true),
            ])
            .await?;
        // Dropped: the file had a bad row further down.
    }
    assert_eq!(store.count_subscribers().await?, 1);
    assert_eq!(flags(&store, "13800000001").await?, (true, false));
    assert_eq!(store.consent_history(1).await?.len(), 1);
    // A failed statement (a duplicate number) inside the import fails the whole import.
    let mut import = store
        .begin_import(
            catalogue::shipped(),
            OnDuplicate::Fail,
            T0 + 20,
            "ops",
            "dup.csv",
        )
        .await?;
    import.write(&[row("13800000005", false, false)]).await?;
    assert!(
        import
            .write(&[row("13800000001", false, false)])
            .await
            .is_err()
    );
    drop(import);
    assert_eq!(store.count_subscribers().await?, 1);
    Ok(())
}
