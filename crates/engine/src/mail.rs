//! The mail dispatcher: claims queued staff mails (`store::mail`, one statement, leased),
//! sends each through the configured `Mailer` with no transaction open, and settles it with
//! the lease token. A transient error retries with the engine's backoff until
//! [`crate::EngineConfig::mail_deadline`] after the mail was queued; a permanent one fails
//! the row. Bound: a crash between the server's accept and the settle sends that one mail
//! again once the lease runs out (same `Message-ID`).

use store::mail::{MailOutcome, MailRow};
use tracing::{error, info, warn};

use crate::{Engine, EngineError, FailPoint, backoff_delay};

/// Mails claimed per round: reports are few, and each is sent one after another.
const MAIL_BATCH: u64 = 20;

/// What one mail round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MailStats {
    pub claimed: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
}

impl Engine {
    /// Claims and sends one batch of due mails. Without a mailer it does nothing (the mails
    /// wait for a replica that has one). Public so tests can drive it step by step.
    pub async fn mail_round(&self) -> Result<MailStats, EngineError> {
        let Some((mailer, _)) = &self.mailer else {
            return Ok(MailStats::default());
        };
        let now = self.clock.now(&self.store).await?;
        let token = format!("{}:{}", self.cfg.worker_id, uuid::Uuid::new_v4());
        let lease_until = now + self.clock.span_of(self.cfg.lease);
        let claimed = self
            .store
            .claim_mail(&token, now, lease_until, MAIL_BATCH)
            .await?;
        let mut stats = MailStats {
            claimed: claimed.len() as u64,
            ..Default::default()
        };
        for mail in claimed {
            let res = mailer
                .send_keyed(
                    &mail.recipients,
                    &mail.subject,
                    &mail.text,
                    mail.html.as_deref(),
                    Some(&message_key(&mail)),
                )
                .await;
            self.failpoints
                .reach(FailPoint::AfterMailSendBeforeSettle)
                .await?;
            let now = self.clock.now(&self.store).await?;
            let outcome = match res {
                Ok(()) => {
                    stats.sent += 1;
                    MailOutcome::Sent { at: now }
                }
                Err(e) => {
                    let deadline = mail.created_at + self.clock.span_of(self.cfg.mail_deadline);
                    let due_at =
                        now + backoff_delay(self.cfg.retry_base, mail.attempt, &mut rand::rng());
                    if e.is_transient() && due_at <= deadline {
                        stats.retried += 1;
                        warn!(message = "E-mail not sent; will retry.", mail = %mail.dedup_key, attempt = mail.attempt, error = %e);
                        MailOutcome::Retry {
                            due_at,
                            error: e.to_string(),
                        }
                    } else {
                        stats.failed += 1;
                        error!(message = "E-mail failed for good.", mail = %mail.dedup_key, attempt = mail.attempt, error = %e);
                        MailOutcome::Failed {
                            error: e.to_string(),
                        }
                    }
                }
            };
            if !self.store.settle_mail(mail.id, &token, &outcome).await? {
                // Our lease ran out during the send and another worker took the row: the
                // repeat the bound allows; its settle is the one that counts.
                warn!(message = "Mail lease lost before settling.", mail = %mail.dedup_key);
            } else if matches!(outcome, MailOutcome::Sent { .. }) {
                info!(message = "Queued e-mail sent.", mail = %mail.dedup_key, kind = %mail.kind);
            }
        }
        Ok(stats)
    }
}

/// Stable for one queued row (its key and when it was queued), distinct across databases
/// that reuse run ids: the `Message-ID` a repeat shares with its first send.
fn message_key(mail: &MailRow) -> String {
    format!("{}.{}", mail.dedup_key, mail.created_at)
}
