//! A planned wave's contacts decided in one transaction and written afterwards from durable
//! batches (`store::batches`): each contact written exactly once with at most one queue row,
//! a batch interrupted mid-write left whole for the next writer, and every reader that
//! needs a wave's contacts (a later planning's cap and next-wave targets, the window timer,
//! an early close) seeing them all. Runs on SQLite, or on PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres`.

use sea_orm::{ConnectionTrait, Statement};
use store::Store;
use store::contacts::{Arm, NewContact, Purpose, WaveContacts};
use store::planning::{Path, earlier_wave_targets};
use store::runs::NewRun;
use store::testing::RawDb as _;
use tempfile::TempDir;

const T0: i64 = 1_780_000_000_000;
const HOUR: i64 = 3_600_000;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

async fn count(store: &Store, sql: &str) -> Res<i64> {
    let db = store.db();
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .ok_or("no row")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// Subscribers `1390000000..` (`n` of them), their ids in order.
async fn subscribers(store: &Store, n: usize) -> Res<Vec<i64>> {
    let subs: Vec<_> = (0..n)
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")))
        .collect();
    store
        .insert_subscribers(&subs, store::subscribers::OnDuplicate::Fail, T0)
        .await?;
    let mut ids = Vec::new();
    for s in &subs {
        ids.push(
            store
                .subscriber_by_msisdn(&s.msisdn)
                .await?
                .ok_or("subscriber")?,
        );
    }
    Ok(ids)
}

/// A run of `campaign` with waves `w1` and `w2` (SMS); their wave run ids.
async fn run(store: &Store, campaign: &str) -> Res<(i64, i64, i64)> {
    let version_id = store
        .upsert_version(campaign, campaign, &format!("campaign: {campaign}"), T0)
        .await?;
    let waves = [
        ("w1".to_owned(), "sms".to_owned()),
        ("w2".to_owned(), "sms".to_owned()),
    ];
    let run_id = store
        .start_run(NewRun {
            campaign,
            version_id,
            slot_at: None,
            trigger: "manual",
            waves: &waves,
            now: T0,
        })
        .await?
        .ok_or("run")?;
    let w = store.wave_runs(run_id).await?;
    Ok((run_id, w[0].id, w[1].id))
}

/// Plans wave `wave_run_id` (`w1` of run `run_id`) as `audience::plan_wave` does, deciding
/// a contact per subscriber (every third in control), in batches of `per_batch`, window to
/// `T0 + 1 h`; writes none of them. The treatment subscribers.
async fn decide(
    store: &Store,
    run_id: i64,
    wave_run_id: i64,
    subs: &[i64],
    per_batch: usize,
) -> Res<Vec<i64>> {
    let tx = store
        .begin_planning(wave_run_id)
        .await?
        .ok_or("wave not pending")?;
    let rows: Vec<NewContact> = subs
        .iter()
        .enumerate()
        .map(|(i, s)| NewContact {
            subscriber_id: *s,
            arm: if i % 3 == 2 {
                Arm::Control
            } else {
                Arm::Treatment
            },
            due_at: T0,
            send_by: None,
            stratum: "all".into(),
            variant: None,
            route: None,
        })
        .collect();
    tx.insert_batches_of(
        &WaveContacts {
            run_id,
            wave_run_id,
            wave: "w1",
            channel: "sms",
            purpose: Purpose::Marketing,
            at_most_once: false,
        },
        &rows,
        per_batch,
    )
    .await?;
    tx.set_wave_window(wave_run_id, T0, T0 + HOUR).await?;
    tx.commit().await?;
    let mut treated: Vec<i64> = rows
        .iter()
        .filter(|r| r.arm == Arm::Treatment)
        .map(|r| r.subscriber_id)
        .collect();
    treated.sort_unstable();
    Ok(treated)
}

async fn fixture(n: usize, per_batch: usize) -> Res<(Store, TempDir, i64, i64, i64, Vec<i64>)> {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let subs = subscribers(&store, n).await?;
    let (run_id, w1, w2) = run(&store, "a").await?;
    let treated = decide(&store, run_id, w1, &subs, per_batch).await?;
    Ok((store, dir, run_id, w1, w2, treated))
}

/// Contacts of `wave_run_id`, and how many distinct subscribers they are.
async fn contacts_of(store: &Store, wave_run_id: i64) -> Res<(i64, i64)> {
    Ok((
        count(store, &format!("SELECT COUNT(*) FROM contact WHERE wave_run_id = {wave_run_id}")).await?,
        count(
            store,
            &format!("SELECT COUNT(DISTINCT subscriber_id) FROM contact WHERE wave_run_id = {wave_run_id}"),
        )
        .await?,
    ))
}

#[tokio::test]
async fn a_decided_wave_is_written_batch_by_batch_exactly_once() -> Res {
    // 8 subscribers in batches of 3: 3 batches (3, 3, 2); subscribers 2 and 5 in control.
    let (store, _dir, _run, w1, _w2, treated) = fixture(8, 3).await?;
    assert_eq!(treated.len(), 6);
    let pending = store.planned_pending(Some(w1)).await?;
    assert_eq!(
        (pending.batches, pending.contacts, pending.treatment),
        (3, 8, 6)
    );
    // Decided, not written: no contact yet, but the wave's pending count has them all.
    assert_eq!(contacts_of(&store, w1).await?, (0, 0));
    assert_eq!(store.pending_in_wave(w1).await?, 6);

    // The first batch (what plan_wave writes before it returns).
    assert_eq!(store.write_planned_batch(Some(w1)).await?, Some(3));
    assert_eq!(contacts_of(&store, w1).await?, (3, 3));
    assert_eq!(store.pending_in_wave(w1).await?, 6);

    // A writer that dies in the middle of the next batch leaves it whole.
    assert_eq!(
        store::testing::write_batch_and_crash(&store, Some(w1)).await?,
        Some(3)
    );
    assert_eq!(contacts_of(&store, w1).await?, (3, 3));
    assert_eq!(store.planned_pending(Some(w1)).await?.batches, 2);

    // The rest, then nothing more however often it is called.
    assert_eq!(store.write_planned_batches().await?, 2);
    assert_eq!(store.write_planned_batches().await?, 0);
    assert_eq!(store.write_planned_batch(None).await?, None);
    assert_eq!(store.planned_pending(None).await?, Default::default());
    assert_eq!(contacts_of(&store, w1).await?, (8, 8));
    assert_eq!(store.pending_in_wave(w1).await?, 6);
    // One queue row per treatment contact; the control group is held, never queued.
    assert_eq!(
        count(&store, &format!("SELECT COUNT(*) FROM dispatch d JOIN contact c ON c.id = d.contact_id WHERE c.wave_run_id = {w1}")).await?,
        6
    );
    assert_eq!(
        count(&store, &format!("SELECT COUNT(*) FROM contact WHERE wave_run_id = {w1} AND arm = 'control' AND state = 'held'")).await?,
        2
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM dispatch").await?, 6);
    Ok(())
}

#[tokio::test]
async fn a_second_campaign_planned_while_batches_are_pending_counts_them_in_the_cap() -> Res {
    let (store, _dir, _run, _w1, _w2, treated) = fixture(7, 2).await?;
    let (_run_b, b1, _b2) = run(&store, "b").await?;
    let tx = store.begin_planning(b1).await?.ok_or("wave not pending")?;
    let recent = tx.reader().recent_contact_campaigns(T0 - HOUR).await?;
    let mut capped: Vec<i64> = recent.keys().copied().collect();
    capped.sort_unstable();
    assert_eq!(capped, treated);
    assert!(recent.values().all(|c| c == &["a".to_owned()]));
    // Written inside the planning transaction: a planning that rolls back leaves them
    // decided, not written, for the next writer.
    drop(tx);
    assert_eq!(store.planned_pending(None).await?.batches, 4);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM contact").await?, 0);
    let tx = store.begin_planning(b1).await?.ok_or("wave not pending")?;
    tx.commit().await?;
    assert_eq!(store.planned_pending(None).await?.batches, 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM contact").await?, 7);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM dispatch").await?, 5);
    Ok(())
}

#[tokio::test]
async fn the_next_wave_picks_its_targets_from_every_decided_contact() -> Res {
    let (store, _dir, _run, w1, w2, treated) = fixture(7, 2).await?;
    // The first batch written, three left.
    store.write_planned_batch(Some(w1)).await?;
    assert_eq!(store.planned_pending(None).await?.batches, 3);
    let tx = store.begin_planning(w2).await?.ok_or("wave not pending")?;
    let mut targets = tx
        .reader()
        .subscriber_ids(earlier_wave_targets(w1, Path::All))
        .await?;
    targets.sort_unstable();
    assert_eq!(targets, treated);
    Ok(())
}

#[tokio::test]
async fn a_wave_with_batches_pending_does_not_close() -> Res {
    let (store, _dir, _run, w1, _w2, _treated) = fixture(5, 2).await?;
    store.write_planned_batch(Some(w1)).await?;
    // Its window is over, but the next wave and the report would read a partial wave.
    assert!(store.due_timers(T0 + 2 * HOUR, 0, 10).await?.is_empty());
    store.write_planned_batches().await?;
    let due = store.due_timers(T0 + 2 * HOUR, 0, 10).await?;
    assert_eq!(
        due.iter().map(|t| t.wave_run_id).collect::<Vec<_>>(),
        vec![w1]
    );
    Ok(())
}

#[tokio::test]
async fn an_early_close_expires_the_contacts_still_in_batches() -> Res {
    let (store, _dir, run_id, w1, _w2, _treated) = fixture(5, 2).await?;
    store.write_planned_batch(Some(w1)).await?;
    let closed = store.close_run_early(run_id, T0 + 1, "replaced").await?;
    // Every treatment contact (4 of 5), the written and the decided alike.
    assert_eq!(closed.expired, 4);
    assert_eq!(store.planned_pending(None).await?.batches, 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM dispatch").await?, 0);
    assert_eq!(contacts_of(&store, w1).await?, (5, 5));
    Ok(())
}

#[tokio::test]
async fn a_writer_takes_one_batch_whatever_plan_the_database_picks() -> Res {
    let (store, _dir, _run, w1, _w2, _treated) = fixture(8, 3).await?;
    assert_eq!(
        store::testing::write_batch_as_nested_loop(&store).await?,
        Some(3)
    );
    assert_eq!(store.planned_pending(Some(w1)).await?.batches, 2);
    assert_eq!(contacts_of(&store, w1).await?, (3, 3));
    Ok(())
}
