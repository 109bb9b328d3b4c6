//! The second-choice fallback of `channel: preferred` waves (`contacts::write_fallbacks`)
//! through the store's public API: written with the settle that leaves the first contact
//! unreached (a failed send, an undelivered report), exactly once, on the second channel in
//! its slot, and never for a reached, responding, opted-out or closed subscriber; counted
//! once per subscriber by the cap and the next wave's targets. Runs on
//! SQLite, or on PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use domain::{ChannelKind, Choice, TimeSlot};
use store::Store;
use store::contacts::{ChoiceReach, ClaimRequest, Outcome, Route};
use store::planning::{Path, earlier_wave_targets};
use store::testing::CallWave;
use store::testing::RawDb as _;
use tempfile::TempDir;

const T0: i64 = 1_780_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn slot(s: &str) -> Option<TimeSlot> {
    TimeSlot::parse(s)
}

/// SMS first (09:00-12:00), e-mail second (18:00-21:00): the usual preference here.
fn sms_then_email() -> Option<Route> {
    Some(Route::new(
        ChannelKind::Sms,
        slot("09:00-12:00"),
        Some((ChannelKind::Email, slot("18:00-21:00"))),
    ))
}

/// A store with an open preferred wave (window to `T0 + 1 day`) of `routes.len()`
/// subscribers, each first contact claimed and sent at `T0`.
async fn sent_wave(routes: &[Option<Route>]) -> Res<(Store, TempDir, CallWave)> {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let subs: Vec<_> = (0..routes.len())
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")))
        .collect();
    let wave =
        store::testing::routed_wave(&store, "c", "sms", &subs, routes, T0, T0 + 24 * HOUR).await?;
    let claimed = claim(&store, "sms", "t0", T0).await?;
    assert_eq!(claimed.len(), routes.len());
    let sent: Vec<_> = claimed
        .iter()
        .map(|c| (c.id, Outcome::Sent { at: T0 }))
        .collect();
    store.settle("t0", &sent, T0).await?;
    Ok((store, dir, wave))
}

async fn claim(
    store: &Store,
    channel: &str,
    token: &str,
    now: i64,
) -> Res<Vec<store::contacts::Claimed>> {
    Ok(store
        .claim(&ClaimRequest {
            channel,
            limit: 100,
            lease_until: now + MINUTE,
            token,
            now,
            proof_grace: 0,
        })
        .await?)
}

/// (channel, state) of the second-choice contact of the wave's `i`th subscriber, if any.
async fn second(store: &Store, wave: &CallWave, i: usize) -> Res<Option<(String, String)>> {
    let sub = wave.contacts[i].subscriber_id;
    let Some(key) = store
        .choice_contact_key(wave.run_id, "w", sub, Choice::Second)
        .await?
    else {
        return Ok(None);
    };
    let c = store.contact_by_key(&key).await?.ok_or("no contact")?;
    Ok(Some((c.channel, c.state)))
}

fn reach(channel: ChannelKind, choice: Choice, t: u64, r: u64, resp: u64) -> ChoiceReach {
    ChoiceReach {
        channel,
        choice,
        targeted: t,
        reached: r,
        responded: resp,
    }
}

// inbound.rs `record_reports` → `write_fallbacks`: an undelivered report writes the second
// choice in its own transaction, once however often the report comes; a delivered one, a
// responder, an opted-out subscriber and a second choice equal to the first get none.
#[tokio::test]
async fn an_undelivered_first_choice_gets_one_fallback_on_its_second_channel() -> Res {
    let routes = vec![
        sms_then_email(),
        sms_then_email(),
        sms_then_email(),
        sms_then_email(),
        // Second choice is SMS again: nothing to fall back to.
        Some(Route::new(
            ChannelKind::Sms,
            slot("09:00-12:00"),
            Some((ChannelKind::Sms, slot("18:00-21:00"))),
        )),
        // The same stored as such (a route not built by `Route::new`): the store holds too.
        Some(Route {
            channel: ChannelKind::Sms,
            slot: slot("09:00-12:00"),
            fallback: Some((ChannelKind::Sms, slot("18:00-21:00"))),
        }),
    ];
    let (store, _dir, wave) = sent_wave(&routes).await?;
    let id = |i: usize| wave.contacts[i].contact_id;
    let at = T0 + MINUTE;
    // 0: undelivered, reported twice. 1: delivered. 2: responded, then undelivered.
    // 3: opted out, then undelivered. 4, 5: undelivered, same channel second.
    assert!(
        store
            .record_delivery(id(0), false, at, Some("absent"))
            .await?
    );
    assert!(
        !store
            .record_delivery(id(0), false, at + 1, Some("absent"))
            .await?
    );
    assert!(store.record_delivery(id(1), true, at, None).await?);
    let responder = store
        .contact_by_key(&wave.contacts[2].key)
        .await?
        .ok_or("no contact")?;
    store
        .record_response(&responder, "reply", Some("YES"), at, true)
        .await?;
    store.record_delivery(id(2), false, at + 1, None).await?;
    store
        .set_opt_out(wave.contacts[3].subscriber_id, at)
        .await?;
    store.record_delivery(id(3), false, at + 1, None).await?;
    store.record_delivery(id(4), false, at + 1, None).await?;
    store.record_delivery(id(5), false, at + 1, None).await?;

    assert_eq!(
        second(&store, &wave, 0).await?,
        Some(("email".to_owned(), "pending".to_owned()))
    );
    for i in 1..6 {
        assert_eq!(second(&store, &wave, i).await?, None, "subscriber {i}");
    }
    // The fallback is queued on its own channel with its own key and the second slot.
    let claimed = claim(&store, "email", "t1", at + 2).await?;
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(c.subscriber_id, wave.contacts[0].subscriber_id);
    assert_eq!(c.choice, Choice::Second);
    assert_eq!(c.slot, slot("18:00-21:00"));
    assert_ne!(c.idem_key, wave.contacts[0].key);
    assert!(!c.idem_key.starts_with(&store::contacts::key_prefix(
        wave.run_id,
        "w",
        c.subscriber_id
    )));
    assert!(claim(&store, "sms", "t2", at + 2).await?.is_empty());
    store
        .settle("t1", &[(c.id, Outcome::Sent { at: at + 3 })], at + 3)
        .await?;
    // The cap counts the wave once per subscriber: the fallback takes no second place.
    let recent = store::contacts::recent_contact_campaigns(store.db(), T0).await?;
    assert_eq!(recent[&wave.contacts[0].subscriber_id].len(), 1);
    // A subscriber is in the wave once, whichever contact: once 0 answers the fallback,
    // neither of its contacts makes it a non-responder.
    let non = store::contacts::non_responders(store.db(), wave.wave_run_id).await?;
    assert_eq!(non.len(), 5);
    let key = store
        .choice_contact_key(wave.run_id, "w", c.subscriber_id, Choice::Second)
        .await?
        .ok_or("no key")?;
    let fallback = store.contact_by_key(&key).await?.ok_or("no contact")?;
    store
        .record_response(&fallback, "order", Some("bundle"), at + 4, true)
        .await?;
    let non = store::contacts::non_responders(store.db(), wave.wave_run_id).await?;
    assert_eq!(non.len(), 4);
    assert!(!non.contains(&c.subscriber_id));
    assert_eq!(
        store.choice_reach(wave.wave_run_id).await?,
        [
            reach(ChannelKind::Email, Choice::Second, 1, 1, 1),
            // 1 delivered of 6; 2 responded.
            reach(ChannelKind::Sms, Choice::First, 6, 1, 1),
        ]
    );
    // The wave's counts are per subscriber: six first contacts, two responders.
    let counts = store.wave_counts(wave.wave_run_id).await?;
    assert_eq!(
        counts.count(
            store::contacts::Arm::Treatment,
            &store::contacts::ContactState::TARGETED
        ),
        6
    );
    assert_eq!(counts.responded(store::contacts::Arm::Treatment), 2);
    // The next wave's paths take subscribers: 0 answered its fallback and was reached by
    // it, so it is neither silent nor undelivered though its SMS was.
    let sub = |i: usize| wave.contacts[i].subscriber_id;
    let reader = store.plan_reader();
    let mut targets = Vec::new();
    for path in [Path::NoResponse, Path::Undelivered, Path::DeliveredSilent] {
        let mut ids = reader
            .subscriber_ids(earlier_wave_targets(wave.wave_run_id, path))
            .await?;
        ids.sort_unstable();
        targets.push(ids);
    }
    assert_eq!(
        targets,
        [
            vec![sub(1), sub(3), sub(4), sub(5)],
            vec![sub(2), sub(3), sub(4), sub(5)],
            vec![sub(1)],
        ]
    );
    Ok(())
}

// contacts.rs `settle` → `write_fallbacks`: a failed send writes the fallback with its
// settle; settling again (a lost lease's worker, a repeat) writes no second one; a contact
// that expired at the window's close gets none, nor does anyone once the run closed early.
#[tokio::test]
async fn a_failed_send_falls_back_once_and_a_closed_wave_never() -> Res {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let subs: Vec<_> = (0..3)
        .map(|i| store::testing::subscriber(&format!("1391000{i:04}")))
        .collect();
    let routes = vec![sms_then_email(); 3];
    let wave =
        store::testing::routed_wave(&store, "c", "sms", &subs, &routes, T0, T0 + HOUR).await?;
    let claimed = claim(&store, "sms", "a", T0).await?;
    let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    let failed = Outcome::Failed {
        error: "no route".into(),
    };
    let idx = |i: usize| ids.iter().position(|id| *id == wave.contacts[i].contact_id);
    let first = claimed[idx(0).ok_or("claimed")?].id;
    store
        .settle("a", &[(first, failed.clone())], T0 + 1)
        .await?;
    store
        .settle("a", &[(first, failed.clone())], T0 + 2)
        .await?;
    assert_eq!(
        second(&store, &wave, 0).await?,
        Some(("email".to_owned(), "pending".to_owned()))
    );
    // Past the window's close: expired, no time for a second choice.
    let late = claimed[idx(1).ok_or("claimed")?].id;
    store
        .settle("a", &[(late, Outcome::Expired)], T0 + 2 * HOUR)
        .await?;
    assert_eq!(second(&store, &wave, 1).await?, None);
    // Closed early: the pending contact expires and nothing falls back, even on a report
    // or a settle that arrives after the close.
    store.close_run_early(wave.run_id, T0 + 3, "test").await?;
    let last = claimed[idx(2).ok_or("claimed")?].id;
    store.settle("a", &[(last, failed)], T0 + 4).await?;
    store.record_delivery(last, false, T0 + 5, None).await?;
    assert_eq!(second(&store, &wave, 2).await?, None);
    let seconds: u64 = store
        .choice_reach(wave.wave_run_id)
        .await?
        .iter()
        .filter(|r| r.choice == Choice::Second)
        .map(|r| r.targeted)
        .sum();
    assert_eq!(seconds, 1);
    Ok(())
}

// inbound.rs `open_tasks` (a preferred wave's first-choice call is due by its send-by),
// calls.rs `expire_tasks` → `write_fallbacks` (the call's fallback may go until the
// window's close), contacts.rs `record_unreachable_call`: a first-choice call no agent
// worked by its send-by, or one an agent could not reach, falls back to the second choice
// once; a worked call, and a call without a second choice, keep theirs as they were.
#[tokio::test]
async fn an_unworked_or_unreachable_first_choice_call_falls_back_once() -> Res {
    use sea_orm::ConnectionTrait as _;
    let call_then_sms = || {
        Some(Route::new(
            ChannelKind::OutboundCall,
            slot("09:00-12:00"),
            Some((ChannelKind::Sms, slot("18:00-21:00"))),
        ))
    };
    let routes = vec![call_then_sms(), call_then_sms(), call_then_sms(), None];
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let subs: Vec<_> = (0..routes.len())
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")))
        .collect();
    let close = T0 + 24 * HOUR;
    let wave = store::testing::routed_wave(&store, "c", "outbound_call", &subs, &routes, T0, close)
        .await?;
    // `send_within: 6h`, as the planner writes it; the worklist channel opens each task and
    // marks its contact sent.
    let send_by = T0 + 6 * HOUR;
    store
        .db()
        .execute_raw(store::stmt(
            store.db(),
            "UPDATE contact SET send_by = ?, state = 'sent'",
            [send_by.into()],
        ))
        .await?;
    let tasks: Vec<_> = wave
        .contacts
        .iter()
        .map(|c| c.task("callcentre", "save"))
        .collect();
    store.open_tasks(&tasks, T0).await?;
    let task_of = |i: usize| wave.contacts[i].contact_id;
    let open = store
        .tasks(None, store::inbound::TaskState::Open, 10)
        .await?;
    let deadline = |i: usize| {
        open.iter()
            .find(|t| t.contact_id == task_of(i))
            .and_then(|t| t.deadline)
    };
    assert_eq!(deadline(0), Some(send_by), "worked by its send-by");
    assert_eq!(
        deadline(3),
        Some(close),
        "no second choice: the window's close"
    );

    // 1: the agent could not reach them. Once, however often the outcome is reported.
    assert!(store.record_unreachable_call(task_of(1), T0 + HOUR).await?);
    assert!(!store.record_unreachable_call(task_of(1), T0 + HOUR).await?);
    assert_eq!(
        second(&store, &wave, 1).await?,
        Some(("sms".into(), "pending".into()))
    );
    // 3 has no second choice: an unreachable call stays a worked call.
    assert!(!store.record_unreachable_call(task_of(3), T0 + HOUR).await?);
    assert_eq!(
        store
            .contact_by_key(&wave.contacts[3].key)
            .await?
            .map(|c| c.state),
        Some("sent".to_owned())
    );
    // 2 was worked (accepted): it has no fallback.
    let t2 = open
        .iter()
        .find(|t| t.contact_id == task_of(2))
        .ok_or("task")?;
    store
        .complete_task(t2.id, "accepted", "agent-1", T0 + HOUR)
        .await?;

    // At the send-by, 0's call was never worked: it expires, and its SMS may still go
    // until the window closes.
    store.expire_tasks(send_by).await?;
    assert_eq!(
        second(&store, &wave, 0).await?,
        Some(("sms".into(), "pending".into()))
    );
    assert_eq!(second(&store, &wave, 2).await?, None, "worked");
    assert_eq!(second(&store, &wave, 3).await?, None, "no second choice");
    let fallback_key = store
        .choice_contact_key(
            wave.run_id,
            "w",
            wave.contacts[0].subscriber_id,
            Choice::Second,
        )
        .await?
        .ok_or("key")?;
    let fallback = store
        .contact_by_key(&fallback_key)
        .await?
        .ok_or("contact")?;
    assert_eq!(fallback.channel, "sms");
    let claimed = claim(&store, "sms", "f", send_by).await?;
    let mine: Vec<i64> = claimed.iter().map(|c| c.subscriber_id).collect();
    assert!(mine.contains(&wave.contacts[0].subscriber_id), "{mine:?}");
    assert!(
        claimed.iter().all(|c| c.send_by == Some(close)),
        "{claimed:?}"
    );
    Ok(())
}

// inbound.rs `open_tasks` (a preferred wave's service task expires: a first choice with a
// fallback by its send-by, due by then at the latest; one without by the window's close; a
// plain service wave's never), contacts.rs `FALLBACK_DEADLINE` (a service task's fallback
// may go until the close) and `record_unreachable_call` (a service visit too): a
// first-choice service task falls back as a first-choice call does.
#[tokio::test]
async fn an_unworked_or_unreachable_first_choice_service_task_falls_back_like_a_call() -> Res {
    use sea_orm::ConnectionTrait as _;
    let service_then_sms = || {
        Some(Route::new(
            ChannelKind::Service,
            slot("09:00-12:00"),
            Some((ChannelKind::Sms, slot("18:00-21:00"))),
        ))
    };
    let only_service = Some(Route::new(ChannelKind::Service, slot("09:00-12:00"), None));
    let routes = vec![service_then_sms(), service_then_sms(), only_service];
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let subs: Vec<_> = (0..routes.len())
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")))
        .collect();
    let close = T0 + 24 * HOUR;
    let wave =
        store::testing::routed_wave(&store, "c", "preferred", &subs, &routes, T0, close).await?;
    // A plain service wave of another campaign, for contrast.
    let plain_sub = [store::testing::subscriber("13900009999")];
    let plain =
        store::testing::routed_wave(&store, "p", "service", &plain_sub, &[None], T0, close).await?;
    let send_by = T0 + 6 * HOUR;
    store
        .db()
        .execute_raw(store::stmt(
            store.db(),
            "UPDATE contact SET send_by = ?, state = 'sent'",
            [send_by.into()],
        ))
        .await?;
    let sla_due = T0 + 8 * HOUR;
    let tasks: Vec<_> = wave
        .contacts
        .iter()
        .chain(&plain.contacts)
        .map(|c| store::inbound::NewTask {
            kind: "service",
            due_at: Some(sla_due),
            ..c.task("desk", "visit")
        })
        .collect();
    store.open_tasks(&tasks, T0).await?;
    let task_of = |i: usize| wave.contacts[i].contact_id;
    let open = store
        .tasks(None, store::inbound::TaskState::Open, 10)
        .await?;
    let terms = |contact: i64| {
        open.iter()
            .find(|t| t.contact_id == contact)
            .map(|t| (t.deadline, t.due_at))
    };
    assert_eq!(
        terms(task_of(0)),
        Some((Some(send_by), Some(send_by))),
        "worked by its send-by, due by then"
    );
    assert_eq!(
        terms(task_of(2)),
        Some((Some(close), Some(sla_due))),
        "no second choice: the window's close, due by its SLA"
    );
    assert_eq!(
        terms(plain.contacts[0].contact_id),
        Some((None, Some(sla_due))),
        "a plain service wave's task waits for its staff"
    );

    // 1: staff could not reach them.
    assert!(store.record_unreachable_call(task_of(1), T0 + HOUR).await?);
    assert_eq!(
        second(&store, &wave, 1).await?,
        Some(("sms".into(), "pending".into()))
    );
    // At the send-by nobody worked 0's: it expires, and its SMS may go until the close.
    store.expire_tasks(send_by).await?;
    assert_eq!(
        second(&store, &wave, 0).await?,
        Some(("sms".into(), "pending".into()))
    );
    assert_eq!(second(&store, &wave, 2).await?, None, "no second choice");
    Ok(())
}
