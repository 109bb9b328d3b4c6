//! The call-centre queue (`store::calls`) through the store's public API: concurrent
//! claims never hold one task twice, a hold that ran out frees its task, a callback hides
//! its task until its time and not past its deadline, and only the holder records a held
//! task. Runs on SQLite, or on PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use std::collections::BTreeSet;

use sea_orm::TransactionTrait;
use store::Store;
use store::calls::Callback;
use store::contacts::{Arm, NewContact};
use store::inbound::{NewTask, TaskState};
use store::runs::{NewRun, wave_state};
use store::subscribers::OnDuplicate;
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
    store
        .insert_subscribers(&subs, OnDuplicate::Fail, T0)
        .await?;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            store
                .subscriber_by_msisdn(&format!("1390000{i:04}"))
                .await?
                .ok_or("sub")?,
        );
    }
    let version_id = store.upsert_version("c", "h", "campaign: c", T0).await?;
    let run_id = store
        .start_run(NewRun {
            campaign: "c",
            version_id,
            slot_at: None,
            trigger: "manual",
            waves: &[("call".to_owned(), "outbound_call".to_owned())],
            now: T0,
        })
        .await?
        .ok_or("run")?;
    let wave_run_id = store.wave_runs(run_id).await?[0].id;
    let contacts: Vec<NewContact> = ids
        .iter()
        .map(|s| NewContact {
            subscriber_id: *s,
            arm: Arm::Treatment,
            due_at: T0,
            send_by: None,
            stratum: "all".into(),
            variant: None,
        })
        .collect();
    let tx = store.db().begin().await?;
    store::runs::transition_wave(&tx, wave_run_id, wave_state::PENDING, wave_state::OPEN).await?;
    store::runs::set_wave_window(&tx, wave_run_id, T0, T0 + 24 * HOUR).await?;
    store::contacts::insert_contacts(
        &tx,
        &store::contacts::WaveContacts {
            run_id,
            wave_run_id,
            wave: "call",
            channel: "outbound_call",
            purpose: store::contacts::Purpose::Marketing,
            at_most_once: false,
        },
        &contacts,
    )
    .await?;
    tx.commit().await?;
    let mut rows = Vec::new();
    for s in &ids {
        let key = store.contact_key(run_id, "call", *s).await?.ok_or("key")?;
        let c = store.contact_by_key(&key).await?.ok_or("contact")?;
        rows.push(NewTask {
            contact_id: c.id,
            team: "callcentre",
            kind: "outbound_call",
            subscriber_id: *s,
            script: "save bundle",
            due_at: None,
            escalate_to: None,
            outcomes: &[],
            queued: false,
        });
    }
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
    // At its time all three are free: the callback comes first.
    let first = store
        .claim_tasks("callcentre", "agent-3", 1, at + HOUR, at)
        .await?;
    assert_eq!(first[0].id, id);
    assert_eq!(first[0].callback_at, None, "taken: its callback is served");
    Ok(())
}
