//! The call-centre queue (`store::calls`) through the store's public API: concurrent
//! claims never hold one task twice, a hold that ran out frees its task, a callback hides
//! its task until its time and not past its deadline, and only the holder records a held
//! task. Runs on SQLite, or on PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use std::collections::BTreeSet;

use sea_orm::ConnectionTrait;
use store::Store;
use store::calls::{Callback, Renewal};
use store::inbound::TaskState;
use store::testing::RawDb as _;
use tempfile::TempDir;

const T0: i64 = 1_780_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A store with `n` open, released (unpaced) call tasks of team `callcentre` whose wave
/// closes a day after `T0`: (store, dir, task ids in id order).
async fn with_tasks(n: usize) -> Res<(Store, TempDir, Vec<i64>)> {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let subs: Vec<_> = (0..n)
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")))
        .collect();
    let wave = store::testing::call_wave(&store, "c", &subs, "all", T0, T0 + 24 * HOUR).await?;
    let rows: Vec<_> = wave
        .contacts
        .iter()
        .map(|c| c.task("callcentre", "save bundle"))
        .collect();
    store.open_tasks(&rows, T0).await?;
    let mut tasks: Vec<i64> = store
        .tasks(Some("callcentre"), TaskState::Open, 1000)
        .await?
        .iter()
        .map(|t| t.id)
        .collect();
    tasks.sort_unstable();
    Ok((store, dir, tasks))
}

// calls.rs `claim_tasks`: one statement per claim (SKIP LOCKED on PostgreSQL, one writer on
// SQLite), so agents claiming at the same time never hold the same task, and all of them
// are handed out.
#[tokio::test]
async fn concurrent_agents_never_hold_the_same_task() -> Res {
    const TASKS: usize = 60;
    const AGENTS: usize = 8;
    let (store, _dir, ids) = with_tasks(TASKS).await?;
    let mut handles = Vec::new();
    for a in 0..AGENTS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let agent = format!("agent-{a}");
            let mut got = Vec::new();
            // Half the agents take one at a time (POST /tasks/next), half in batches (a
            // dialer), until the queue is empty.
            let size = if a % 2 == 0 { 1 } else { 3 };
            // Bounded: an agent that could take a held task again would loop forever.
            while got.len() <= TASKS {
                let claimed = store
                    .claim_tasks("callcentre", &agent, size, T0 + HOUR, T0)
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    break;
                }
                for t in claimed {
                    assert_eq!(t.held_by.as_deref(), Some(agent.as_str()));
                    got.push(t.id);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await?);
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), TASKS, "every task handed out once: {all:?}");
    assert_eq!(distinct.into_iter().collect::<Vec<_>>(), ids);
    Ok(())
}

// calls.rs: a hold that ran out frees the task; the former holder can neither record it
// nor re-queue it then, and the new holder can.
#[tokio::test]
async fn a_hold_that_ran_out_returns_the_task_and_only_the_holder_records_it() -> Res {
    let (store, _dir, ids) = with_tasks(1).await?;
    let got = store
        .claim_tasks("callcentre", "agent-1", 1, T0 + 15 * MINUTE, T0)
        .await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, ids[0]);
    // Held: nobody else gets it, and nobody else records it.
    let later = T0 + 10 * MINUTE;
    assert!(
        store
            .claim_tasks("callcentre", "agent-2", 1, later + HOUR, later)
            .await?
            .is_empty()
    );
    assert!(
        !store
            .complete_held_task(ids[0], "accepted", "agent-2", "agent-2", later)
            .await?
    );
    assert_eq!(
        store
            .held_tasks("callcentre", "agent-1", 5, later)
            .await?
            .len(),
        1
    );
    // The hold runs out: the task is free, another agent takes it, and the first agent's
    // outcome and callback change nothing.
    let after = T0 + 16 * MINUTE;
    let again = store
        .claim_tasks("callcentre", "agent-2", 1, after + 15 * MINUTE, after)
        .await?;
    assert_eq!(again.len(), 1);
    assert!(
        !store
            .complete_held_task(ids[0], "accepted", "agent-1", "agent-1", after)
            .await?
    );
    assert_eq!(
        store
            .callback_task(ids[0], "agent-1", after + HOUR, after)
            .await?,
        Callback::NotHeld
    );
    assert!(
        store
            .complete_held_task(ids[0], "refused", "agent-2", "agent-2", after)
            .await?
    );
    let t = store.task(ids[0]).await?.ok_or("task")?;
    assert_eq!(
        (t.state.as_str(), t.outcome.as_deref(), t.held_by),
        ("done", Some("refused"), None)
    );
    Ok(())
}

// calls.rs `callback_task`: the task leaves the holder, is invisible to every claim until
// its time, then comes before the others (which would go first by id); not past its
// deadline, and only by its holder.
#[tokio::test]
async fn a_callback_hides_the_task_until_its_time_then_serves_it_first() -> Res {
    let (store, _dir, ids) = with_tasks(3).await?;
    let got = store
        .claim_tasks("callcentre", "agent-1", 3, T0 + 15 * MINUTE, T0)
        .await?;
    assert_eq!(got.len(), 3);
    let id = *ids.last().ok_or("id")?;
    let deadline = store
        .task(id)
        .await?
        .ok_or("task")?
        .deadline
        .ok_or("deadline")?;
    assert_eq!(deadline, T0 + 24 * HOUR);
    assert_eq!(
        store
            .callback_task(id, "agent-1", deadline + 1, T0 + MINUTE)
            .await?,
        Callback::AfterDeadline(deadline)
    );
    assert_eq!(
        store
            .callback_task(id, "agent-2", T0 + HOUR, T0 + MINUTE)
            .await?,
        Callback::NotHeld
    );
    let at = T0 + 3 * HOUR;
    assert_eq!(
        store.callback_task(id, "agent-1", at, T0 + MINUTE).await?,
        Callback::Requeued
    );
    // Before its time the others are served (their holds ran out) and it is not.
    let before = at - MINUTE;
    let others = store
        .claim_tasks("callcentre", "agent-2", 10, before + 30_000, before)
        .await?;
    assert_eq!(others.len(), 2);
    assert!(others.iter().all(|t| t.id != id));
    // At its time all three are free: for the agent that promised the call, the callback
    // comes first.
    let first = store
        .claim_tasks("callcentre", "agent-1", 1, at + HOUR, at)
        .await?;
    assert_eq!(first[0].id, id);
    assert_eq!(first[0].callback_at, None, "taken: its callback is served");
    assert_eq!(first[0].callback_for, None);
    assert_eq!(first[0].callbacks, 1);
    Ok(())
}

// calls.rs `FREE` (`callback_for`): a due call back is its promising agent's for the
// grace, and anyone's after it; a re-queued task stays open with no outcome recorded.
#[tokio::test]
async fn a_due_callback_waits_for_its_agent_then_goes_to_anyone() -> Res {
    let (store, _dir, ids) = with_tasks(2).await?;
    let id = ids[0];
    let got = store
        .claim_tasks("callcentre", "agent-1", 1, T0 + 15 * MINUTE, T0)
        .await?;
    assert_eq!(got[0].id, id);
    let at = T0 + 2 * HOUR;
    assert_eq!(
        store.callback_task(id, "agent-1", at, T0 + MINUTE).await?,
        Callback::Requeued
    );
    let t = store.task(id).await?.ok_or("task")?;
    assert_eq!(
        (
            t.state.as_str(),
            t.outcome,
            t.callback_for.as_deref(),
            t.callbacks
        ),
        ("open", None, Some("agent-1"), 1)
    );
    assert_eq!(
        store::inbound::count_unprocessed(store.db()).await?,
        0,
        "a re-queued task is not an outcome"
    );
    // Due, within the grace: another agent gets the other task, never this one.
    let due = at + MINUTE;
    let other = store
        .claim_tasks("callcentre", "agent-2", 5, due + 15 * MINUTE, due)
        .await?;
    assert_eq!(other.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[1]]);
    let late = at + store::calls::CALLBACK_GRACE_MS - 1;
    assert!(
        store
            .claim_tasks("callcentre", "agent-3", 5, late + HOUR, late)
            .await?
            .is_empty(),
        "still the promising agent's"
    );
    // After the grace the promise is kept by whoever asks.
    let after = at + store::calls::CALLBACK_GRACE_MS;
    let taken = store
        .claim_tasks("callcentre", "agent-3", 5, after + HOUR, after)
        .await?;
    assert_eq!(taken.iter().map(|t| t.id).collect::<Vec<_>>(), vec![id]);
    Ok(())
}

// calls.rs `renew_hold`: the holder extends its hold (a long call is not taken over), never
// past the deadline; nobody else can, nor the holder once the hold ran out or the task closed.
#[tokio::test]
async fn only_the_holder_renews_a_hold_and_never_past_the_deadline() -> Res {
    let (store, _dir, ids) = with_tasks(1).await?;
    let id = ids[0];
    store
        .claim_tasks("callcentre", "agent-1", 1, T0 + 15 * MINUTE, T0)
        .await?;
    let t1 = T0 + 10 * MINUTE;
    assert_eq!(
        store
            .renew_hold(id, "agent-2", t1 + 15 * MINUTE, t1)
            .await?,
        Renewal::NotHeld
    );
    assert_eq!(
        store
            .renew_hold(id, "agent-1", t1 + 15 * MINUTE, t1)
            .await?,
        Renewal::Renewed(t1 + 15 * MINUTE)
    );
    // Past the first hold's end, the renewed hold still keeps the task.
    let t2 = T0 + 20 * MINUTE;
    assert!(
        store
            .claim_tasks("callcentre", "agent-2", 1, t2 + HOUR, t2)
            .await?
            .is_empty()
    );
    // Never past the deadline (the wave's close), where the task expires.
    let deadline = T0 + 24 * HOUR;
    assert_eq!(
        store.renew_hold(id, "agent-1", deadline + HOUR, t2).await?,
        Renewal::Renewed(deadline)
    );
    // A hold that ran out is not renewed.
    let gone = deadline;
    assert_eq!(
        store.renew_hold(id, "agent-1", gone + HOUR, gone).await?,
        Renewal::NotHeld
    );
    assert_eq!(
        store.renew_hold(999_999, "agent-1", gone, t2).await?,
        Renewal::NotFound
    );
    assert!(
        store
            .complete_held_task(id, "accepted", "agent-1", "agent-1", t2)
            .await?
    );
    assert_eq!(
        store.renew_hold(id, "agent-1", t2 + HOUR, t2).await?,
        Renewal::Closed("done".into())
    );
    Ok(())
}

// calls.rs `callback_task` then `expire_tasks`: a call back never worked by the deadline
// expires, and its contact counts as unreached (`expired`), not as a completed contact.
#[tokio::test]
async fn a_callback_never_worked_expires_unreached() -> Res {
    let (store, _dir, ids) = with_tasks(1).await?;
    let id = ids[0];
    store
        .claim_tasks("callcentre", "agent-1", 1, T0 + 15 * MINUTE, T0)
        .await?;
    // The worklist channel marks a contact sent when it opens its task.
    store
        .db()
        .execute_raw(store::stmt(
            store.db(),
            "UPDATE contact SET state = 'sent'",
            [],
        ))
        .await?;
    let deadline = T0 + 24 * HOUR;
    // A call back at the deadline itself could never be served: refused.
    assert_eq!(
        store.callback_task(id, "agent-1", deadline, T0).await?,
        Callback::AfterDeadline(deadline)
    );
    assert_eq!(
        store
            .callback_task(id, "agent-1", deadline - HOUR, T0)
            .await?,
        Callback::Requeued
    );
    assert_eq!(store.expire_tasks(deadline - 1).await?, 0);
    assert_eq!(store.expire_tasks(deadline).await?, 1);
    let t = store.task(id).await?.ok_or("task")?;
    assert_eq!((t.state.as_str(), t.outcome), ("expired", None));
    let contact = store
        .db()
        .query_one_raw(store::stmt(
            store.db(),
            "SELECT state FROM contact WHERE id = ?",
            [t.contact_id.into()],
        ))
        .await?
        .ok_or("contact")?;
    assert_eq!(contact.try_get::<String>("", "state")?, "expired");
    assert_eq!(store::inbound::count_unprocessed(store.db()).await?, 0);
    Ok(())
}

// calls.rs `release_tasks` / `spread_room`: a team's pacing is spread over the hour. Step
// by step each minute on a manual clock, a wave's waiting tasks reach the queue a few a
// minute (never more than ceil(pacing * m / 60) in any m minutes) instead of the hour's
// whole pacing at its first minute, and an hour still brings exactly the pacing.
#[tokio::test]
async fn pacing_is_spread_over_the_hour_and_an_hour_still_brings_the_pacing() -> Res {
    const PACING: u32 = 80;
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let subs: Vec<_> = (0..300)
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")).with("arpu_3m", 50.0))
        .collect();
    let wave = store::testing::call_wave(&store, "c", &subs, "all", T0, T0 + 24 * HOUR).await?;
    let rows: Vec<_> = wave
        .contacts
        .iter()
        .map(|c| store::inbound::NewTask {
            queued: true,
            ..c.task("callcentre", "save bundle")
        })
        .collect();
    store.open_tasks(&rows, T0).await?;
    let pace = store::calls::Pace {
        team: "callcentre",
        day: "2026-05-28",
        capacity_per_day: 10_000,
        pacing_per_hour: PACING,
        value: "arpu_3m",
        catch_up_minutes: 0,
    };
    // Released at each minute from the wave's start, two hours long.
    let mut per_step = Vec::new();
    for k in 0..120 {
        let r = store.release_tasks(&pace, T0 + k * MINUTE).await?;
        // A second step in the same minute (another replica) finds no room left.
        let again = store.release_tasks(&pace, T0 + k * MINUTE + 30_000).await?;
        per_step.push(r.released + again.released);
    }
    // No burst: the first minute brings ceil(80 / 60) = 2, not the hour's 80.
    assert_eq!(per_step[0], 2, "{per_step:?}");
    // The hour still brings the whole pacing, and so does the next.
    assert_eq!(per_step[..60].iter().sum::<u64>(), u64::from(PACING));
    assert_eq!(per_step[60..].iter().sum::<u64>(), u64::from(PACING));
    // In every window of m minutes, at most ceil(80 * m / 60).
    for m in 1..=60usize {
        let bound = (u64::from(PACING) * m as u64).div_ceil(60);
        for start in 0..=(120 - m) {
            let n: u64 = per_step[start..start + m].iter().sum();
            assert!(
                n <= bound,
                "{n} in minutes {start}..{}: {per_step:?}",
                start + m
            );
        }
    }
    // A step 21 minutes after the last (a coarse tick) catches up the 15 minutes it may:
    // more than a minute's share, no more than the bound of 16 minutes.
    let late = store
        .release_tasks(
            &store::calls::Pace {
                catch_up_minutes: 15,
                ..pace
            },
            T0 + 140 * MINUTE,
        )
        .await?;
    assert!(late.released > 2 && late.released <= 22, "{late:?}");
    per_step.push(late.released);
    // The store's own count agrees: the released tasks, stamped at their minutes.
    let released = store
        .tasks(Some("callcentre"), TaskState::Open, 1000)
        .await?
        .iter()
        .filter(|t| t.released_at.is_some())
        .count();
    assert_eq!(released as u64, per_step.iter().sum::<u64>());
    Ok(())
}
