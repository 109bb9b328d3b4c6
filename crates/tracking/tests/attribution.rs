//! Attribution against a real database (SQLite, or PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres`), with rows built through the store's public API.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, Value};
use spec::{EventMatch, ResponseRule};
use store::contacts::{Arm, CONTROL, ClaimRequest, NewContact, Outcome, TREATMENT};
use store::inbound::{ContactRef, NewInbound, count_unprocessed, source};
use store::runs::NewRun;
use store::subscribers::{NewSubscriber, OnDuplicate};
use store::testing::RawDb as _;
use store::{Store, TransactionTrait};
use tempfile::TempDir;
use tracking::{Rules, Stats, TrackingError, process_batch};

/// In the past, so every pass in these tests runs after the windows closed: a response is
/// judged by when it arrived, never by when it is processed.
const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const CLOSES: i64 = T0 + 3 * DAY;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[derive(Default)]
struct TestRules(HashMap<(i64, String), Vec<ResponseRule>>);

impl Rules for TestRules {
    async fn rules(
        &self,
        run_id: i64,
        wave: &str,
    ) -> Result<Option<Vec<ResponseRule>>, TrackingError> {
        Ok(self.0.get(&(run_id, wave.to_owned())).cloned())
    }
}

struct World {
    store: Store,
    _dir: TempDir,
    run_id: i64,
    /// wave id → (wave run id, channel)
    waves: HashMap<String, (i64, String)>,
    /// Subscriber ids of MSISDNS, in order.
    subs: Vec<i64>,
    rules: TestRules,
}

const MSISDNS: [&str; 4] = ["13800000001", "13800000002", "13800000003", "13800000004"];

impl World {
    async fn new(waves: &[(&str, &str)]) -> Res<World> {
        let dir = tempfile::tempdir()?;
        // SQLite by default; CAMPAIGND_TEST_BACKEND=postgres runs the suite on PostgreSQL.
        let store = store::testing::fresh_store(dir.path()).await?;
        let rows: Vec<NewSubscriber> = MSISDNS
            .iter()
            .map(|m| store::testing::subscriber(m))
            .collect();
        store
            .insert_subscribers(&rows, OnDuplicate::Fail, T0 - DAY)
            .await?;
        let mut subs = Vec::new();
        for m in MSISDNS {
            subs.push(
                store
                    .subscriber_by_msisdn(m)
                    .await?
                    .ok_or("subscriber missing")?,
            );
        }
        let version_id = store
            .upsert_version("autumn", "abc", "campaign: autumn", T0 - DAY)
            .await?;
        let wave_list: Vec<(String, String)> = waves
            .iter()
            .map(|(w, c)| ((*w).to_owned(), (*c).to_owned()))
            .collect();
        let run_id = store
            .start_run(NewRun {
                campaign: "autumn",
                version_id,
                slot_at: None,
                trigger: "manual",
                waves: &wave_list,
                now: T0 - DAY,
            })
            .await?
            .ok_or("run not started")?;
        let waves = store
            .wave_runs(run_id)
            .await?
            .into_iter()
            .map(|w| (w.wave, (w.id, w.channel)))
            .collect();
        Ok(World {
            store,
            _dir: dir,
            run_id,
            waves,
            subs,
            rules: TestRules::default(),
        })
    }

    fn rules(&mut self, wave: &str, rules: Vec<ResponseRule>) {
        self.rules.0.insert((self.run_id, wave.to_owned()), rules);
    }

    /// Opens a wave with contacts for subscribers (by index into MSISDNS) and arm.
    async fn open(
        &self,
        wave: &str,
        planned_at: i64,
        closes_at: i64,
        members: &[(usize, &'static str)],
    ) -> Res {
        self.open_routed(wave, planned_at, closes_at, members, None)
            .await
    }

    /// [`World::open`] with each contact on `route` (a preferred wave's first choice).
    async fn open_routed(
        &self,
        wave: &str,
        planned_at: i64,
        closes_at: i64,
        members: &[(usize, &'static str)],
        route: Option<store::contacts::Route>,
    ) -> Res {
        let (wave_run_id, channel) = &self.waves[wave];
        let rows: Vec<NewContact> = members
            .iter()
            .map(|(i, arm)| NewContact {
                subscriber_id: self.subs[*i],
                arm: Arm::parse(arm).expect("treatment or control"),
                due_at: planned_at,
                send_by: None,
                stratum: "ordinary".into(),
                variant: None,
                route: route.clone(),
            })
            .collect();
        let tx = self.store.db().begin().await?;
        let (from, to) = (
            store::runs::wave_state::PENDING,
            store::runs::wave_state::OPEN,
        );
        assert!(store::runs::transition_wave(&tx, *wave_run_id, from, to).await?);
        store::runs::set_wave_window(&tx, *wave_run_id, planned_at, closes_at).await?;
        store::contacts::insert_contacts(
            &tx,
            &store::contacts::WaveContacts {
                run_id: self.run_id,
                wave_run_id: *wave_run_id,
                wave,
                channel,
                purpose: store::contacts::Purpose::Marketing,
                at_most_once: false,
            },
            &rows,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sends every due pending contact of a channel, as a dispatcher would.
    async fn send(&self, channel: &str, at: i64) -> Res {
        self.settle_due(channel, at, 100, Outcome::Sent { at })
            .await
    }

    /// Claims up to `limit` due contacts (oldest first) and settles them all with `outcome`.
    async fn settle_due(&self, channel: &str, at: i64, limit: u64, outcome: Outcome) -> Res {
        let token = format!("test-{channel}-{at}-{limit}");
        let claimed = self
            .store
            .claim(&ClaimRequest {
                channel,
                limit,
                lease_until: at + HOUR,
                token: &token,
                now: at,
                proof_grace: 0,
            })
            .await?;
        let outcomes: Vec<(i64, Outcome)> =
            claimed.iter().map(|c| (c.id, outcome.clone())).collect();
        self.store.settle(&token, &outcomes, at).await?;
        Ok(())
    }

    /// Claims every due contact of a channel and records no answer, as a dispatcher that
    /// died mid-send leaves them: queued, claimed once, fate unknown.
    async fn claim_only(&self, channel: &str, at: i64) -> Res {
        self.store
            .claim(&ClaimRequest {
                channel,
                limit: 100,
                lease_until: at + HOUR,
                token: "died",
                now: at,
                proof_grace: 0,
            })
            .await?;
        Ok(())
    }

    async fn key(&self, wave: &str, sub: usize) -> String {
        self.store
            .contact_key(self.run_id, wave, self.subs[sub])
            .await
            .unwrap()
            .expect("a contact of the run")
    }

    async fn contact(&self, wave: &str, sub: usize) -> Res<ContactRef> {
        Ok(self
            .store
            .contact_by_key(&self.key(wave, sub).await)
            .await?
            .ok_or("contact missing")?)
    }

    async fn inbound(&self, rows: Vec<NewInbound>) -> Res {
        self.store.insert_inbound(&rows).await?;
        Ok(())
    }

    async fn process(&self) -> Res<Stats> {
        Ok(process_batch(&self.store, &self.rules, 100).await?)
    }

    async fn unprocessed(&self) -> Res<u64> {
        Ok(count_unprocessed(self.store.db()).await?)
    }

    /// (kind, value, at) of every response recorded for a contact.
    async fn responses(&self, contact_id: i64) -> Res<Vec<(String, Option<String>, i64)>> {
        let rows = self
            .sql(
                "SELECT kind, value, at FROM response WHERE contact_id = ? ORDER BY id",
                [contact_id.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "kind")?,
                    r.try_get("", "value")?,
                    r.try_get("", "at")?,
                ))
            })
            .collect()
    }

    async fn opted_out(&self, sub: usize) -> Res<bool> {
        let rows = self
            .sql(
                "SELECT opt_out FROM subscriber WHERE id = ?",
                [self.subs[sub].into()],
            )
            .await?;
        Ok(rows[0].try_get("", "opt_out")?)
    }

    async fn last_error(&self, contact_id: i64) -> Res<Option<String>> {
        let rows = self
            .sql(
                "SELECT last_error FROM contact WHERE id = ?",
                [contact_id.into()],
            )
            .await?;
        Ok(rows[0].try_get("", "last_error")?)
    }

    async fn sql(
        &self,
        sql: &str,
        values: impl IntoIterator<Item = Value>,
    ) -> Res<Vec<sea_orm::QueryResult>> {
        Ok(self
            .store
            .db()
            .query_all_raw(store::stmt(self.store.db(), sql, values))
            .await?)
    }
}

fn dlr(key: &str, kind: &str, at: i64) -> NewInbound {
    NewInbound {
        source: source::DLR,
        idem_key: Some(key.to_owned()),
        msisdn: None,
        kind: kind.to_owned(),
        value: None,
        payload: "{}".into(),
        received_at: at,
    }
}

fn mo(msisdn: &str, text: &str, at: i64) -> NewInbound {
    NewInbound {
        source: source::MO,
        idem_key: None,
        msisdn: Some(msisdn.to_owned()),
        kind: "reply".into(),
        value: Some(text.to_owned()),
        payload: "{}".into(),
        received_at: at,
    }
}

fn event(msisdn: &str, kind: &str, value: &str, at: i64) -> NewInbound {
    NewInbound {
        source: source::EVENT,
        idem_key: None,
        msisdn: Some(msisdn.to_owned()),
        kind: kind.to_owned(),
        value: Some(value.to_owned()),
        payload: "{}".into(),
        received_at: at,
    }
}

fn outcome(key: &str, value: &str, at: i64) -> NewInbound {
    NewInbound {
        source: source::TASK,
        idem_key: Some(key.to_owned()),
        msisdn: None,
        kind: "outcome".into(),
        value: Some(value.to_owned()),
        payload: "{}".into(),
        received_at: at,
    }
}

fn order(offer: &str) -> ResponseRule {
    ResponseRule::Event(EventMatch {
        kind: "order".into(),
        value: Some(offer.into()),
    })
}

fn reply(word: &str) -> ResponseRule {
    ResponseRule::Reply(word.into())
}

#[tokio::test]
async fn delivery_reports_move_contacts_and_unknown_keys_are_dropped() -> Res {
    let w = World::new(&[("sms_offer", "sms")]).await?;
    w.open(
        "sms_offer",
        T0,
        CLOSES,
        &[
            (0, TREATMENT),
            (1, TREATMENT),
            (2, TREATMENT),
            (3, TREATMENT),
        ],
    )
    .await?;
    w.send("sms", T0).await?;
    w.inbound(vec![
        dlr(&w.key("sms_offer", 0).await, "8", T0 + 1000),
        dlr(&w.key("sms_offer", 0).await, "1", T0 + 2000),
        dlr(&w.key("sms_offer", 1).await, "2", T0 + 2000),
        dlr(&w.key("sms_offer", 2).await, "16", T0 + 2000),
        dlr(&w.key("sms_offer", 3).await, "4", T0 + 2000),
        dlr("r999-sms_offer-s1", "1", T0 + 2000),
    ])
    .await?;

    let stats = w.process().await?;
    assert_eq!(
        stats,
        Stats {
            processed: 6,
            delivered: 1,
            failed: 2,
            unmatched: 1,
            ..Stats::default()
        }
    );
    assert_eq!(w.unprocessed().await?, 0);
    assert_eq!(w.contact("sms_offer", 0).await?.state, "delivered");
    let failed = w.contact("sms_offer", 2).await?;
    assert_eq!(failed.state, "undelivered");
    assert_eq!(
        w.last_error(failed.id).await?.as_deref(),
        Some("undeliverable (DLR type 16)")
    );
    assert_eq!(w.contact("sms_offer", 1).await?.state, "undelivered");
    assert_eq!(
        w.contact("sms_offer", 3).await?.state,
        "sent",
        "a buffered report changes nothing"
    );

    // Nothing is left to do, and a repeated report changes nothing.
    assert_eq!(w.process().await?, Stats::default());
    w.inbound(vec![dlr(&w.key("sms_offer", 0).await, "1", T0 + 3000)])
        .await?;
    assert_eq!(
        w.process().await?,
        Stats {
            processed: 1,
            ..Stats::default()
        }
    );
    assert_eq!(w.unprocessed().await?, 0);
    Ok(())
}

/// Guards the batch attribution of reports (`dlrs`, `Store::record_reports`): reports read
/// their contacts together and are written in one transaction, in order, so two reports of
/// one contact in the same batch each see the other's change.
#[tokio::test]
async fn reports_of_claimed_contacts_in_one_batch_apply_in_order() -> Res {
    let w = World::new(&[("sms_offer", "sms")]).await?;
    w.open(
        "sms_offer",
        T0,
        CLOSES,
        &[(0, TREATMENT), (1, TREATMENT), (2, TREATMENT)],
    )
    .await?;
    w.claim_only("sms", T0).await?;
    assert_eq!(w.contact("sms_offer", 0).await?.state, "sending");
    let (k0, k1, k2) = (
        w.key("sms_offer", 0).await,
        w.key("sms_offer", 1).await,
        w.key("sms_offer", 2).await,
    );
    w.inbound(vec![
        dlr(&k0, "8", T0 + 1000),
        dlr(&k0, "1", T0 + 2000),
        dlr(&k1, "1", T0 + 1000),
        dlr(&k1, "8", T0 + 2000),
        dlr(&k2, "8", T0 + 1000),
    ])
    .await?;
    assert_eq!(
        w.process().await?,
        Stats {
            processed: 5,
            delivered: 2,
            // Contact 1's acknowledgement came after its final report: nothing to settle.
            reconciled: 2,
            ..Stats::default()
        }
    );
    assert_eq!(w.contact("sms_offer", 0).await?.state, "delivered");
    assert_eq!(w.contact("sms_offer", 1).await?.state, "delivered");
    assert_eq!(
        w.contact("sms_offer", 2).await?.state,
        "sent",
        "the acknowledgement settles it: out of the queue, never sent again"
    );
    let queued = w.sql("SELECT COUNT(*) AS n FROM dispatch", []).await?;
    assert_eq!(
        queued[0].try_get::<i64>("", "n")?,
        0,
        "each report that took settled its contact's queue row in the same transaction"
    );
    Ok(())
}

#[tokio::test]
async fn report_for_an_unsent_contact_waits_until_it_is_sent() -> Res {
    let mut w = World::new(&[("call", "outbound_call")]).await?;
    w.rules("call", vec![ResponseRule::Outcome("accepted".into())]);
    w.open("call", T0, CLOSES, &[(0, TREATMENT)]).await?;
    w.inbound(vec![
        dlr(&w.key("call", 0).await, "1", T0 + 1000),
        outcome(&w.key("call", 0).await, "accepted", T0 + 2000),
    ])
    .await?;

    assert_eq!(
        w.process().await?,
        Stats {
            deferred: 2,
            ..Stats::default()
        }
    );
    assert_eq!(w.unprocessed().await?, 2);
    assert_eq!(w.contact("call", 0).await?.state, "pending");

    w.send("outbound_call", T0 + 500).await?;
    assert_eq!(
        w.process().await?,
        Stats {
            processed: 2,
            delivered: 1,
            responses: 1,
            ..Stats::default()
        }
    );
    assert_eq!(w.unprocessed().await?, 0);
    let c = w.contact("call", 0).await?;
    assert_eq!(c.state, "delivered");
    assert_eq!(c.responded_at, Some(T0 + 2000));
    Ok(())
}

#[tokio::test]
async fn reply_in_window_counts_and_reply_after_window_is_recorded_only() -> Res {
    let mut w = World::new(&[("sms_offer", "sms")]).await?;
    w.rules("sms_offer", vec![reply("yes"), order("campus-bundle")]);
    w.open("sms_offer", T0, CLOSES, &[(0, TREATMENT), (1, TREATMENT)])
        .await?;
    w.send("sms", T0).await?;
    w.inbound(vec![
        mo(MSISDNS[0], "YES please", CLOSES),
        mo(MSISDNS[1], "yes", CLOSES + 1),
    ])
    .await?;

    assert_eq!(
        w.process().await?,
        Stats {
            processed: 2,
            responses: 2,
            ..Stats::default()
        }
    );
    let on_time = w.contact("sms_offer", 0).await?;
    assert_eq!(on_time.responded_at, Some(CLOSES));
    // Recorded with its keyword, as action paths name it (`targets: { replied: [yes] }`).
    assert_eq!(
        w.responses(on_time.id).await?,
        vec![("reply".into(), Some("yes".into()), CLOSES)]
    );
    let late = w.contact("sms_offer", 1).await?;
    assert_eq!(
        late.responded_at, None,
        "a reply after the window does not count"
    );
    assert_eq!(
        w.responses(late.id).await?,
        vec![("reply".into(), Some("yes".into()), CLOSES + 1)]
    );
    Ok(())
}

#[tokio::test]
async fn opt_out_keywords_opt_out_and_are_not_responses() -> Res {
    let mut w = World::new(&[("sms_offer", "sms")]).await?;
    // Even a wave that takes any reply must not count an opt-out as interest.
    w.rules("sms_offer", vec![reply("*")]);
    w.open(
        "sms_offer",
        T0,
        CLOSES,
        &[
            (0, TREATMENT),
            (1, TREATMENT),
            (2, TREATMENT),
            (3, TREATMENT),
        ],
    )
    .await?;
    w.send("sms", T0).await?;
    w.inbound(vec![
        mo(MSISDNS[0], "TD", T0 + HOUR),
        mo(MSISDNS[1], "Stop now", T0 + HOUR),
        mo(MSISDNS[2], "退订", T0 + HOUR),
        mo(MSISDNS[3], "tomorrow maybe", T0 + HOUR),
    ])
    .await?;

    assert_eq!(
        w.process().await?,
        Stats {
            processed: 4,
            opt_outs: 3,
            responses: 1,
            ..Stats::default()
        }
    );
    for i in 0..3 {
        assert!(w.opted_out(i).await?, "subscriber {i} opted out");
        let c = w.contact("sms_offer", i).await?;
        assert_eq!(c.responded_at, None);
        assert!(w.responses(c.id).await?.is_empty());
    }
    assert!(!w.opted_out(3).await?);
    assert_eq!(
        w.contact("sms_offer", 3).await?.responded_at,
        Some(T0 + HOUR)
    );
    Ok(())
}

#[tokio::test]
async fn reply_goes_to_the_newest_sms_wave_whose_rules_accept_it() -> Res {
    let mut w = World::new(&[("sms_offer", "sms"), ("reminder", "sms")]).await?;
    w.rules("sms_offer", vec![reply("1")]);
    w.rules("reminder", vec![reply("yes")]);
    w.open(
        "sms_offer",
        T0,
        CLOSES,
        &[(0, TREATMENT), (1, TREATMENT), (2, TREATMENT)],
    )
    .await?;
    w.send("sms", T0).await?;
    w.open(
        "reminder",
        T0 + DAY,
        CLOSES + DAY,
        &[(0, TREATMENT), (1, TREATMENT), (2, TREATMENT)],
    )
    .await?;
    w.send("sms", T0 + DAY).await?;
    w.inbound(vec![
        // After the reminder went out: the reminder accepts "yes".
        mo(MSISDNS[0], "yes", T0 + 2 * DAY),
        // The reminder does not accept "1"; the older offer does.
        mo(MSISDNS[1], "1", T0 + 2 * DAY),
        // Before the reminder was planned, only the offer is a candidate, and it does not take "yes".
        mo(MSISDNS[2], "yes", T0 + HOUR),
    ])
    .await?;

    assert_eq!(
        w.process().await?,
        Stats {
            processed: 3,
            responses: 2,
            unmatched: 1,
            ..Stats::default()
        }
    );
    assert_eq!(
        w.contact("reminder", 0).await?.responded_at,
        Some(T0 + 2 * DAY)
    );
    assert_eq!(w.contact("sms_offer", 0).await?.responded_at, None);
    assert_eq!(
        w.contact("sms_offer", 1).await?.responded_at,
        Some(T0 + 2 * DAY)
    );
    assert_eq!(w.contact("reminder", 1).await?.responded_at, None);
    for wave in ["sms_offer", "reminder"] {
        assert!(w.responses(w.contact(wave, 2).await?.id).await?.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn replies_from_control_unsent_or_unknown_numbers_are_unmatched() -> Res {
    let mut w = World::new(&[("sms_offer", "sms")]).await?;
    w.rules("sms_offer", vec![reply("*")]);
    w.open(
        "sms_offer",
        T0,
        CLOSES,
        &[(0, CONTROL), (2, TREATMENT), (1, TREATMENT)],
    )
    .await?;
    // The gateway refuses subscriber 2's offer (claimed first: planned first); subscriber
    // 1's offer is never sent.
    let refused = Outcome::Failed {
        error: "403 Not routable".into(),
    };
    w.settle_due("sms", T0, 1, refused).await?;
    assert_eq!(w.contact("sms_offer", 2).await?.state, "failed");
    assert_eq!(w.contact("sms_offer", 1).await?.state, "pending");
    w.inbound(vec![
        mo(MSISDNS[0], "1", T0 + HOUR),
        mo(MSISDNS[1], "1", T0 + HOUR),
        mo(MSISDNS[2], "1", T0 + HOUR),
        mo("13999999999", "1", T0 + HOUR),
    ])
    .await?;

    assert_eq!(
        w.process().await?,
        Stats {
            processed: 4,
            unmatched: 4,
            ..Stats::default()
        }
    );
    assert_eq!(w.unprocessed().await?, 0);
    for i in 0..3 {
        assert!(
            w.responses(w.contact("sms_offer", i).await?.id)
                .await?
                .is_empty()
        );
    }
    Ok(())
}

#[tokio::test]
async fn business_events_are_recorded_for_both_arms_and_count_only_for_treatment() -> Res {
    let mut w = World::new(&[("sms_offer", "sms")]).await?;
    w.rules("sms_offer", vec![order("campus-bundle")]);
    w.open(
        "sms_offer",
        T0,
        CLOSES,
        &[(0, TREATMENT), (1, CONTROL), (2, TREATMENT), (3, TREATMENT)],
    )
    .await?;
    w.send("sms", T0).await?;
    w.inbound(vec![
        event(MSISDNS[0], "order", "campus-bundle", T0 + HOUR),
        event(MSISDNS[1], "order", "campus-bundle", T0 + HOUR),
        // Another offer: recorded, not the wave's goal.
        event(MSISDNS[2], "order", "night-pack", T0 + HOUR),
        // Before the wave was planned: belongs to no wave.
        event(MSISDNS[2], "order", "campus-bundle", T0 - HOUR),
        // After the window: recorded, does not count.
        event(MSISDNS[3], "order", "campus-bundle", CLOSES + 1),
    ])
    .await?;

    assert_eq!(
        w.process().await?,
        Stats {
            processed: 5,
            responses: 4,
            unmatched: 1,
            ..Stats::default()
        }
    );
    let treated = w.contact("sms_offer", 0).await?;
    assert_eq!(treated.responded_at, Some(T0 + HOUR));
    let control = w.contact("sms_offer", 1).await?;
    assert_eq!(control.state, "held");
    assert_eq!(control.responded_at, None);
    assert_eq!(
        w.responses(control.id).await?,
        vec![("order".into(), Some("campus-bundle".into()), T0 + HOUR)]
    );
    let other = w.contact("sms_offer", 2).await?;
    assert_eq!(other.responded_at, None);
    assert_eq!(
        w.responses(other.id).await?,
        vec![("order".into(), Some("night-pack".into()), T0 + HOUR)]
    );
    let late = w.contact("sms_offer", 3).await?;
    assert_eq!(late.responded_at, None);
    assert_eq!(w.responses(late.id).await?.len(), 1);

    let converted = w
        .store
        .converted(w.run_id, "order", Some("campus-bundle"))
        .await?;
    assert!(
        converted.contains(&(w.subs[1], CONTROL.to_owned())),
        "evaluation sees the control conversion"
    );
    Ok(())
}

#[tokio::test]
async fn business_event_is_recorded_against_every_planned_wave() -> Res {
    let mut w = World::new(&[("sms_offer", "sms"), ("call", "outbound_call")]).await?;
    w.rules("sms_offer", vec![order("campus-bundle")]);
    w.rules(
        "call",
        vec![ResponseRule::Event(EventMatch {
            kind: "order".into(),
            value: None,
        })],
    );
    w.open("sms_offer", T0, CLOSES, &[(0, TREATMENT)]).await?;
    w.send("sms", T0).await?;
    w.open("call", CLOSES, CLOSES + 5 * DAY, &[(0, TREATMENT)])
        .await?;
    w.send("outbound_call", CLOSES).await?;
    w.inbound(vec![event(
        MSISDNS[0],
        "order",
        "campus-bundle",
        CLOSES + DAY,
    )])
    .await?;

    assert_eq!(
        w.process().await?,
        Stats {
            processed: 1,
            responses: 2,
            ..Stats::default()
        }
    );
    let offer = w.contact("sms_offer", 0).await?;
    assert_eq!(offer.responded_at, None, "the offer's window had closed");
    assert_eq!(w.responses(offer.id).await?.len(), 1);
    assert_eq!(w.contact("call", 0).await?.responded_at, Some(CLOSES + DAY));
    Ok(())
}

#[tokio::test]
async fn agent_outcomes_count_when_the_wave_expects_them() -> Res {
    let mut w = World::new(&[("call", "outbound_call")]).await?;
    w.rules("call", vec![ResponseRule::Outcome("accepted".into())]);
    w.open(
        "call",
        T0,
        CLOSES,
        &[(0, TREATMENT), (1, TREATMENT), (2, TREATMENT)],
    )
    .await?;
    w.send("outbound_call", T0).await?;
    w.inbound(vec![
        outcome(&w.key("call", 0).await, "accepted", T0 + HOUR),
        outcome(&w.key("call", 1).await, "refused", T0 + HOUR),
        outcome(&w.key("call", 2).await, "accepted", CLOSES + 1),
        outcome("r999-call-s1", "accepted", T0 + HOUR),
    ])
    .await?;

    assert_eq!(
        w.process().await?,
        Stats {
            processed: 4,
            responses: 3,
            unmatched: 1,
            ..Stats::default()
        }
    );
    assert_eq!(w.unprocessed().await?, 0);
    assert_eq!(w.contact("call", 0).await?.responded_at, Some(T0 + HOUR));
    let refused = w.contact("call", 1).await?;
    assert_eq!(refused.responded_at, None);
    assert_eq!(
        w.responses(refused.id).await?,
        vec![("outcome".into(), Some("refused".into()), T0 + HOUR)]
    );
    assert_eq!(
        w.contact("call", 2).await?.responded_at,
        None,
        "accepted after the window"
    );
    Ok(())
}

/// An agent who could not reach a preferred wave's first-choice subscriber (outcome
/// `unreachable`) sends them to their second choice, once; the outcome is still stored.
#[tokio::test]
async fn an_unreachable_first_choice_call_falls_back_to_the_second_choice() -> Res {
    use domain::{ChannelKind, Choice, TimeSlot};
    let mut w = World::new(&[("call", "outbound_call")]).await?;
    w.rules("call", vec![ResponseRule::Outcome("accepted".into())]);
    let route = store::contacts::Route::new(
        ChannelKind::OutboundCall,
        TimeSlot::parse("09:00-12:00"),
        Some((ChannelKind::Sms, TimeSlot::parse("18:00-21:00"))),
    );
    w.open_routed(
        "call",
        T0,
        CLOSES,
        &[(0, TREATMENT), (1, TREATMENT)],
        Some(route),
    )
    .await?;
    w.send("outbound_call", T0).await?;
    let unreachable = outcome(&w.key("call", 0).await, "unreachable", T0 + HOUR);
    w.inbound(vec![
        unreachable.clone(),
        outcome(&w.key("call", 1).await, "accepted", T0 + HOUR),
    ])
    .await?;
    assert_eq!(
        w.process().await?,
        Stats {
            processed: 2,
            responses: 2,
            fallbacks: 1,
            ..Stats::default()
        }
    );
    let first = w.contact("call", 0).await?;
    assert_eq!((first.state.as_str(), first.responded_at), ("failed", None));
    assert_eq!(
        w.responses(first.id).await?,
        vec![("outcome".into(), Some("unreachable".into()), T0 + HOUR)]
    );
    let second = |i: usize| {
        w.store
            .choice_contact_key(w.run_id, "call", w.subs[i], Choice::Second)
    };
    let key = second(0).await?.ok_or("no fallback")?;
    let fallback = w.store.contact_by_key(&key).await?.ok_or("contact")?;
    assert_eq!(
        (fallback.channel.as_str(), fallback.state.as_str()),
        ("sms", "pending")
    );
    assert_eq!(second(1).await?, None, "reached and accepted");
    // The dialer repeats its report: no second fallback, nothing changes.
    w.inbound(vec![unreachable]).await?;
    assert_eq!(w.process().await?.fallbacks, 0);
    assert_eq!(second(0).await?, Some(key));
    Ok(())
}

/// "A response counts however late it is processed": a reply and a business event received
/// inside the window are attributed after the run finished (its report already stored),
/// and count exactly as they would have on arrival; the stored report is marked stale so
/// the engine rebuilds it. An event received after the run finished is not its response.
#[tokio::test]
async fn responses_received_in_the_window_count_after_the_run_finished() -> Res {
    let mut w = World::new(&[("sms_offer", "sms")]).await?;
    w.rules("sms_offer", vec![reply("yes"), order("campus-bundle")]);
    w.open(
        "sms_offer",
        T0,
        CLOSES,
        &[(0, TREATMENT), (1, CONTROL), (2, TREATMENT)],
    )
    .await?;
    w.send("sms", T0).await?;
    w.inbound(vec![
        mo(MSISDNS[0], "yes", CLOSES - HOUR),
        event(MSISDNS[1], "order", "campus-bundle", CLOSES - HOUR),
        event(MSISDNS[2], "order", "campus-bundle", CLOSES + 2 * HOUR),
    ])
    .await?;
    let finished = CLOSES + HOUR;
    assert!(w.store.finish_run(w.run_id, "{}", finished).await?);
    assert!(w.store.stale_reports(10).await?.is_empty());

    assert_eq!(
        w.process().await?,
        Stats {
            processed: 3,
            responses: 2,
            unmatched: 1,
            ..Stats::default()
        }
    );
    let replied = w.contact("sms_offer", 0).await?;
    assert_eq!(
        replied.responded_at,
        Some(CLOSES - HOUR),
        "the reply counts"
    );
    let converted = w
        .store
        .converted(w.run_id, "order", Some("campus-bundle"))
        .await?;
    assert_eq!(
        converted,
        vec![(w.subs[1], CONTROL.to_owned())],
        "the control conversion is seen; the event after the finish is not this run's"
    );
    let stale: Vec<i64> = w
        .store
        .stale_reports(10)
        .await?
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(stale, vec![w.run_id], "the stored report no longer holds");
    Ok(())
}

/// Reports for contacts that are never sent are deferred, and a deferred row goes behind
/// rows not tried yet: a flood of them (forged reports for a queued key) cannot hold a
/// reply back, in one batch or many.
#[tokio::test]
async fn deferred_reports_do_not_hold_back_a_later_reply() -> Res {
    let mut w = World::new(&[("sms_offer", "sms"), ("call", "outbound_call")]).await?;
    w.rules("sms_offer", vec![reply("yes")]);
    w.open("sms_offer", T0, CLOSES, &[(0, TREATMENT)]).await?;
    w.open("call", T0, CLOSES, &[(1, TREATMENT)]).await?;
    w.send("sms", T0).await?;
    let call_key = w.key("call", 1).await;
    let forged: Vec<NewInbound> = (0..5).map(|i| dlr(&call_key, "1", T0 + i)).collect();
    w.inbound(forged).await?;
    w.inbound(vec![mo(MSISDNS[0], "yes", T0 + HOUR)]).await?;
    // A batch smaller than the flood: the first pass defers what it sees...
    let first = process_batch(&w.store, &w.rules, 3).await?;
    assert_eq!((first.deferred, first.processed), (3, 0));
    // ...and the next one reaches the reply instead of the same three rows again.
    let second = process_batch(&w.store, &w.rules, 3).await?;
    assert_eq!(second.responses, 1, "{second:?}");
    assert_eq!(
        w.contact("sms_offer", 0).await?.responded_at,
        Some(T0 + HOUR)
    );
    Ok(())
}

/// A fenced store for attribution held by `holder`, on a fixed clock.
fn fenced(store: &Store, holder: &str, now: i64) -> Store {
    store.fenced(store::Fence {
        name: "attribution".into(),
        holder: holder.into(),
        lease_for: 60_000,
        now: std::sync::Arc::new(move || now),
    })
}

// store `Store::check_fence` (the renewal `UPDATE singleton_lease ... WHERE name = ? AND
// holder = ?` first in each write's transaction): a worker that stalled past its lease
// while another took it over writes nothing, and the new holder attributes everything once.
#[tokio::test]
async fn a_holder_whose_attribution_lease_was_taken_over_writes_nothing() -> Res {
    let mut w = World::new(&[("sms_offer", "sms")]).await?;
    w.rules("sms_offer", vec![reply("yes")]);
    w.open("sms_offer", T0, CLOSES, &[(0, TREATMENT), (1, TREATMENT)])
        .await?;
    w.send("sms", T0).await?;
    let key = w.key("sms_offer", 0).await;
    w.inbound(vec![
        dlr(&key, "1", T0 + HOUR),
        mo(MSISDNS[0], "yes", T0 + 2 * HOUR),
        mo(MSISDNS[1], "STOP", T0 + 2 * HOUR),
    ])
    .await?;
    let now = CLOSES + DAY;
    assert!(
        w.store
            .try_singleton_lease("attribution", "a", now + 60_000, now)
            .await?
    );
    // While `a` holds the lease its fenced writes go through and renew it.
    let a_now = now + 1_000;
    let mark = w.store.unprocessed_inbound(1).await?[0].id;
    fenced(&w.store, "a", a_now)
        .mark_inbound_deferred(&[mark])
        .await?;
    let until = w
        .sql(
            "SELECT until FROM singleton_lease WHERE name = 'attribution'",
            [],
        )
        .await?[0]
        .try_get::<i64>("", "until")?;
    assert_eq!(until, a_now + 60_000, "a fenced write renews the lease");

    // `a` stalls; its lease runs out and `b` takes it over.
    let later = until + 1;
    assert!(
        w.store
            .try_singleton_lease("attribution", "b", later + 60_000, later)
            .await?
    );
    let err = process_batch(&fenced(&w.store, "a", later), &w.rules, 100)
        .await
        .expect_err("a holder that lost its lease must not attribute");
    assert!(
        matches!(
            err,
            TrackingError::Store(store::StoreError::LeaseLost { ref holder, .. }) if holder == "a"
        ),
        "{err:?}"
    );
    assert_eq!(w.unprocessed().await?, 3, "nothing was marked processed");
    let contact = w.contact("sms_offer", 0).await?;
    assert_eq!(
        contact.state, "sent",
        "the delivery report was not recorded"
    );
    assert!(w.responses(contact.id).await?.is_empty());
    assert!(!w.opted_out(1).await?);

    // The new holder attributes everything, once.
    let s = process_batch(&fenced(&w.store, "b", later), &w.rules, 100).await?;
    assert_eq!(
        (s.processed, s.delivered, s.responses, s.opt_outs),
        (3, 1, 1, 1)
    );
    assert_eq!(w.unprocessed().await?, 0);
    assert_eq!(w.responses(contact.id).await?.len(), 1);
    assert!(w.opted_out(1).await?);
    Ok(())
}
