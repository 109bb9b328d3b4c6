//! The staff mail queue (`store::mail`) through the store's public API. Runs on SQLite, or on
//! PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use store::Store;
use store::mail::{MailKind, MailOutcome, MailState, NewMail, report_dedup_key};
use store::runs::NewRun;
use tempfile::TempDir;

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A fresh store with one active run: (store, its directory, run id).
async fn with_run() -> Res<(Store, TempDir, i64)> {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let version_id = store.upsert_version("c", "h", "campaign: c", T0).await?;
    let run_id = store
        .start_run(NewRun {
            campaign: "c",
            version_id,
            slot_at: None,
            trigger: "manual",
            waves: &[("w".to_owned(), "sms".to_owned())],
            now: T0,
        })
        .await?
        .ok_or("run not started")?;
    Ok((store, dir, run_id))
}

fn report_mail(run_id: i64, at: i64) -> NewMail {
    NewMail {
        kind: MailKind::Report,
        dedup_key: report_dedup_key(run_id),
        recipients: vec!["ops@example.com".into(), "Lead <lead@example.com>".into()],
        subject: format!("campaignd: c run {run_id} evaluation"),
        text: "treatment 12% vs control 8%".into(),
        html: Some("<p>treatment 12%</p>".into()),
        due_at: at,
    }
}

// mail.rs `finish_run_with_mail`: the mail row is written in the transaction that finishes
// the run, so when the process dies right after (nothing sent) the mail is still there;
// `claim_mail` leases it once; `settle_mail` settles it once.
#[tokio::test]
async fn a_report_mail_queued_with_the_finish_survives_a_crash_and_is_claimed_and_settled_once()
-> Res {
    let (store, _dir, run_id) = with_run().await?;
    let at = T0 + MINUTE;
    assert!(
        store
            .finish_run_with_mail(run_id, "{}", 0, at, Some(&report_mail(run_id, at)), None)
            .await?
    );
    // A second finish (another replica, a repeated pass) neither finishes nor queues again.
    assert!(
        !store
            .finish_run_with_mail(run_id, "{}", 0, at, Some(&report_mail(run_id, at)), None)
            .await?
    );
    // "Crash": nothing was sent; a new process finds the row.
    let queued = store
        .mail_by_key(&report_dedup_key(run_id))
        .await?
        .ok_or("the report mail is queued")?;
    assert_eq!(queued.state, MailState::Queued);
    assert_eq!(
        queued.recipients,
        vec!["ops@example.com", "Lead <lead@example.com>"]
    );
    assert_eq!(queued.html.as_deref(), Some("<p>treatment 12%</p>"));
    assert_eq!(queued.attempt, 0);

    let claimed = store.claim_mail("w1:a", at, at + MINUTE, 10).await?;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempt, 1);
    assert!(
        store
            .claim_mail("w2:b", at, at + MINUTE, 10)
            .await?
            .is_empty(),
        "a leased mail is not claimed twice"
    );
    assert!(
        store
            .settle_mail(claimed[0].id, "w1:a", &MailOutcome::Sent { at: at + 1 })
            .await?
    );
    assert!(
        !store
            .settle_mail(claimed[0].id, "w1:a", &MailOutcome::Sent { at: at + 2 })
            .await?,
        "settled once"
    );
    let sent = store.mails().await?;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].state, MailState::Sent);
    assert_eq!(sent[0].sent_at, Some(at + 1));
    // A sent mail is never claimed again, even long after.
    assert!(
        store
            .claim_mail("w3:c", at + 60 * MINUTE, at + 61 * MINUTE, 10)
            .await?
            .is_empty()
    );
    Ok(())
}

// mail.rs `settle_mail` (`AND lease_token = ?`) and `claim_mail` (`lease_until < ?`): a
// worker whose lease ran out and whose mail another worker claimed settles nothing.
#[tokio::test]
async fn a_stale_token_settles_nothing() -> Res {
    let (store, _dir, run_id) = with_run().await?;
    assert!(store.enqueue_mail(&report_mail(run_id, T0), T0).await?);
    let first = store.claim_mail("old", T0, T0 + MINUTE, 10).await?;
    assert_eq!(first.len(), 1);
    // The lease runs out; another worker claims the mail.
    let later = T0 + MINUTE + 1;
    let second = store.claim_mail("new", later, later + MINUTE, 10).await?;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt, 2);
    for outcome in [
        MailOutcome::Sent { at: later },
        MailOutcome::Failed {
            error: "550 no such user".into(),
        },
        MailOutcome::Retry {
            due_at: later + MINUTE,
            error: "421 busy".into(),
        },
    ] {
        assert!(
            !store.settle_mail(first[0].id, "old", &outcome).await?,
            "{outcome:?}"
        );
    }
    let row = &store.mails().await?[0];
    assert_eq!(
        (row.state, row.last_error.as_deref()),
        (MailState::Queued, None)
    );
    // The holder retries: due again only at the new time.
    assert!(
        store
            .settle_mail(
                second[0].id,
                "new",
                &MailOutcome::Retry {
                    due_at: later + 10 * MINUTE,
                    error: "421 busy".into()
                }
            )
            .await?
    );
    assert!(
        store
            .claim_mail("x", later + MINUTE, later + 2 * MINUTE, 10)
            .await?
            .is_empty()
    );
    let third = store
        .claim_mail("y", later + 10 * MINUTE, later + 11 * MINUTE, 10)
        .await?;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].last_error.as_deref(), Some("421 busy"));
    assert!(
        store
            .settle_mail(
                third[0].id,
                "y",
                &MailOutcome::Failed {
                    error: "550 no such user".into()
                }
            )
            .await?
    );
    assert_eq!(store.mails().await?[0].state, MailState::Failed);
    Ok(())
}

// mail.rs `enqueue_mail_in`: `ON CONFLICT (dedup_key) DO NOTHING` with the unique index.
#[tokio::test]
async fn queueing_the_same_dedup_key_twice_adds_one_row() -> Res {
    let (store, _dir, run_id) = with_run().await?;
    assert!(store.enqueue_mail(&report_mail(run_id, T0), T0).await?);
    let mut again = report_mail(run_id, T0 + MINUTE);
    again.subject = "changed".into();
    assert!(!store.enqueue_mail(&again, T0 + MINUTE).await?);
    let rows = store.mails().await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].subject,
        format!("campaignd: c run {run_id} evaluation")
    );
    // A digest with its own key is a second row.
    let digest = NewMail {
        kind: MailKind::Digest,
        dedup_key: "digest:2026-09-07".into(),
        ..report_mail(run_id, T0)
    };
    assert!(store.enqueue_mail(&digest, T0).await?);
    assert_eq!(store.mails().await?.len(), 2);
    Ok(())
}
