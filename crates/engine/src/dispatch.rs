//! One dispatcher round for one channel: claim (one statement, leased), check the policy
//! again at send time, render, send with no transaction open, settle with the lease token.

use std::collections::HashMap;
use std::sync::Arc;

use channels::{Channel, Outbound, SendError};
use chrono::{DateTime, Utc};
use rand::Rng;
use store::contacts::{ClaimRequest, Claimed, Outcome};
use tracing::{Instrument, info_span, warn};

use crate::breaker::{Admit, Breaker, Transition, Verdict};
use crate::{Engine, EngineError, FailPoint};

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundStats {
    pub claimed: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub expired: u64,
    pub suppressed: u64,
    /// Claimed again, but the gateway had reported on them: recorded as sent, not resent.
    pub reconciled: u64,
    /// At-most-once contacts whose send was ambiguous: recorded `unknown`, not resent.
    pub unknown: u64,
    /// The gateway asked to slow down: due again after its Retry-After, attempt given back.
    pub deferred: u64,
    /// The channel's circuit breaker held the round back: nothing was claimed.
    pub held: bool,
}

/// How long the gateway's answers are held for a database that does not take them. Past
/// this (or on any other error) they are dropped, and their messages are reconciled like
/// after a crash (the proof grace, the reports).
const HOLD_ANSWERS_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// Longest pause between tries to write held answers.
const HOLD_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// How long the settle waits for more answers before writing a group smaller than
/// [`SETTLE_GROUP`] while answers are still to come. Each group is a transaction (on
/// SQLite four hops to the connection's thread: `BEGIN`, `UPDATE`, `DELETE`, `COMMIT`);
/// without a wait a group is whatever came during the previous write, a few answers at
/// Kannel's pace. The wait only delays when an answer is written (the message is in
/// doubt that much longer if the process dies), not the sending.
const SETTLE_LINGER: std::time::Duration = std::time::Duration::from_millis(3);
/// A group this large is written at once.
const SETTLE_GROUP: usize = 64;

/// Counts a round as holding answers for as long as it lives (see `Engine::owes_writes`);
/// dropped on every way out of the round, an error included.
struct Holding<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Holding<'a> {
    fn new(rounds: &'a std::sync::atomic::AtomicUsize) -> Self {
        rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Holding(rounds)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// When a group of answers is written, and the channel's proof grace, in clock milliseconds.
#[derive(Debug, Clone, Copy)]
struct Timing {
    sent_at: i64,
    grace: i64,
}

impl RoundStats {
    /// Adds `o`'s counts (destructured, so a new field cannot be forgotten here).
    fn add(&mut self, o: &RoundStats) {
        let RoundStats {
            claimed,
            sent,
            retried,
            failed,
            expired,
            suppressed,
            reconciled,
            unknown,
            deferred,
            held,
        } = o;
        self.claimed += claimed;
        self.sent += sent;
        self.retried += retried;
        self.failed += failed;
        self.expired += expired;
        self.suppressed += suppressed;
        self.reconciled += reconciled;
        self.unknown += unknown;
        self.deferred += deferred;
        self.held |= held;
    }
}

impl Engine {
    /// Claims and sends one batch of due contacts on `channel`. Public so tests can drain
    /// the queue step by step.
    pub async fn dispatch_round(&self, kind: &str) -> Result<RoundStats, EngineError> {
        let Some(channel) = self.channels.get(kind).cloned() else {
            return Err(EngineError::NoChannel(kind.to_owned()));
        };
        if self.owes_writes() {
            // Held answers and spooled reports first: a row whose lease ran out in an
            // outage may be one of theirs, and claiming it would send it again.
            return Ok(RoundStats::default());
        }
        let now = self.clock.now(&self.store).await?;
        // An open breaker claims nothing: the contacts wait in the queue with their
        // attempts untouched (a claim is what spends an attempt).
        let admit = self.with_breaker(kind, |b| b.admit(now));
        let probe = admit == Admit::Probe;
        let limit = match admit {
            Admit::Batch => self.cfg.batch_size,
            Admit::Probe => 1,
            Admit::Wait(_) => {
                return Ok(RoundStats {
                    held: true,
                    ..Default::default()
                });
            }
        };
        let token = format!("{}:{}", self.cfg.worker_id, uuid::Uuid::new_v4());
        let claimed = self
            .store
            .claim(&ClaimRequest {
                channel: kind,
                limit,
                lease_until: now + self.clock.span_of(self.cfg.lease),
                token: &token,
                now,
                proof_grace: self.clock.span_of(channel.proof_grace()),
            })
            .await;
        let claimed = match claimed {
            Ok(c) if !c.is_empty() => c,
            other => {
                if probe {
                    self.end_probe(kind);
                }
                return other.map(|_| RoundStats::default()).map_err(Into::into);
            }
        };
        let span = info_span!("dispatch", channel = kind, batch = claimed.len(), token = %token);
        let res = async {
            self.failpoints.reach(FailPoint::AfterClaim).await?;
            self.send_claimed(kind, channel, claimed, &token, now).await
        }
        .instrument(span)
        .await;
        // A probe that sent nothing (its contact was suppressed, or the round failed)
        // gave no verdict: the next round probes. Only the probing round may say so: an
        // ordinary round ending meanwhile must not let a second probe out.
        if probe {
            self.end_probe(kind);
        }
        res
    }

    /// Runs `f` on `kind`'s breaker and logs the transition it made, if any.
    fn with_breaker<T>(
        &self,
        kind: &str,
        f: impl FnOnce(&mut Breaker) -> (T, Option<Transition>),
    ) -> T {
        let Some(b) = self.breakers.get(kind) else {
            // Every configured channel has one; a test channel added later does not.
            return f(&mut Breaker::new(Default::default())).0;
        };
        let (out, t) = {
            let mut b = b.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut b)
        };
        if let Some(t) = t {
            log_transition(kind, &t);
        }
        out
    }

    fn end_probe(&self, kind: &str) {
        self.with_breaker(kind, |b| {
            b.abandon_probe();
            ((), None)
        });
    }

    /// The state of every channel's breaker, for health and status.
    pub fn breaker_states(&self) -> Vec<(String, crate::breaker::State)> {
        let mut out: Vec<_> = self
            .breakers
            .iter()
            .map(|(k, b)| {
                let b = b.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                (k.clone(), b.state().clone())
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The derived attributes the batch's templates show, per (subscriber, field): computed
    /// in one query per wave by the SQL filters use, so a message shows what selected it.
    async fn derived_for_templates(
        &self,
        claimed: &[Claimed],
        now: i64,
    ) -> Result<HashMap<(i64, String), String>, EngineError> {
        let mut groups: HashMap<(i64, i64, &str), Vec<i64>> = HashMap::new();
        for c in claimed {
            groups
                .entry((c.run_id, c.version_id, c.wave.as_str()))
                .or_default()
                .push(c.subscriber_id);
        }
        let mut out = HashMap::new();
        for ((run_id, version_id, wave), ids) in groups {
            let wf = self
                .catalog
                .for_run(&self.store, run_id, version_id)
                .await?;
            let Some(w) = wf.wave(wave) else { continue };
            let mut names: Vec<&str> = w
                .templates()
                .flat_map(|t| t.fields())
                .filter(|f| wf.catalogue.derived(f).is_some())
                .collect();
            names.sort_unstable();
            names.dedup();
            if names.is_empty() {
                continue;
            }
            let values = self
                .store
                .derived_values(&wf.catalogue, &ids, &names, now)
                .await?;
            for (id, vs) in values {
                for (n, v) in names.iter().zip(vs) {
                    out.insert((id, (*n).to_owned()), v);
                }
            }
        }
        Ok(out)
    }

    async fn send_claimed(
        &self,
        kind: &str,
        channel: Arc<dyn Channel>,
        claimed: Vec<Claimed>,
        token: &str,
        now: i64,
    ) -> Result<RoundStats, EngineError> {
        let mut stats = RoundStats {
            claimed: claimed.len() as u64,
            ..Default::default()
        };
        let mut outcomes: Vec<(i64, Outcome)> = Vec::with_capacity(claimed.len());
        let mut to_send: Vec<Outbound> = Vec::with_capacity(claimed.len());
        // Per message: what deciding its retry needs.
        let mut attempts: Vec<Try> = Vec::with_capacity(claimed.len());
        let now_utc = DateTime::<Utc>::from_timestamp_millis(now).unwrap_or_else(Utc::now);
        let derived = self.derived_for_templates(&claimed, now).await?;
        // A contact claimed before (its worker died with the answer unrecorded, or the send
        // timed out) may have reached the gateway: a delivery report about it proves it did,
        // whether or not attribution has read that report yet.
        let again: Vec<&str> = claimed
            .iter()
            .filter(|c| c.attempt > 1)
            .map(|c| c.idem_key.as_str())
            .collect();
        let proved = if again.is_empty() {
            Default::default()
        } else {
            self.store.reported_keys(&again).await?
        };
        for c in claimed {
            if proved.contains(&c.idem_key) {
                outcomes.push((c.id, Outcome::Sent { at: now }));
                stats.reconciled += 1;
                continue;
            }
            let wf = self
                .catalog
                .for_run(&self.store, c.run_id, c.version_id)
                .await?;
            let Some(wave) = wf.wave(&c.wave) else {
                outcomes.push((
                    c.id,
                    Outcome::Failed {
                        error: format!("wave `{}` not in the run's workflow version", c.wave),
                    },
                ));
                stats.failed += 1;
                continue;
            };
            // The contact's channel is the loop's (`kind`): a preferred wave's contacts
            // are on each subscriber's own channel, not one of the wave's.
            let Some(contact_channel) = domain::ChannelKind::parse(kind) else {
                outcomes.push((
                    c.id,
                    Outcome::Failed {
                        error: format!("no channel `{kind}`"),
                    },
                ));
                stats.failed += 1;
                continue;
            };
            // The variant was fixed at planning against this same version, so a miss means a
            // stored row that does not match its version: failing it is the honest record.
            let Some(template) = wave.template_on(contact_channel, c.variant.as_deref()) else {
                outcomes.push((
                    c.id,
                    Outcome::Failed {
                        error: format!(
                            "wave `{}` has no message for variant {:?} on {kind}",
                            c.wave, c.variant
                        ),
                    },
                ));
                stats.failed += 1;
                continue;
            };
            // The policy is checked again at send time: an opt-out, or a lease held into
            // quiet hours, must stop the message even though planning allowed it. The
            // marketing opt-out does not stop care, nor an alert to staff.
            if c.subscriber.opt_out && wf.purpose.is_marketing() {
                outcomes.push((
                    c.id,
                    Outcome::Failed {
                        error: "subscriber opted out after planning".into(),
                    },
                ));
                stats.suppressed += 1;
                continue;
            }
            if c.send_by.is_some_and(|by| by < now) {
                outcomes.push((c.id, Outcome::Expired));
                stats.expired += 1;
                continue;
            }
            let tz = c
                .subscriber
                .timezone
                .as_deref()
                .and_then(|t| t.parse::<chrono_tz::Tz>().ok())
                .unwrap_or(wf.timezone);
            // A preferred-channel contact goes inside the subscriber's usual slot on its
            // channel (a fallback is written due at once and waits here for it); quiet
            // hours bind either way. The slot is a preference, the send-by a promise: when
            // the slot next opens after the deadline, the contact goes now rather than
            // expire (a fallback whose second slot comes too late, a claim that came late).
            let quiet = wf.policy.quiet_hours.as_ref();
            let anytime = audience::next_allowed(now_utc, quiet, tz);
            let allowed = match c.slot {
                Some(slot) => {
                    let in_slot = audience::next_in_slot(now_utc, slot, quiet, tz);
                    if c.send_by.is_some_and(|by| in_slot.timestamp_millis() > by) {
                        anytime
                    } else {
                        in_slot
                    }
                }
                None => anytime,
            };
            if allowed > now_utc {
                outcomes.push((
                    c.id,
                    Outcome::Retry {
                        due_at: allowed.timestamp_millis(),
                        error: if c.slot.is_some() {
                            "outside the subscriber's slot or in quiet hours".into()
                        } else {
                            "quiet hours".into()
                        },
                    },
                ));
                stats.retried += 1;
                continue;
            }
            let value = |f: &str| {
                derived
                    .get(&(c.subscriber_id, f.to_owned()))
                    .cloned()
                    .unwrap_or_else(|| c.subscriber.text(f))
            };
            let text = template.render(value);
            let subject = template.render_subject(value);
            // The address is read at send time, like the number: an address corrected
            // after planning is the one used. None (unreachable) is the channel's answer.

            let address = (contact_channel == domain::ChannelKind::Email)
                .then(|| wf.catalogue.email_address())
                .flatten()
                .map(|a| c.subscriber.text(&a.name))
                .filter(|a| !a.trim().is_empty());
            attempts.push(Try {
                attempt: c.attempt,
                at_most_once: wave.delivery.is_at_most_once(),
                send_by: c.send_by,
            });
            to_send.push(Outbound {
                contact_id: c.id,
                key: c.idem_key,
                subscriber_id: c.subscriber_id,
                msisdn: c.subscriber.msisdn,
                text,
                campaign: c.campaign,
                wave: c.wave,
                // A preferred wave's service task goes to its service staff, a call to
                // its call team.
                team: wave.team_on(contact_channel).map(str::to_owned),
                // Due by the engine's clock: the task step compares with the same clock.
                due_at: wave
                    .sla
                    .map(|sla| now.saturating_add(spec::duration_millis(sla))),
                escalate_to: wave.escalate_to.clone(),
                outcomes: if contact_channel.is_task() {
                    wf.outcomes.clone()
                } else {
                    Vec::new()
                },
                subject,
                address,
            });
        }
        // Decided before sending (suppressed, expired, quiet hours, unknown wave): settled
        // first, so the rows still leased are exactly the ones handed to the channel.
        if !outcomes.is_empty() {
            self.store.settle(token, &outcomes, now).await?;
        }
        if !to_send.is_empty() {
            self.send_and_settle(kind, channel, &to_send, &attempts, token, &mut stats)
                .await?;
        }
        Ok(stats)
    }

    /// Sends `to_send` and settles each result as the channel reports it, in groups of
    /// whatever arrived while the previous group was being written, and renews the lease
    /// of the rows not yet settled meanwhile. A crash leaves in doubt only the messages
    /// handed to the gateway whose answer was not yet written, and a slow gateway never
    /// lets the lease of a live worker run out.
    async fn send_and_settle(
        &self,
        kind: &str,
        channel: Arc<dyn Channel>,
        to_send: &[Outbound],
        attempts: &[Try],
        token: &str,
        stats: &mut RoundStats,
    ) -> Result<(), EngineError> {
        // A message the gateway may have taken is retried only after the time its proof of
        // submission would take to come back, so that proof can stop the retry.
        let grace = self.clock.span_of(channel.proof_grace());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let send = channel.send_each(to_send, tx);
        let mut unsettled: std::collections::BTreeSet<usize> = (0..to_send.len()).collect();
        let settle = async {
            let mut group: Vec<(usize, Result<channels::Accepted, SendError>)> = Vec::new();
            let mut renew = tokio::time::interval_at(
                tokio::time::Instant::now() + self.cfg.lease / 3,
                self.cfg.lease / 3,
            );
            loop {
                tokio::select! {
                    got = rx.recv() => match got {
                        Some(first) => group.push(first),
                        None => return Ok::<(), EngineError>(()),
                    },
                    _ = renew.tick() => {
                        let ids: Vec<i64> =
                            unsettled.iter().map(|i| to_send[*i].contact_id).collect();
                        // A renewal the database refuses is not fatal: the answers still
                        // come and are settled (by token) when it is back.
                        if let Err(e) = self.renew(token, &ids).await {
                            warn!(message = "Lease renewal failed.", error = %e);
                        }
                        continue;
                    }
                }
                while let Ok(more) = rx.try_recv() {
                    group.push(more);
                }
                // More to come and only a few here: gather a little longer (the last
                // answers of the batch go at once).
                if group.len() < SETTLE_GROUP.min(unsettled.len()) {
                    tokio::time::sleep(SETTLE_LINGER).await;
                    while let Ok(more) = rx.try_recv() {
                        group.push(more);
                    }
                }
                self.failpoints
                    .reach(FailPoint::AfterSendBeforeSettle)
                    .await?;
                // The gateway's answers are held until the database takes them: written
                // late, by token, they still keep their messages from being sent again
                // (a row another worker claimed meanwhile is not touched). The breaker
                // hears each answer once.
                let mut failures = 0u32;
                let mut heard = false;
                let holding_since = tokio::time::Instant::now();
                let mut holding: Option<Holding<'_>> = None;
                loop {
                    let mut counted = RoundStats::default();
                    let settled = async {
                        if self
                            .failpoints
                            .reach(FailPoint::DatabaseDownAtSettle)
                            .await
                            .is_err()
                        {
                            return Err(EngineError::Store(store::StoreError::Invalid(
                                "failure point: the database is down".into(),
                            )));
                        }
                        let sent_at = self.clock.now(&self.store).await?;
                        if !heard {
                            heard = true;
                            for (_, res) in &group {
                                let verdict = self.verdict_of(res);
                                let forced = self.with_breaker(kind, |b| {
                                    let t = b.record(sent_at, verdict);
                                    let forced = t
                                        .as_ref()
                                        .filter(|t| t.to == "forced_open")
                                        .map(|t| t.reason.clone());
                                    (forced, t)
                                });
                                if let Some(reason) = forced {
                                    self.alert_gateway_refused(kind, &reason, sent_at).await;
                                }
                            }
                        }
                        let at = Timing { sent_at, grace };
                        self.settle_group(token, to_send, attempts, &group, at, &mut counted)
                            .await
                    }
                    .await;
                    match settled {
                        Ok(()) => {
                            stats.add(&counted);
                            drop(holding.take());
                            break;
                        }
                        Err(EngineError::Store(e))
                            if holding_since.elapsed() < HOLD_ANSWERS_FOR =>
                        {
                            holding.get_or_insert_with(|| Holding::new(&self.held_rounds));
                            failures += 1;
                            // Short and steady: the rest of the process waits for these
                            // writes (`owes_writes`), so they go first once the database
                            // is back.
                            let pause =
                                crate::after_failures(self.cfg.poll, failures).min(HOLD_RETRY_MAX);
                            warn!(message = "Cannot record the gateway's answers yet; holding them.", answers = group.len(), error = %e, failures, retry_in_ms = pause.as_millis() as u64);
                            tokio::time::sleep(pause).await;
                            while let Ok(more) = rx.try_recv() {
                                group.push(more);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                for (idx, _) in group.drain(..) {
                    unsettled.remove(&idx);
                }
            }
        };
        // The sends run to their end even when settling fails: what the gateway took and
        // was not recorded stays leased, in doubt, and is reconciled like after a crash.
        let ((), settled) = tokio::join!(send, settle);
        settled
    }

    /// Queues the staff alert of a channel the gateway refused (see
    /// [`Engine::with_alerts`]). One per channel per hour across replicas (the dedup key);
    /// a database that cannot take it loses only the mail, not the ERROR already logged.
    async fn alert_gateway_refused(&self, kind: &str, reason: &str, now: i64) {
        if self.alert_to.is_empty() {
            return;
        }
        const HOUR_MS: i64 = 3_600_000;
        let mail = store::mail::NewMail {
            kind: store::mail::MailKind::Alert,
            dedup_key: format!("alert:gateway-refused:{kind}:{}", now.div_euclid(HOUR_MS)),
            recipients: self.alert_to.clone(),
            subject: format!("campaignd: the {kind} gateway refused campaignd; channel paused"),
            text: format!(
                "The {kind} gateway refused campaignd: {reason}\n\n\
                 The {kind} channel is paused on worker {worker}: nothing is claimed for it, \
                 queued contacts keep their attempts and wait (they still expire at their \
                 send-by deadline).\n\n\
                 What to do: fix the gateway account (the [sms] username, the password in \
                 the environment, or [sms] sendsms_url), then restart campaignd; the channel \
                 resumes. GET /readyz \
                 shows each channel's breaker.\n",
                worker = self.cfg.worker_id,
            ),
            html: None,
            due_at: now,
        };
        match self.store.enqueue_mail(&mail, now).await {
            Ok(_) => self.mail_wake.notify_one(),
            Err(e) => {
                warn!(message = "Could not queue the gateway-refused alert mail.", channel = kind, error = %e)
            }
        }
    }

    async fn renew(&self, token: &str, ids: &[i64]) -> Result<(), EngineError> {
        let until = self.clock.now(&self.store).await? + self.clock.span_of(self.cfg.lease);
        self.store.renew_lease(token, ids, until).await?;
        Ok(())
    }

    /// Writes one group of answers (their outcomes counted into `stats`).
    async fn settle_group(
        &self,
        token: &str,
        to_send: &[Outbound],
        attempts: &[Try],
        group: &[(usize, Result<channels::Accepted, SendError>)],
        at: Timing,
        stats: &mut RoundStats,
    ) -> Result<(), EngineError> {
        let outcomes: Vec<(i64, Outcome)> = group
            .iter()
            .map(|(idx, res)| {
                let o = &to_send[*idx];
                (
                    o.contact_id,
                    self.outcome_of(o, attempts[*idx], res, at, stats),
                )
            })
            .collect();
        // The keys let the API answer the gateway's acknowledgement of a contact settled
        // `sent` here without storing it (`store::sent_keys`).
        let keys: Vec<&str> = group
            .iter()
            .map(|(idx, _)| to_send[*idx].key.as_str())
            .collect();
        self.store
            .settle_noting_sent(token, &outcomes, &keys, at.sent_at)
            .await?;
        Ok(())
    }

    /// What one send result means for its contact.
    fn outcome_of(
        &self,
        o: &Outbound,
        t: Try,
        res: &Result<channels::Accepted, SendError>,
        at: Timing,
        stats: &mut RoundStats,
    ) -> Outcome {
        let Timing { sent_at, grace } = at;
        match res {
            Ok(_) => {
                stats.sent += 1;
                Outcome::Sent { at: sent_at }
            }
            // Not taken, and the gateway said when to come back: the channel pauses (the
            // breaker) and the contact waits that long without losing an attempt.
            Err(e @ SendError::Throttled { .. }) => {
                let due_at = sent_at + self.throttle_pause(e);
                if t.send_by.is_none_or(|by| due_at <= by) {
                    stats.deferred += 1;
                    return Outcome::Deferred {
                        due_at,
                        error: e.to_string(),
                    };
                }
                warn!(message = "Gateway throttled past the send-by deadline.", contact_id = o.contact_id, attempt = t.attempt, error = %e);
                stats.failed += 1;
                Outcome::Failed {
                    error: format!("{e}; gave up at the send-by deadline"),
                }
            }
            // The account, not the message: the breaker is forced open (the channel pauses,
            // the operator is alerted) and the contact waits in the queue, attempt given back.
            Err(e @ SendError::Refused(_)) => {
                stats.deferred += 1;
                Outcome::Deferred {
                    due_at: sent_at,
                    error: e.to_string(),
                }
            }
            // The gateway may have it: sending again could make two.
            Err(e @ SendError::Ambiguous(_)) if t.at_most_once => {
                warn!(message = "Send ambiguous; at most once, so not retried.", contact_id = o.contact_id, attempt = t.attempt, error = %e);
                stats.unknown += 1;
                Outcome::Unknown {
                    error: e.to_string(),
                }
            }
            Err(e @ (SendError::Transient(_) | SendError::Ambiguous(_))) => {
                let mut wait = self.backoff(t.attempt);
                // The gateway may have it (a timeout): wait out the proof grace, so its
                // acknowledgement (checked before the retry) can show it was taken.
                if matches!(e, SendError::Ambiguous(_)) {
                    wait = wait.max(grace);
                }
                let due_at = sent_at + wait;
                // Retried until the contact's send-by deadline, not for a fixed count: an
                // outage shorter than the wave's send_within costs no contact.
                let in_time = t.send_by.is_none_or(|by| due_at <= by);
                let capped = self.cfg.max_attempts.is_some_and(|max| t.attempt >= max);
                if in_time && !capped {
                    warn!(message = "Send failed; will retry.", contact_id = o.contact_id, attempt = t.attempt, error = %e);
                    stats.retried += 1;
                    return Outcome::Retry {
                        due_at,
                        error: e.to_string(),
                    };
                }
                let why = if capped {
                    format!("gave up after {} attempts (engine max_attempts)", t.attempt)
                } else {
                    format!(
                        "gave up at the send-by deadline after {} attempts",
                        t.attempt
                    )
                };
                warn!(message = "Send failed for good.", contact_id = o.contact_id, attempt = t.attempt, error = %e, why = %why);
                stats.failed += 1;
                Outcome::Failed {
                    error: format!("{e}; {why}"),
                }
            }
            Err(e) => {
                warn!(message = "Send failed for good.", contact_id = o.contact_id, attempt = t.attempt, error = %e);
                stats.failed += 1;
                Outcome::Failed {
                    error: e.to_string(),
                }
            }
        }
    }

    fn backoff(&self, attempt: i32) -> i64 {
        capped_backoff(
            self.cfg.retry_base,
            self.cfg.retry_max,
            attempt,
            &mut rand::rng(),
        )
    }
}

/// What deciding one message's retry needs.
#[derive(Debug, Clone, Copy)]
struct Try {
    attempt: i32,
    at_most_once: bool,
    /// The contact's send-by deadline (clock ms): retries stop there.
    send_by: Option<i64>,
}

/// The delay before retry number `attempt` (1 after the first send failed), in clock
/// milliseconds: exponential backoff with jitter, uniform in `[base/2, base * 2^attempt]`.
/// Never below half the base, so a gateway that refuses is not hammered; the exponent is
/// capped so a high attempt cannot overflow.
pub fn backoff_delay(retry_base: std::time::Duration, attempt: i32, rng: &mut impl Rng) -> i64 {
    let base = retry_base.as_millis() as i64;
    let cap = base.saturating_mul(1 << attempt.clamp(0, 16));
    rng.random_range(base / 2..=cap.max(base))
}

/// [`backoff_delay`] with its upper end capped at `max`: uniform in
/// `[min(base/2, max), min(base * 2^attempt, max)]`. The cap keeps a long outage from
/// pushing retries hours past the gateway's recovery; the jitter stays spread over the
/// whole range so that contacts that failed together do not come back together.
pub fn capped_backoff(
    retry_base: std::time::Duration,
    max: std::time::Duration,
    attempt: i32,
    rng: &mut impl Rng,
) -> i64 {
    let base = retry_base.as_millis() as i64;
    let max = (max.as_millis() as i64).max(1);
    let hi = base
        .saturating_mul(1 << attempt.clamp(0, 16))
        .max(base)
        .min(max);
    let lo = (base / 2).min(hi);
    rng.random_range(lo..=hi)
}

impl Engine {
    /// What one send result tells the breaker about the gateway.
    fn verdict_of(&self, res: &Result<channels::Accepted, SendError>) -> Verdict {
        match res {
            // A refusal of one message (a bad number) is an answer: the gateway is up.
            Ok(_) | Err(SendError::Permanent(_)) => Verdict::Answered,
            Err(e @ SendError::Refused(_)) => Verdict::Refused(e.to_string()),
            Err(e @ SendError::Throttled { .. }) => Verdict::Throttled {
                for_ms: self.throttle_pause(e),
                reason: e.to_string(),
            },
            Err(e @ (SendError::Transient(_) | SendError::Ambiguous(_))) => {
                Verdict::Transient(e.to_string())
            }
        }
    }

    /// How long (clock ms) a throttled channel pauses: the gateway's Retry-After, else the
    /// breaker's cool-down.
    fn throttle_pause(&self, e: &SendError) -> i64 {
        let asked = match e {
            SendError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        };
        self.clock
            .span_of(asked.unwrap_or(self.cfg.breaker_cool_down))
    }
}

fn log_transition(kind: &str, t: &Transition) {
    match t.to {
        "closed" => {
            tracing::info!(message = "Gateway circuit breaker closed; sending resumes.", channel = kind, from = t.from, reason = %t.reason)
        }
        "half_open" => tracing::info!(
            message = "Gateway circuit breaker half-open; sending one probe.",
            channel = kind,
            from = t.from
        ),
        "forced_open" => {
            tracing::error!(message = "Gateway refused campaignd; channel paused until an operator fixes its account.", channel = kind, from = t.from, reason = %t.reason)
        }
        _ => {
            warn!(message = "Gateway circuit breaker opened; not claiming for this channel.", channel = kind, from = t.from, reason = %t.reason)
        }
    }
}
