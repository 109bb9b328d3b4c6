//! Store rules that other code relies on without checking: each test names the line it
//! guards and fails when that line is deleted. Runs on SQLite, or on PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres`.

use std::collections::HashSet;

use sea_orm::ConnectionTrait;
use store::contacts::{Arm, NewContact, insert_contacts, key_prefix, new_idem_key};
use store::inbound::{NewInbound, source};
use store::runs::{NewRun, set_wave_window, transition_wave, wave_state};
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;
use store::{Store, TransactionTrait};
use tempfile::TempDir;

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

struct World {
    store: Store,
    _dir: TempDir,
    run_id: i64,
    /// Wave run ids of waves `a` and `b`.
    waves: [i64; 2],
    subs: Vec<i64>,
}

/// A manual run with two SMS waves, `a` and `b`, and three subscribers.
async fn world() -> Res<World> {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let msisdns = ["13800000001", "13800000002", "13800000003"];
    let rows: Vec<_> = msisdns
        .iter()
        .map(|m| store::testing::subscriber(m))
        .collect();
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, T0 - HOUR)
        .await?;
    let mut subs = Vec::new();
    for m in msisdns {
        subs.push(
            store
                .subscriber_by_msisdn(m)
                .await?
                .ok_or("no subscriber")?,
        );
    }
    let version_id = store.upsert_version("c", "h", "campaign: c", T0).await?;
    let run_id = store
        .start_run(NewRun {
            campaign: "c",
            version_id,
            slot_at: None,
            trigger: "manual",
            waves: &[
                ("a".to_owned(), "sms".to_owned()),
                ("b".to_owned(), "sms".to_owned()),
            ],
            now: T0,
        })
        .await?
        .ok_or("run not started")?;
    let w = store.wave_runs(run_id).await?;
    Ok(World {
        store,
        _dir: dir,
        run_id,
        waves: [w[0].id, w[1].id],
        subs,
    })
}

impl World {
    /// Plans wave `i` for every subscriber, window [`planned`, `closes`], with its timer.
    async fn open(&self, i: usize, planned: i64, closes: i64) -> Res {
        let wave = ["a", "b"][i];
        let rows: Vec<NewContact> = self
            .subs
            .iter()
            .map(|s| NewContact {
                subscriber_id: *s,
                arm: Arm::Treatment,
                due_at: planned,
                send_by: None,
                stratum: "all".into(),
                variant: None,
                route: None,
            })
            .collect();
        let tx = self.store.db().begin().await?;
        assert!(transition_wave(&tx, self.waves[i], wave_state::PENDING, wave_state::OPEN).await?);
        set_wave_window(&tx, self.waves[i], planned, closes).await?;
        insert_contacts(
            &tx,
            &store::contacts::WaveContacts {
                run_id: self.run_id,
                wave_run_id: self.waves[i],
                wave,
                channel: "sms",
                purpose: store::contacts::Purpose::Marketing,
                at_most_once: false,
            },
            &rows,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn reply(&self, sub: usize, at: i64) -> Res {
        self.store
            .insert_inbound(&[NewInbound {
                source: source::MO,
                idem_key: None,
                msisdn: Some(format!("1380000000{}", sub + 1)),
                kind: "reply".into(),
                value: Some("1".into()),
                payload: "{}".into(),
                received_at: at,
            }])
            .await?;
        Ok(())
    }

    /// Wave run ids whose timers are due at `now` with barrier grace `grace`.
    async fn due(&self, now: i64, grace: i64) -> Res<Vec<i64>> {
        Ok(self
            .store
            .due_timers(now, grace, 100)
            .await?
            .into_iter()
            .map(|t| t.wave_run_id)
            .collect())
    }
}

/// Guards the unique index `ux_contact_key` (migration m20261124_000001): the idempotency
/// key is what the gateway and delivery reports identify a message by, so two contacts
/// with one key would merge their reports and let the gateway drop one as a duplicate.
#[tokio::test]
async fn a_second_contact_with_the_same_idempotency_key_is_refused() -> Res {
    let w = world().await?;
    w.open(0, T0, T0 + HOUR).await?;
    let key = w
        .store
        .contact_key(w.run_id, "a", w.subs[0])
        .await?
        .ok_or("no contact")?;
    // Same key in another wave run (so the (wave run, subscriber) index does not decide).
    let insert = store::stmt(
        w.store.db(),
        "INSERT INTO contact (run_id, wave_run_id, subscriber_id, arm, channel, state, attempt, due_at, idem_key, stratum) \
         VALUES (?, ?, ?, 'treatment', 'sms', 'pending', 0, ?, ?, 'all')",
        [
            w.run_id.into(),
            w.waves[1].into(),
            w.subs[0].into(),
            T0.into(),
            key.into(),
        ],
    );
    assert!(
        w.store.db().execute_raw(insert).await.is_err(),
        "a duplicate idempotency key was stored"
    );
    Ok(())
}

/// Guards `contacts::new_idem_key`'s format: every (run, wave, subscriber) gets its own
/// prefix, including combinations whose parts run together when concatenated, and a random
/// part that nobody can count their way to.
#[test]
fn idempotency_keys_differ_across_runs_waves_and_subscribers() {
    let runs = [1, 2, 11, 12, 112];
    let waves = ["a", "b", "a-s1", "1", "sms_offer", "x1"];
    let subs = [1, 2, 11, 12, 21, 121];
    let mut seen = HashSet::new();
    for r in runs {
        for w in waves {
            for s in subs {
                let key = key_prefix(r, w, s);
                assert!(seen.insert(key.clone()), "{key} repeats for r{r} {w} s{s}");
            }
        }
    }
    // The prefix is stable (logs and support read it); the random part is 12 characters
    // of a 32-letter alphabet and differs every time.
    let a = new_idem_key(7, "sms_offer", 42);
    let b = new_idem_key(7, "sms_offer", 42);
    assert!(a.starts_with("r7-sms_offer-s42-"), "{a}");
    assert_eq!(a.len(), "r7-sms_offer-s42-".len() + 12, "{a}");
    assert!(
        a.bytes()
            .skip(17)
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{a}"
    );
    assert_ne!(
        a, b,
        "two keys for the same contact share their random part"
    );
}

/// Guards `Store::try_singleton_lease`: the `(holder = ? OR until < ?)` condition. Another
/// replica is refused while the lease is live, the holder renews it, and a lease that ran
/// out (its holder died) passes to the next asker.
#[tokio::test]
async fn the_singleton_lease_has_one_holder_at_a_time() -> Res {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let lease = |holder: &'static str, now: i64| {
        let store = store.clone();
        async move {
            store
                .try_singleton_lease("attribution", holder, now + MINUTE, now)
                .await
        }
    };
    assert!(lease("a", T0).await?, "the first asker gets it");
    assert!(
        !lease("b", T0 + 1).await?,
        "refused while a's lease is live"
    );
    // a renews before its lease runs out, so b is still refused after the first term.
    assert!(lease("a", T0 + MINUTE / 2).await?, "the holder renews");
    assert!(!lease("b", T0 + MINUTE + 1).await?, "refused: a renewed");
    // a stops renewing: once the renewed term runs out, b takes over and a is out.
    assert!(lease("b", T0 + 2 * MINUTE).await?, "expired: b takes it");
    assert!(!lease("a", T0 + 2 * MINUTE + 1).await?, "a lost it");
    Ok(())
}

/// The window barrier in `Store::due_timers`: a window does not close while a reply
/// received inside it is still untried by attribution. Guards the `NOT EXISTS (... inbound
/// ...)` condition.
#[tokio::test]
async fn a_window_waits_for_untried_replies_received_before_it_closed() -> Res {
    let w = world().await?;
    let closes = T0 + HOUR;
    w.open(0, T0, closes).await?;
    w.reply(0, closes - MINUTE).await?;
    // Past the close, within the grace: the reply is waiting, so the timer is not due.
    assert_eq!(w.due(closes + MINUTE, HOUR).await?, Vec::<i64>::new());
    // A reply received after the close does not hold it (attributed or not, it is late).
    let ids: Vec<i64> = w
        .store
        .unprocessed_inbound(10)
        .await?
        .iter()
        .map(|r| r.id)
        .collect();
    w.store.mark_inbound_processed(&ids).await?;
    w.reply(1, closes + 1).await?;
    assert_eq!(w.due(closes + MINUTE, HOUR).await?, vec![w.waves[0]]);
    Ok(())
}

/// The barrier's bounds: a row attribution tried and deferred (a report for a contact never
/// sent, or a forged one) no longer holds windows, and an untried row holds one for at
/// most the grace. Guards `i.tries = 0` and `t.fire_at < now - grace` in `due_timers`.
#[tokio::test]
async fn the_window_barrier_is_bounded() -> Res {
    let w = world().await?;
    let closes = T0 + HOUR;
    w.open(0, T0, closes).await?;
    w.reply(0, closes - MINUTE).await?;
    // Untried: held within the grace, released past it.
    assert_eq!(w.due(closes + HOUR, HOUR).await?, Vec::<i64>::new());
    assert_eq!(w.due(closes + HOUR + 1, HOUR).await?, vec![w.waves[0]]);
    // Tried and deferred: released at once.
    let ids: Vec<i64> = w
        .store
        .unprocessed_inbound(10)
        .await?
        .iter()
        .map(|r| r.id)
        .collect();
    w.store.mark_inbound_deferred(&ids).await?;
    assert_eq!(w.due(closes + 1, HOUR).await?, vec![w.waves[0]]);
    Ok(())
}

/// Rows deferred before come after rows never tried, so a flood of rows that can never be
/// attributed (2,000 forged reports for a queued key) does not stall the ones behind it.
#[tokio::test]
async fn deferred_inbound_rows_go_behind_untried_ones() -> Res {
    let w = world().await?;
    for i in 0..3 {
        w.reply(0, T0 + i).await?;
    }
    let first = w.store.unprocessed_inbound(2).await?;
    w.store
        .mark_inbound_deferred(&first.iter().map(|r| r.id).collect::<Vec<_>>())
        .await?;
    let next = w.store.unprocessed_inbound(2).await?;
    assert_eq!(next[0].received_at, T0 + 2, "the untried row comes first");
    assert_eq!(next[1].id, first[0].id);
    Ok(())
}

/// Late attribution: a finished run's contacts are still candidates for an event received
/// before the run finished, never for one received after.
#[tokio::test]
async fn contacts_of_a_finished_run_are_candidates_for_events_received_before_it_finished() -> Res {
    let w = world().await?;
    w.open(0, T0, T0 + HOUR).await?;
    let finished = T0 + 2 * HOUR;
    assert!(w.store.finish_run(w.run_id, "{}", finished).await?);
    let s = w.subs[0];
    assert_eq!(w.store.contacts_of_at(s, T0 + MINUTE).await?.len(), 1);
    assert_eq!(w.store.contacts_of_at(s, finished).await?.len(), 1);
    assert_eq!(w.store.contacts_of_at(s, finished + 1).await?.len(), 0);
    Ok(())
}

/// A response recorded after a run's report was built marks the report stale until it is
/// rebuilt from at least that response; a report finished as of an older response count
/// is stale too (the race between the last attribution and the finish).
#[tokio::test]
async fn a_response_after_the_report_marks_it_stale_until_refreshed() -> Res {
    let w = world().await?;
    w.open(0, T0, T0 + HOUR).await?;
    let seq = w.store.response_seq(w.run_id).await?;
    let contact = w
        .store
        .contact_by_key(
            &w.store
                .contact_key(w.run_id, "a", w.subs[0])
                .await?
                .ok_or("no contact")?,
        )
        .await?
        .ok_or("no contact")?;
    // Recorded while the report was being built.
    w.store
        .record_response(&contact, "reply", Some("1"), T0 + MINUTE, true)
        .await?;
    assert!(
        w.store
            .finish_run_as_of(w.run_id, "{\"old\":1}", seq, T0 + 2 * HOUR)
            .await?
    );
    let stale: Vec<i64> = w
        .store
        .stale_reports(10)
        .await?
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(stale, vec![w.run_id]);
    let now_seq = w.store.response_seq(w.run_id).await?;
    assert!(
        !w.store.refresh_report(w.run_id, "{}", seq, None).await?,
        "not newer"
    );
    assert!(
        w.store
            .refresh_report(w.run_id, "{\"new\":1}", now_seq, None)
            .await?
    );
    assert!(w.store.stale_reports(10).await?.is_empty());
    assert_eq!(
        w.store.run_report(w.run_id).await?.as_deref(),
        Some("{\"new\":1}")
    );
    Ok(())
}
