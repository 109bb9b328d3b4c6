//! The work queue driven step by step through the store's public API, with a snapshot of
//! the queue after each step. Runs on SQLite, or on PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres` (each test in a schema of its own).

use sea_orm::ConnectionTrait;
use store::contacts::{
    Arm, CONTROL, ClaimRequest, NewContact, Outcome, TREATMENT, insert_contacts,
};
use store::runs::NewRun;
use store::subscribers::{NewSubscriber, OnDuplicate};
use store::testing::RawDb as _;
use store::{Store, TransactionTrait};
use tempfile::TempDir;

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

struct Queue {
    store: Store,
    _dir: TempDir,
    run_id: i64,
    wave_run_id: i64,
    /// Subscriber ids, in insertion order; snapshots name subscribers by index.
    subs: Vec<i64>,
}

/// A manual run of campaign `c` with one SMS wave `w`: (run id, wave run id).
async fn one_wave_run(store: &Store) -> Res<(i64, i64)> {
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
    Ok((run_id, store.wave_runs(run_id).await?[0].id))
}

impl Queue {
    /// A planned wave of `arms.len()` contacts, due at T0, each with an optional send-by.
    async fn planned(arms: &[(&'static str, Option<i64>)]) -> Res<Queue> {
        let dir = tempfile::tempdir()?;
        let store = store::testing::fresh_store(dir.path()).await?;
        let rows: Vec<NewSubscriber> = (0..arms.len())
            .map(|i| store::testing::subscriber(&format!("1380000{i:04}")))
            .collect();
        store
            .insert_subscribers(&rows, OnDuplicate::Fail, T0 - MINUTE)
            .await?;
        let mut subs = Vec::new();
        for r in &rows {
            subs.push(
                store
                    .subscriber_by_msisdn(&r.msisdn)
                    .await?
                    .ok_or("subscriber missing")?,
            );
        }
        let (run_id, wave_run_id) = one_wave_run(&store).await?;
        let q = Queue {
            store,
            _dir: dir,
            run_id,
            wave_run_id,
            subs,
        };
        q.plan(arms).await?;
        Ok(q)
    }

    /// Writes the wave's contacts (again, when called twice: a re-plan after a crash).
    async fn plan(&self, arms: &[(&'static str, Option<i64>)]) -> Res<u64> {
        let contacts: Vec<NewContact> = arms
            .iter()
            .zip(&self.subs)
            .map(|((arm, send_by), id)| NewContact {
                subscriber_id: *id,
                arm: Arm::parse(arm).expect("treatment or control"),
                due_at: T0,
                send_by: *send_by,
                stratum: "all".into(),
                variant: None,
                route: None,
            })
            .collect();
        let tx = self.store.db().begin().await?;
        let n = insert_contacts(
            &tx,
            &store::contacts::WaveContacts {
                run_id: self.run_id,
                wave_run_id: self.wave_run_id,
                wave: "w",
                channel: "sms",
                purpose: store::contacts::Purpose::Marketing,
                at_most_once: false,
            },
            &contacts,
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Claims up to `limit` due rows at `now`, leased for `lease` ms; returns subscriber
    /// indexes and attempts, in claim order.
    async fn claim(&self, token: &str, now: i64, lease: i64, limit: u64) -> Res<Vec<(usize, i32)>> {
        let claimed = self
            .store
            .claim(&ClaimRequest {
                channel: "sms",
                limit,
                lease_until: now + lease,
                token,
                now,
                proof_grace: 0,
            })
            .await?;
        Ok(claimed
            .iter()
            .map(|c| (self.index(c.subscriber_id), c.attempt))
            .collect())
    }

    async fn settle(&self, token: &str, outcomes: &[(usize, Outcome)]) -> Res<u64> {
        let mut rows = Vec::new();
        for (i, o) in outcomes {
            rows.push((self.contact_id(*i).await?, o.clone()));
        }
        Ok(self.store.settle(token, &rows, T0).await?)
    }

    /// [`Store::settle_noting_sent`], with each contact's key.
    async fn settle_noting(&self, token: &str, outcomes: &[(usize, Outcome)]) -> Res<u64> {
        let (mut rows, mut keys) = (Vec::new(), Vec::new());
        for (i, o) in outcomes {
            rows.push((self.contact_id(*i).await?, o.clone()));
            keys.push(
                self.store
                    .contact_key(self.run_id, "w", self.subs[*i])
                    .await?
                    .ok_or("no contact")?,
            );
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        Ok(self
            .store
            .settle_noting_sent(token, &rows, &keys, T0)
            .await?)
    }

    fn index(&self, subscriber_id: i64) -> usize {
        self.subs.iter().position(|s| *s == subscriber_id).unwrap()
    }

    async fn contact_id(&self, i: usize) -> Res<i64> {
        let key = self
            .store
            .contact_key(self.run_id, "w", self.subs[i])
            .await?
            .ok_or("no contact")?;
        Ok(self
            .store
            .contact_by_key(&key)
            .await?
            .ok_or("no contact")?
            .id)
    }

    /// One line per contact: `s<index> <state as readers see it> [queue: attempt, lease]`.
    async fn snapshot(&self) -> Res<String> {
        let sql = "SELECT c.subscriber_id, c.state, c.attempt AS c_attempt, d.attempt, d.lease_token, d.due_at \
             FROM contact c LEFT JOIN dispatch d ON d.contact_id = c.id ORDER BY c.subscriber_id";
        let rows = self
            .store
            .db()
            .query_all_raw(store::stmt(self.store.db(), sql, []))
            .await?;
        let seen = self.store.contact_states(self.wave_run_id).await?;
        let mut out = String::new();
        for (r, (_, _, state)) in rows.iter().zip(seen) {
            let sub: i64 = r.try_get("", "subscriber_id")?;
            let stored: String = r.try_get("", "state")?;
            out.push_str(&format!("s{} {state}", self.index(sub)));
            match r.try_get::<Option<i32>>("", "attempt")? {
                Some(attempt) => {
                    let lease: Option<String> = r.try_get("", "lease_token")?;
                    let due: i64 = r.try_get("", "due_at")?;
                    out.push_str(&format!(
                        " [queued: attempt {attempt}, lease {}, due +{}m]",
                        lease.as_deref().unwrap_or("-"),
                        (due - T0) / MINUTE
                    ));
                    assert_eq!(stored, "pending", "a queued contact is pending");
                }
                None => {
                    let attempt: i32 = r.try_get("", "c_attempt")?;
                    if attempt > 0 {
                        out.push_str(&format!(" (attempts {attempt})"));
                    }
                    assert_ne!(stored, "pending", "a pending contact is queued");
                }
            }
            out.push('\n');
        }
        Ok(out)
    }
}

fn sent(at: i64) -> Outcome {
    Outcome::Sent { at }
}

#[tokio::test]
async fn claim_settle_and_retry_step_by_step() -> Res {
    let q = Queue::planned(&[
        (TREATMENT, None),
        (TREATMENT, None),
        (TREATMENT, None),
        (TREATMENT, None),
        (CONTROL, None),
    ])
    .await?;
    assert_eq!(
        q.snapshot().await?,
        "s0 pending [queued: attempt 0, lease -, due +0m]\n\
         s1 pending [queued: attempt 0, lease -, due +0m]\n\
         s2 pending [queued: attempt 0, lease -, due +0m]\n\
         s3 pending [queued: attempt 0, lease -, due +0m]\n\
         s4 held\n"
    );

    // Two workers: the second gets only what the first did not.
    assert_eq!(q.claim("A", T0, MINUTE, 2).await?, [(0, 1), (1, 1)]);
    assert_eq!(q.claim("B", T0, MINUTE, 10).await?, [(2, 1), (3, 1)]);
    assert_eq!(q.claim("C", T0, MINUTE, 10).await?, []);
    assert_eq!(
        q.snapshot().await?,
        "s0 sending [queued: attempt 1, lease A, due +0m]\n\
         s1 sending [queued: attempt 1, lease A, due +0m]\n\
         s2 sending [queued: attempt 1, lease B, due +0m]\n\
         s3 sending [queued: attempt 1, lease B, due +0m]\n\
         s4 held\n"
    );

    // A token settles only its own rows.
    assert_eq!(q.settle("A", &[(2, sent(T0))]).await?, 0);
    assert_eq!(q.settle("A", &[(0, sent(T0)), (1, sent(T0))]).await?, 2);
    let retry = Outcome::Retry {
        due_at: T0 + 5 * MINUTE,
        error: "503".into(),
    };
    let refused = Outcome::Failed {
        error: "Not routable".into(),
    };
    assert_eq!(q.settle("B", &[(2, retry), (3, refused)]).await?, 2);
    assert_eq!(
        q.snapshot().await?,
        "s0 sent (attempts 1)\n\
         s1 sent (attempts 1)\n\
         s2 pending [queued: attempt 1, lease -, due +5m]\n\
         s3 failed (attempts 1)\n\
         s4 held\n"
    );

    // The retry is not due before its time; then it goes out as attempt 2.
    assert_eq!(q.claim("D", T0 + MINUTE, MINUTE, 10).await?, []);
    assert_eq!(q.claim("E", T0 + 5 * MINUTE, MINUTE, 10).await?, [(2, 2)]);
    assert_eq!(q.settle("E", &[(2, sent(T0 + 5 * MINUTE))]).await?, 1);
    assert_eq!(
        q.snapshot().await?,
        "s0 sent (attempts 1)\n\
         s1 sent (attempts 1)\n\
         s2 sent (attempts 2)\n\
         s3 failed (attempts 1)\n\
         s4 held\n"
    );
    let counts = q.store.state_counts(Some(q.run_id)).await?;
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [
            ("failed".to_owned(), 1),
            ("held".to_owned(), 1),
            ("sent".to_owned(), 3)
        ]
    );
    assert_eq!(q.store.pending_in_wave(q.wave_run_id).await?, 0);
    Ok(())
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_the_old_token_settles_nothing() -> Res {
    let q = Queue::planned(&[(TREATMENT, None)]).await?;
    assert_eq!(q.claim("A", T0, MINUTE, 10).await?, [(0, 1)]);
    // Still leased: nobody else gets it.
    assert_eq!(q.claim("B", T0 + MINUTE / 2, MINUTE, 10).await?, []);
    // A's lease ran out (A died or stalled): B takes it without any reclaim pass.
    assert_eq!(q.claim("B", T0 + 2 * MINUTE, MINUTE, 10).await?, [(0, 2)]);
    assert_eq!(
        q.settle("A", &[(0, sent(T0))]).await?,
        0,
        "A lost the lease"
    );
    assert_eq!(
        q.snapshot().await?,
        "s0 sending [queued: attempt 2, lease B, due +0m]\n"
    );
    assert_eq!(q.settle("B", &[(0, sent(T0 + 2 * MINUTE))]).await?, 1);
    assert_eq!(q.snapshot().await?, "s0 sent (attempts 2)\n");
    Ok(())
}

/// Guards the lease token on a RETRY settle (`... AND lease_token = ?` in `Store::settle`):
/// a stale worker's transient failure must not take the row back from the worker that holds
/// it now (clearing its lease and pushing its due time), or a third worker would claim and
/// send it while the second is still sending.
#[tokio::test]
async fn a_stale_retry_settle_leaves_the_new_holders_lease_alone() -> Res {
    let q = Queue::planned(&[(TREATMENT, None)]).await?;
    assert_eq!(q.claim("A", T0, MINUTE, 10).await?, [(0, 1)]);
    assert_eq!(q.claim("B", T0 + 2 * MINUTE, MINUTE, 10).await?, [(0, 2)]);
    let retry = Outcome::Retry {
        due_at: T0 + 60 * MINUTE,
        error: "A timed out".into(),
    };
    assert_eq!(q.settle("A", &[(0, retry)]).await?, 0, "A lost the lease");
    assert_eq!(
        q.snapshot().await?,
        "s0 sending [queued: attempt 2, lease B, due +0m]\n"
    );
    // Nobody else can claim it while B's lease is live.
    assert_eq!(q.claim("C", T0 + 2 * MINUTE + 1, MINUTE, 10).await?, []);
    Ok(())
}

#[tokio::test]
async fn the_reclaim_pass_clears_only_leases_that_ran_out() -> Res {
    let q = Queue::planned(&[(TREATMENT, None), (TREATMENT, None)]).await?;
    assert_eq!(q.claim("A", T0, MINUTE, 1).await?, [(0, 1)]);
    assert_eq!(q.claim("B", T0, 10 * MINUTE, 1).await?, [(1, 1)]);
    assert_eq!(
        q.store
            .reclaim_expired_leases("sms", T0 + 2 * MINUTE)
            .await?,
        1
    );
    assert_eq!(
        q.snapshot().await?,
        "s0 pending [queued: attempt 1, lease -, due +0m]\n\
         s1 sending [queued: attempt 1, lease B, due +0m]\n"
    );
    Ok(())
}

#[tokio::test]
async fn a_delivery_report_that_beats_the_settle_wins() -> Res {
    let q = Queue::planned(&[(TREATMENT, None), (TREATMENT, None)]).await?;
    assert_eq!(q.claim("A", T0, MINUTE, 10).await?, [(0, 1), (1, 1)]);
    // The gateway reports s0 delivered before A has settled the batch.
    let id = q.contact_id(0).await?;
    assert!(q.store.record_delivery(id, true, T0 + 1, None).await?);
    assert_eq!(q.settle("A", &[(0, sent(T0)), (1, sent(T0))]).await?, 1);
    let snap = q.snapshot().await?;
    assert_eq!(snap, "s0 delivered\ns1 sent (attempts 1)\n");
    // Even once the lease is long gone, nothing is left to send again.
    assert_eq!(q.claim("B", T0 + 60 * MINUTE, MINUTE, 10).await?, []);
    Ok(())
}

/// `Store::settle_noting_sent` remembers the keys of a group settled `sent` only when every
/// outcome changed its contact: an acknowledgement of a remembered key is not stored
/// (`store::sent_keys`), so a contact left `pending` under another worker's lease, whose
/// acknowledgement that worker needs as proof before sending again, must never be among them.
#[tokio::test]
async fn only_contacts_a_committed_settle_moved_to_sent_are_remembered() -> Res {
    let q = Queue::planned(&[(TREATMENT, None); 6]).await?;
    let remembered = async |i: usize| -> Res<bool> {
        let key = q
            .store
            .contact_key(q.run_id, "w", q.subs[i])
            .await?
            .ok_or("no contact")?;
        Ok(q.store.sent_keys().contains(&key))
    };
    assert_eq!(q.claim("A", T0, MINUTE, 2).await?, [(0, 1), (1, 1)]);
    assert_eq!(
        q.settle_noting("A", &[(0, sent(T0)), (1, sent(T0))])
            .await?,
        2
    );
    assert!(remembered(0).await? && remembered(1).await?);

    // s2's lease runs out and B takes it; A then settles s2 with s3, which it still holds.
    assert_eq!(q.claim("A", T0, MINUTE, 1).await?, [(2, 1)]);
    assert_eq!(q.claim("B", T0 + 2 * MINUTE, MINUTE, 1).await?, [(2, 2)]);
    assert_eq!(q.claim("A", T0 + 2 * MINUTE, MINUTE, 1).await?, [(3, 1)]);
    assert_eq!(
        q.settle_noting("A", &[(2, sent(T0)), (3, sent(T0))])
            .await?,
        1,
        "s3 only: s2 is B's"
    );
    assert!(
        !remembered(2).await?,
        "s2 is still pending under B's lease: its acknowledgement is B's proof"
    );
    assert!(!remembered(3).await?, "one group, all or nothing");

    // Only `sent` outcomes are remembered, even when every outcome changed its row.
    assert_eq!(
        q.claim("C", T0 + 2 * MINUTE, MINUTE, 2).await?,
        [(4, 1), (5, 1)]
    );
    let retry = Outcome::Retry {
        due_at: T0 + 10 * MINUTE,
        error: "503".into(),
    };
    assert_eq!(
        q.settle_noting("C", &[(4, retry), (5, sent(T0 + 2 * MINUTE))])
            .await?,
        2
    );
    assert!(!remembered(4).await? && remembered(5).await?);
    assert_eq!(
        q.snapshot().await?,
        "s0 sent (attempts 1)\n\
         s1 sent (attempts 1)\n\
         s2 sending [queued: attempt 2, lease B, due +0m]\n\
         s3 sent (attempts 1)\n\
         s4 pending [queued: attempt 1, lease -, due +10m]\n\
         s5 sent (attempts 1)\n"
    );

    // Keys must match the outcomes one for one.
    let id = q.contact_id(2).await?;
    assert!(
        q.store
            .settle_noting_sent("B", &[(id, sent(T0))], &[], T0)
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn a_delivery_report_for_a_contact_never_claimed_is_not_believed() -> Res {
    let q = Queue::planned(&[(TREATMENT, None)]).await?;
    let id = q.contact_id(0).await?;
    assert!(!q.store.record_delivery(id, true, T0, None).await?);
    assert_eq!(
        q.snapshot().await?,
        "s0 pending [queued: attempt 0, lease -, due +0m]\n"
    );
    Ok(())
}

#[tokio::test]
async fn expiry_leaves_a_leased_contact_to_its_worker() -> Res {
    let by = Some(T0 + 10 * MINUTE);
    let q = Queue::planned(&[(TREATMENT, by), (TREATMENT, by)]).await?;
    assert_eq!(q.claim("A", T0, 30 * MINUTE, 1).await?, [(0, 1)]);
    assert_eq!(q.store.expire_overdue(T0 + 20 * MINUTE).await?, 1);
    assert_eq!(
        q.snapshot().await?,
        "s0 sending [queued: attempt 1, lease A, due +0m]\n\
         s1 expired\n"
    );
    // Past the deadline nothing is claimed, even a row whose lease ran out.
    assert_eq!(q.claim("B", T0 + 40 * MINUTE, MINUTE, 10).await?, []);
    assert_eq!(q.store.expire_overdue(T0 + 40 * MINUTE).await?, 1);
    assert_eq!(q.snapshot().await?, "s0 expired\ns1 expired\n");
    Ok(())
}

#[tokio::test]
async fn planning_again_queues_nothing_twice() -> Res {
    let arms = [(TREATMENT, None), (TREATMENT, None), (CONTROL, None)];
    let q = Queue::planned(&arms).await?;
    assert_eq!(q.claim("A", T0, MINUTE, 1).await?, [(0, 1)]);
    assert_eq!(q.settle("A", &[(0, sent(T0))]).await?, 1);
    assert_eq!(q.plan(&arms).await?, 0, "every contact is already there");
    assert_eq!(
        q.snapshot().await?,
        "s0 sent (attempts 1)\n\
         s1 pending [queued: attempt 0, lease -, due +0m]\n\
         s2 held\n"
    );
    Ok(())
}

/// An upgrade from the schema before the queue table: queued and in-flight contacts move
/// into the queue (a lease kept), finished ones do not.
#[tokio::test]
async fn the_upgrade_moves_unfinished_contacts_into_the_queue() -> Res {
    use sea_orm_migration::MigratorTrait;
    let dir = tempfile::tempdir()?;
    let db = store::testing::fresh_database(store::testing::backend()?, dir.path()).await?;
    let store = db.connect().await?;
    // The schema as it was before migration 5 (the queue table), with rows written as that
    // schema takes them: in plain SQL, because today's store API writes tables and columns
    // of later migrations (consent records, who loaded a version).
    migrations::Migrator::up(store.db(), Some(4)).await?;
    let raw = |sql: &'static str, values: Vec<sea_orm::Value>| {
        let store = store.clone();
        async move {
            store
                .db()
                .execute_raw(store::stmt(store.db(), sql, values))
                .await
        }
    };
    for i in 0..4 {
        raw(
            "INSERT INTO subscriber (msisdn, name, gender, age, region, brand, value_tier, arpu_3m, balance, tenure_months, student_stage, first_channel, first_channel_slot, second_channel, second_channel_slot, complaints_30d, do_not_disturb, churn_risk, opt_out, updated_at) \
             VALUES (?, 'Test', 'f', 20, 'north', 'mzone', 'ordinary', 50.0, 10.0, 12, 'student', 'sms', 'evening', 'call', 'noon', 0, ?, 0.1, ?, ?)",
            vec![format!("1390000{i:04}").into(), false.into(), false.into(), T0.into()],
        )
        .await?;
    }
    raw(
        "INSERT INTO workflow_version (campaign, hash, source, loaded_at) VALUES ('c', 'h', 'campaign: c', ?)",
        vec![T0.into()],
    )
    .await?;
    raw(
        "INSERT INTO run (campaign, version_id, trigger, state, started_at) VALUES ('c', 1, 'manual', 'running', ?)",
        vec![T0.into()],
    )
    .await?;
    raw(
        "INSERT INTO wave_run (run_id, wave, ordinal, channel, state) VALUES (1, 'w', 0, 'sms', 'open')",
        vec![],
    )
    .await?;
    let (run_id, wave_run_id) = (1_i64, 1_i64);
    let subs: Vec<String> = (0..4).map(|i| format!("1390000{i:04}")).collect();
    let old = [
        ("pending", 0, None, None),
        ("sending", 1, Some(T0 + MINUTE), Some("old-worker:1")),
        ("sent", 1, None, Some("old-worker:0")),
        ("held", 0, None, None),
    ];
    for (i, (state, attempt, lease_until, token)) in old.iter().enumerate() {
        let sub = store
            .subscriber_by_msisdn(&subs[i])
            .await?
            .ok_or("subscriber missing")?;
        let arm = if *state == "held" { CONTROL } else { TREATMENT };
        store
            .db()
            .execute_raw(store::stmt(
                store.db(),
                "INSERT INTO contact (run_id, wave_run_id, subscriber_id, arm, channel, state, attempt, due_at, send_by, lease_until, lease_token, idem_key, stratum) \
                 VALUES (?, ?, ?, ?, 'sms', ?, ?, ?, NULL, ?, ?, ?, 'all')",
                [
                    run_id.into(),
                    wave_run_id.into(),
                    sub.into(),
                    arm.into(),
                    (*state).into(),
                    (*attempt).into(),
                    T0.into(),
                    (*lease_until).into(),
                    token.map(str::to_owned).into(),
                    store::contacts::new_idem_key(run_id, "w", sub).into(),
                ],
            ))
            .await?;
    }
    store.migrate().await?;
    let states: Vec<String> = store
        .contact_states(wave_run_id)
        .await?
        .into_iter()
        .map(|(_, _, s)| s)
        .collect();
    assert_eq!(states, ["pending", "sending", "sent", "held"]);
    // The in-flight contact keeps its lease: nobody else takes it before the lease ends.
    let claim = |token: &'static str, now: i64| ClaimRequest {
        channel: "sms",
        limit: 10,
        lease_until: now + MINUTE,
        token,
        now,
        proof_grace: 0,
    };
    let first = store.claim(&claim("new", T0)).await?;
    assert_eq!(first.len(), 1, "only the queued contact is free");
    assert_eq!(first[0].attempt, 1);
    let later = store.claim(&claim("later", T0 + 2 * MINUTE)).await?;
    assert_eq!(later.len(), 2, "the old lease ran out; the other lease too");
    assert!(later.iter().any(|c| c.attempt == 2));
    Ok(())
}

/// Strata and decision reasons are free text: quotes, commas, braces, backslashes, blanks
/// and the word NULL arrive as written (PostgreSQL sends each column as one array literal),
/// and so do experiment variants, on the contact and on the row the dispatcher claims.
#[tokio::test]
async fn contact_and_decision_text_arrives_as_written() -> Res {
    let q = Queue::planned(&[]).await?;
    let rows: Vec<NewSubscriber> = (0..6)
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")))
        .collect();
    q.store
        .insert_subscribers(&rows, OnDuplicate::Fail, T0)
        .await?;
    let mut ids = Vec::new();
    for r in &rows {
        ids.push(
            q.store
                .subscriber_by_msisdn(&r.msisdn)
                .await?
                .ok_or("missing")?,
        );
    }
    let texts = ["a \"b\"", "x,y", "{z}", "back\\slash", "NULL", ""];
    let contacts: Vec<NewContact> = ids
        .iter()
        .zip(texts)
        .enumerate()
        .map(|(i, (id, t))| NewContact {
            subscriber_id: *id,
            arm: if i % 2 == 0 {
                Arm::Treatment
            } else {
                Arm::Control
            },
            due_at: T0 + i as i64,
            send_by: (i % 3 != 0).then_some(T0 + MINUTE),
            stratum: t.into(),
            // Variant names are checked by the workflow compiler, but the column is text
            // like the stratum; the word NULL must not come back as SQL NULL, nor None as
            // the word.
            variant: (i != 1).then(|| t.to_owned()),
            // A preferred route on one treatment and one control contact: the channel and
            // slots arrive as written; a control contact keeps no fallback.
            route: (i == 3 || i == 4).then(|| {
                store::contacts::Route::new(
                    domain::ChannelKind::Sms,
                    domain::TimeSlot::parse("09:00-12:00"),
                    Some((
                        domain::ChannelKind::Email,
                        domain::TimeSlot::parse("18:00-21:00"),
                    )),
                )
            }),
        })
        .collect();
    let decisions: Vec<(i64, &str)> = ids.iter().copied().zip(texts).collect();
    let tx = q.store.db().begin().await?;
    let n = insert_contacts(
        &tx,
        &store::contacts::WaveContacts {
            run_id: q.run_id,
            wave_run_id: q.wave_run_id,
            wave: "w",
            channel: "sms",
            purpose: store::contacts::Purpose::Marketing,
            at_most_once: false,
        },
        &contacts,
    )
    .await?;
    store::contacts::insert_decisions(&tx, q.wave_run_id, &decisions).await?;
    tx.commit().await?;
    assert_eq!(n, 6);
    let db = q.store.db();
    let sql = "SELECT c.subscriber_id, c.arm, c.state, c.due_at, c.send_by, c.stratum, c.variant, d.reason, \
         c.channel, c.choice, c.slot, c.fallback_channel, c.fallback_slot, \
         (SELECT COUNT(*) FROM dispatch q WHERE q.contact_id = c.id) AS queued \
         FROM contact c JOIN decision d ON d.subscriber_id = c.subscriber_id AND d.wave_run_id = c.wave_run_id \
         ORDER BY c.subscriber_id";
    let got = db.query_all_raw(store::stmt(db, sql, [])).await?;
    assert_eq!(got.len(), 6);
    for (r, (want, t)) in got.iter().zip(contacts.iter().zip(texts)) {
        assert_eq!(r.try_get::<i64>("", "subscriber_id")?, want.subscriber_id);
        assert_eq!(r.try_get::<String>("", "arm")?, want.arm.as_str());
        let state: String = r.try_get("", "state")?;
        let queued: i64 = r.try_get("", "queued")?;
        match want.arm {
            Arm::Treatment => assert_eq!((state.as_str(), queued), ("pending", 1)),
            Arm::Control => assert_eq!((state.as_str(), queued), ("held", 0)),
        }
        assert_eq!(r.try_get::<i64>("", "due_at")?, want.due_at);
        assert_eq!(r.try_get::<Option<i64>>("", "send_by")?, want.send_by);
        assert_eq!(r.try_get::<String>("", "stratum")?, t);
        assert_eq!(r.try_get::<String>("", "reason")?, t);
        assert_eq!(r.try_get::<Option<String>>("", "variant")?, want.variant);
        let routed = want.route.is_some();
        let treated = want.arm == Arm::Treatment;
        let route: (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = (
            r.try_get("", "channel")?,
            r.try_get("", "choice")?,
            r.try_get("", "slot")?,
            r.try_get("", "fallback_channel")?,
            r.try_get("", "fallback_slot")?,
        );
        let text = |s: &str| Some(s.to_owned());
        assert_eq!(
            route,
            (
                "sms".to_owned(),
                "first".to_owned(),
                routed.then(|| "09:00-12:00".to_owned()),
                if routed && treated {
                    text("email")
                } else {
                    None
                },
                if routed && treated {
                    text("18:00-21:00")
                } else {
                    None
                },
            )
        );
    }
    let claimed = q
        .store
        .claim(&ClaimRequest {
            channel: "sms",
            limit: 10,
            lease_until: T0 + MINUTE,
            token: "variants",
            now: T0 + 10,
            proof_grace: 0,
        })
        .await?;
    let mut got: Vec<(i64, Option<String>)> = claimed
        .into_iter()
        .map(|c| (c.subscriber_id, c.variant))
        .collect();
    got.sort();
    let mut want: Vec<(i64, Option<String>)> = contacts
        .iter()
        .filter(|c| c.arm == Arm::Treatment)
        .map(|c| (c.subscriber_id, c.variant.clone()))
        .collect();
    want.sort();
    assert_eq!(got, want);
    Ok(())
}

/// Guards the set-based `record_reports`: reports in one call apply in order (a contact's
/// second report sees its first), only forward, and never to a contact that was not claimed;
/// a failure reason of any text arrives as written (PostgreSQL sends the round as arrays).
#[tokio::test]
async fn a_batch_of_reports_applies_in_order_and_only_forward() -> Res {
    use store::inbound::{Report, ReportChange};
    let q = Queue::planned(&[(TREATMENT, None), (TREATMENT, None), (TREATMENT, None)]).await?;
    // s0 and s1 are claimed; s2 never is.
    assert_eq!(q.claim("A", T0, MINUTE, 2).await?, [(0, 1), (1, 1)]);
    let (c0, c1, c2) = (
        q.contact_id(0).await?,
        q.contact_id(1).await?,
        q.contact_id(2).await?,
    );
    let reason = r#"undeliverable, "x" {NULL} \ 'y'"#;
    let report = |contact_id, change, at| Report {
        contact_id,
        change,
        at,
    };
    let changed = q
        .store
        .record_reports(&[
            report(c0, ReportChange::Submitted, T0 + 1),
            report(c1, ReportChange::Undelivered(reason.into()), T0 + 2),
            report(c0, ReportChange::Delivered, T0 + 3),
            report(c2, ReportChange::Delivered, T0 + 4),
            report(c1, ReportChange::Delivered, T0 + 5),
            report(c0, ReportChange::Submitted, T0 + 6),
        ])
        .await?;
    assert_eq!(changed, [true, true, true, false, false, false]);
    assert_eq!(
        q.snapshot().await?,
        "s0 delivered\ns1 undelivered\ns2 pending [queued: attempt 0, lease -, due +0m]\n"
    );
    assert_eq!(
        q.store.contact_errors(q.wave_run_id).await?,
        [(q.subs[1], reason.to_owned())]
    );
    // The dispatcher's settle comes late and changes nothing.
    assert_eq!(q.settle("A", &[(0, sent(T0)), (1, sent(T0))]).await?, 0);
    Ok(())
}

/// An inbound row as read back: source, key, kind, value, payload.
type StoredRow = (String, Option<String>, String, Option<String>, String);

/// Guards `insert_inbound_known` (the API's group commit) and `contacts_by_keys`: in one
/// batch, rows without a key and rows whose key is a contact's are stored, as written, and
/// only those; each row's answer is its own.
#[tokio::test]
async fn callbacks_are_stored_only_under_contact_keys() -> Res {
    use store::inbound::{NewInbound, source};
    let q = Queue::planned(&[(TREATMENT, None), (TREATMENT, None)]).await?;
    let mut keys = Vec::new();
    for i in 0..2 {
        keys.push(
            q.store
                .contact_key(q.run_id, "w", q.subs[i])
                .await?
                .ok_or("a contact key")?,
        );
    }
    let (k0, k1) = (keys[0].clone(), keys[1].clone());
    let row = |source: &'static str, key: Option<&str>, kind: &str, payload: &str| NewInbound {
        source,
        idem_key: key.map(str::to_owned),
        msisdn: None,
        kind: kind.to_owned(),
        value: Some(r#"a "quoted", {braced} \ value"#.to_owned()),
        payload: payload.to_owned(),
        received_at: T0,
    };
    let rows = [
        row(
            source::DLR,
            Some(&k0),
            "8",
            r#"{"type":"8","reply":"NULL, \"x\""}"#,
        ),
        row(source::DLR, Some("r9-w-s9-unknown"), "1", "{}"),
        row(source::MO, None, "reply", r#"{"text":"STOP"}"#),
        row(source::DLR, Some(&k1), "1", "{}"),
        row(source::DLR, Some(&k0), "1", "{}"),
    ];
    let stored = q.store.insert_inbound_known(&rows).await?;
    assert_eq!(stored, [true, false, true, true, true]);
    let back = q
        .store
        .db()
        .query_all_raw(store::stmt(
            q.store.db(),
            "SELECT source, idem_key, kind, value, payload FROM inbound ORDER BY id",
            [],
        ))
        .await?;
    let back: Vec<StoredRow> = back
        .iter()
        .map(|r| {
            Ok((
                r.try_get("", "source")?,
                r.try_get("", "idem_key")?,
                r.try_get("", "kind")?,
                r.try_get("", "value")?,
                r.try_get("", "payload")?,
            ))
        })
        .collect::<Result<_, sea_orm::DbErr>>()?;
    let want: Vec<_> = rows
        .iter()
        .zip(&stored)
        .filter(|(_, s)| **s)
        .map(|(r, _)| {
            (
                r.source.to_owned(),
                r.idem_key.clone(),
                r.kind.clone(),
                r.value.clone(),
                r.payload.clone(),
            )
        })
        .collect();
    assert_eq!(back, want);

    let found = q
        .store
        .contacts_by_keys(&[&k1, "r9-w-s9-unknown", &k0, &k1])
        .await?;
    let mut ids: Vec<(&str, i64)> = found.iter().map(|(k, c)| (k.as_str(), c.id)).collect();
    ids.sort_unstable();
    let mut want = vec![
        (k0.as_str(), q.contact_id(0).await?),
        (k1.as_str(), q.contact_id(1).await?),
    ];
    want.sort_unstable();
    assert_eq!(ids, want);
    Ok(())
}
