//! Kannel transport: one `GET /cgi-bin/sendsms` per message over a pool of keep-alive
//! connections.
//!
//! Facts this relies on (Kannel 1.4.5, measured): the response carries no message id, so the
//! idempotency key travels inside `dlr-url` and comes back in the delivery report; `202` with
//! `0: Accepted for delivery` or `3: Queued for later delivery` means taken; `403` means not
//! routable or bad credentials; `400` means a malformed request. With delivery reports on,
//! each request stalls about 40 ms inside Kannel, so throughput comes from many requests in
//! flight, not from a fast client.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, warn};
use url::Url;

use super::rate::RateLimit;
use super::{BuildError, KannelConfig, mask_msisdn};
use crate::{Accepted, Channel, Outbound, ResultSink, SendError};

#[cfg(test)]
mod tests;

/// Kannel error bodies are one line; anything longer is not Kannel and would bloat the
/// contact's recorded failure reason.
const MAX_BODY_IN_ERROR: usize = 200;

/// The `dlr-mask` bit of Kannel's SMSC acknowledgement (DLR type 8).
const SMSC_ACK: u8 = 8;

/// Sends SMS through Kannel's smsbox `sendsms` interface; see [`KannelConfig`].
///
/// Cheap to clone; clones share the connection pool and the in-flight limit.
#[derive(Clone)]
pub struct KannelSms {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    sendsms: Url,
    username: String,
    password: String,
    from: String,
    smsc: Option<String>,
    dlr: Option<Dlr>,
    timeout: Duration,
    /// See [`KannelConfig::ack_grace_ms`]; zero when Kannel sends no SMSC acknowledgements.
    ack_grace: Duration,
    /// Shared by all batches, so that concurrent `send_batch` calls together stay within
    /// `concurrency` requests, the size of the connection pool.
    in_flight: Arc<Semaphore>,
    /// `max_per_second`, shared by all batches like `in_flight`.
    rate: Option<RateLimit>,
    max_per_second: Option<u32>,
}

struct Dlr {
    mask: u8,
    /// The configured base URL followed by `?` or `&`, ready for `key=`.
    prefix: String,
    /// Signs each dlr-url (`t=`, see `store::auth::callback_token`); campaignd's DLR
    /// callback refuses a report without the right token.
    secret: Option<store::auth::Secret>,
}

impl fmt::Debug for KannelSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KannelSms")
            .field("sendsms", &self.inner.sendsms.as_str())
            .field("username", &self.inner.username)
            .field("from", &self.inner.from)
            .field("smsc", &self.inner.smsc)
            .field("dlr_mask", &self.inner.dlr.as_ref().map_or(0, |d| d.mask))
            .finish_non_exhaustive()
    }
}

impl KannelSms {
    /// The variable [`KannelSms::new`] reads the delivery-report signing secret from; the
    /// daemon's DLR callback checks with the same one.
    pub const CALLBACK_SECRET_ENV: &'static str = "CAMPAIGND_CALLBACK_SECRET";

    /// Builds the transport, reading the password from the variable named by `password_env`.
    ///
    /// # Panics
    ///
    /// When no process-wide rustls crypto provider is installed (see [`super::build`]).
    pub fn new(cfg: &KannelConfig) -> Result<Self, BuildError> {
        let password = match std::env::var(&cfg.password_env) {
            Ok(password) if !password.is_empty() => password,
            _ => {
                return Err(BuildError::MissingPassword {
                    var: cfg.password_env.clone(),
                });
            }
        };
        let sms = Self::with_password(cfg, password)?;
        if cfg.dlr_mask == 0 {
            return Ok(sms);
        }
        // The daemon refuses to start without the secret (it checks the callbacks with it);
        // a transport built elsewhere (tools, benchmarks) without it sends unsigned
        // dlr-urls, whose reports campaignd's callback refuses.
        let Some(secret) = std::env::var(Self::CALLBACK_SECRET_ENV)
            .ok()
            .filter(|s| !s.is_empty())
        else {
            warn!(
                variable = Self::CALLBACK_SECRET_ENV,
                "No delivery-report signing secret: campaignd will refuse these reports."
            );
            return Ok(sms);
        };
        let secret = store::auth::Secret::new(secret.into_bytes())
            .map_err(|e| invalid("dlr_url", format!("{}: {e}", Self::CALLBACK_SECRET_ENV)))?;
        Ok(sms.with_dlr_secret(secret))
    }

    /// Signs every dlr-url with `secret` (the callback's check). Call right after building.
    pub fn with_dlr_secret(mut self, secret: store::auth::Secret) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                if let Some(dlr) = &mut inner.dlr {
                    dlr.secret = Some(secret);
                }
            }
            None => warn!("with_dlr_secret called on a shared KannelSms; the secret is not used"),
        }
        self
    }

    /// Makes `max_per_second` hold across every replica on `store`'s database: each
    /// reserves runs of the account's send slots there (`Store::reserve_send_slots`).
    /// Without `max_per_second` there is nothing to share. Call right after building.
    pub fn with_shared_rate(mut self, store: store::Store) -> Self {
        let account = format!(
            "kannel:{}@{}:{}",
            self.inner.username,
            self.inner.sendsms.host_str().unwrap_or_default(),
            self.inner
                .sendsms
                .port_or_known_default()
                .unwrap_or_default()
        );
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                if let Some(per_second) = inner.max_per_second {
                    inner.rate = Some(RateLimit::shared(per_second, store, account));
                }
            }
            None => warn!("with_shared_rate called on a shared KannelSms; the limit stays local"),
        }
        self
    }

    /// Builds the transport with a password obtained elsewhere; `password_env` is ignored.
    ///
    /// # Panics
    ///
    /// When no process-wide rustls crypto provider is installed (see [`super::build`]).
    pub fn with_password(
        cfg: &KannelConfig,
        password: impl Into<String>,
    ) -> Result<Self, BuildError> {
        let sendsms = parse_http_url("sendsms_url", &cfg.sendsms_url)?;
        if cfg.username.is_empty() {
            return Err(invalid("username", "must not be empty"));
        }
        if cfg.from.is_empty() {
            return Err(invalid("from", "must not be empty"));
        }
        if cfg.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1"));
        }
        if cfg.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "must be at least 1"));
        }
        if cfg.max_per_second == Some(0) {
            return Err(invalid(
                "max_per_second",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if cfg.dlr_mask > 31 {
            return Err(invalid(
                "dlr_mask",
                format!(
                    "{} has bits Kannel 1.4.5 does not know; use a sum of 1, 2, 4, 8, 16",
                    cfg.dlr_mask
                ),
            ));
        }
        let dlr = if cfg.dlr_mask == 0 {
            None
        } else {
            Some(Dlr {
                mask: cfg.dlr_mask,
                prefix: dlr_prefix(&cfg.dlr_url)?,
                secret: None,
            })
        };

        let timeout = Duration::from_millis(cfg.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(cfg.concurrency)
            // Kannel's replies are tiny; Nagle would add the same 40 ms stalls Kannel suffers.
            .tcp_nodelay(true)
            // A redirect would replay the password to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("campaignd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BuildError::Client)?;

        Ok(KannelSms {
            inner: Arc::new(Inner {
                client,
                sendsms,
                username: cfg.username.clone(),
                password: password.into(),
                from: cfg.from.clone(),
                smsc: cfg.smsc.clone(),
                dlr,
                timeout,
                ack_grace: if cfg.dlr_mask & SMSC_ACK != 0 {
                    Duration::from_millis(cfg.ack_grace_ms)
                } else {
                    Duration::ZERO
                },
                in_flight: Arc::new(Semaphore::new(cfg.concurrency)),
                rate: cfg.max_per_second.map(RateLimit::new),
                max_per_second: cfg.max_per_second,
            }),
        })
    }
}

impl Inner {
    /// The full sendsms URL for one message, password included: never log it.
    fn sendsms_url(&self, msg: &Outbound) -> Url {
        let mut url = self.sendsms.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("username", &self.username)
                .append_pair("password", &self.password)
                .append_pair("from", &self.from)
                .append_pair("to", &msg.msisdn)
                .append_pair("text", &msg.text);
            if !is_gsm7(&msg.text) {
                q.append_pair("charset", "UTF-8").append_pair("coding", "2");
            }
            if let Some(smsc) = &self.smsc {
                q.append_pair("smsc", smsc);
            }
            if let Some(dlr) = &self.dlr {
                q.append_pair("dlr-mask", &dlr.mask.to_string())
                    .append_pair("dlr-url", &dlr.url_for(&msg.key));
            }
        }
        url
    }

    async fn submit(&self, msg: &Outbound) -> Result<Accepted, SendError> {
        let res = self
            .client
            .get(self.sendsms_url(msg))
            .send()
            .await
            .map_err(|error| self.request_error(error))?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, chrono::Utc::now()));
        let body = res
            .text()
            .await
            .map_err(|error| self.request_error(error))?;
        classify(status, &body, retry_after)
    }

    /// Every request error is worth a retry. One that came before the request left (no
    /// connection) is a plain transient failure; a timeout or a connection lost after the
    /// request went out is ambiguous: Kannel may have taken the message, so an at-most-once
    /// wave does not send it again.
    fn request_error(&self, error: reqwest::Error) -> SendError {
        // The URL carries the password.
        let error = error.without_url();
        if error.is_connect() {
            SendError::Transient(format!(
                "cannot connect to Kannel sendsms: {}",
                error_chain(&error)
            ))
        } else if error.is_timeout() {
            SendError::Ambiguous(format!(
                "Kannel sendsms did not answer within {} ms",
                self.timeout.as_millis()
            ))
        } else {
            SendError::Ambiguous(format!(
                "Kannel sendsms request failed: {}",
                error_chain(&error)
            ))
        }
    }
}

impl Dlr {
    /// The `dlr-url` for one message.
    ///
    /// The key is percent-encoded so that `&`, `=` or `#` in it cannot break the callback's
    /// query. Kannel then treats every `%x` in the dlr-url as one of its escapes and would eat
    /// `%A`, `%B`, `%C`, `%D`, `%F` from an encoded non-ASCII byte, so each `%` is doubled:
    /// Kannel turns `%%` back into `%` and the callback receives the percent-encoded key.
    ///
    /// With a secret, `t=` carries the key's token (hex, so it needs no escaping).
    fn url_for(&self, key: &str) -> String {
        let encoded: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
        let token = match &self.secret {
            Some(secret) => format!("&t={}", store::auth::callback_token(secret, key)),
            None => String::new(),
        };
        format!(
            "{}key={}{token}&type=%d&smscid=%i&fid=%F&to=%p&ts=%T&reply=%A",
            self.prefix,
            encoded.replace('%', "%%")
        )
    }
}

#[async_trait]
impl Channel for KannelSms {
    fn kind(&self) -> &'static str {
        domain::ChannelKind::Sms.as_str()
    }

    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        self.send_each(batch, tx).await;
        let mut results: Vec<Option<Result<Accepted, SendError>>> = vec![None; batch.len()];
        while let Some((idx, res)) = rx.recv().await {
            results[idx] = Some(res);
        }
        results
            .into_iter()
            .map(|res| res.unwrap_or_else(|| Err(no_result())))
            .collect()
    }

    async fn send_each(&self, batch: &[Outbound], done: ResultSink) {
        let mut reported = vec![false; batch.len()];
        let mut tally = Tally::default();
        let mut tasks = JoinSet::new();
        for (idx, msg) in batch.iter().enumerate() {
            // Taking the permit before spawning submits in batch order and keeps at most
            // `concurrency` tasks alive.
            let permit = match Arc::clone(&self.inner.in_flight).acquire_owned().await {
                Ok(permit) => permit,
                // The semaphore is never closed; should that change, fail loudly per message.
                Err(closed) => {
                    let res = Err(SendError::Transient(format!(
                        "Kannel sender is shut down: {closed}"
                    )));
                    tally.add(&res);
                    let _ = done.send((idx, res));
                    reported[idx] = true;
                    continue;
                }
            };
            // The slot is reserved once the permit is held and the request starts right
            // after it: a start is never earlier than its slot, nor later than the next one's.
            if let Some(rate) = &self.inner.rate {
                rate.wait().await;
            }
            let inner = Arc::clone(&self.inner);
            let msg = msg.clone();
            let done = done.clone();
            // Spawned tasks do not inherit the caller's span (run, wave) by themselves.
            let span = tracing::Span::current();
            tasks.spawn(
                async move {
                    let res = inner.submit(&msg).await;
                    drop(permit);
                    log_outcome(&msg, &res);
                    // Reported the moment it is known: the dispatcher records it while the
                    // rest of the batch is still in flight.
                    let _ = done.send((idx, res.clone()));
                    (idx, res)
                }
                .instrument(span),
            );
            while let Some(finished) = tasks.try_join_next() {
                note(&mut reported, &mut tally, finished);
            }
        }
        while let Some(finished) = tasks.join_next().await {
            note(&mut reported, &mut tally, finished);
        }
        // A task that panicked reported nothing: its message counts as a retryable failure.
        for (idx, _) in reported.iter().enumerate().filter(|(_, r)| !**r) {
            let res = Err(no_result());
            tally.add(&res);
            let _ = done.send((idx, res));
        }
        tally.log();
    }

    fn proof_grace(&self) -> Duration {
        self.inner.ack_grace
    }

    async fn healthcheck(&self) -> Result<(), SendError> {
        // Without `to`, a reachable smsbox checks the credentials and then refuses with
        // 400 "Missing receiver number": proof of life that sends nothing.
        let inner = &self.inner;
        let mut url = inner.sendsms.clone();
        url.query_pairs_mut()
            .append_pair("username", &inner.username)
            .append_pair("password", &inner.password);
        let res = inner
            .client
            .get(url)
            .send()
            .await
            .map_err(|error| inner.request_error(error))?;
        let status = res.status();
        let body = res
            .text()
            .await
            .map_err(|error| inner.request_error(error))?;
        let body = short(&body);
        if status == StatusCode::BAD_REQUEST && body.contains("receiver") {
            return Ok(());
        }
        let code = status.as_u16();
        let error = if status.is_server_error() {
            SendError::Transient(format!("Kannel sendsms unhealthy: HTTP {code}: {body}"))
        } else if status == StatusCode::FORBIDDEN {
            SendError::Refused(format!(
                "Kannel refused campaignd's credentials: HTTP {code}: {body}"
            ))
        } else {
            SendError::Refused(format!(
                "unexpected answer from Kannel sendsms (wrong sendsms_url?): HTTP {code}: {body}"
            ))
        };
        tracing::warn!(message = "Kannel healthcheck failed.", %error);
        Err(error)
    }
}

/// Longest pause a `Retry-After` can ask for: a gateway (or a proxy in front of it) that
/// names a day or a year must not stop a campaign for that long; the breaker's probe after
/// this finds out whether it is still busy.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` as delay-seconds or as an HTTP date (RFC 9110; a date in the past is no
/// wait), at most [`MAX_RETRY_AFTER`]. Anything else counts as absent (the breaker's own
/// cool-down then applies).
fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Maps one sendsms answer (and its `Retry-After`, if any) to an outcome.
fn classify(
    status: StatusCode,
    body: &str,
    retry_after: Option<Duration>,
) -> Result<Accepted, SendError> {
    let body = short(body);
    if status.is_success() {
        let queued = body.starts_with("3:");
        if !queued && !body.starts_with("0:") {
            tracing::warn!(
                message = "Unrecognised sendsms success body; counting the message as accepted.",
                status = status.as_u16(),
                body = %body,
            );
        }
        return Ok(Accepted {
            gateway_ref: None,
            queued,
        });
    }
    let reason = format!("Kannel answered HTTP {}: {body}", status.as_u16());
    // The gateway (or a proxy before it) says when to come back: the message was not
    // taken, and sending more before then only gets more refusals.
    if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some())
    {
        return Err(SendError::Throttled {
            reason,
            retry_after,
        });
    }
    // Kannel checks the account before anything about the message; 401/404 mean the URL
    // does not lead to a sendsms that knows campaignd. Every message would fail the same.
    if (status == StatusCode::FORBIDDEN && body.contains("Authorization failed"))
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::NOT_FOUND
    {
        return Err(SendError::Refused(reason));
    }
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Err(SendError::Transient(reason))
    } else {
        // 400 malformed, 403 not routable or bad credentials: resending the same request
        // gets the same answer.
        Err(SendError::Permanent(reason))
    }
}

/// True when every character has a GSM 03.38 encoding (default alphabet or its extension
/// table), i.e. Kannel can send the text with `coding=0`.
fn is_gsm7(text: &str) -> bool {
    const BASIC_NON_ASCII: &str = "£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà€";
    text.chars().all(|c| match c {
        '\n' | '\r' | '\u{0C}' => true,
        // ASCII printable minus the backtick, which GSM 03.38 lacks.
        ' '..='~' => c != '`',
        _ => BASIC_NON_ASCII.contains(c),
    })
}

fn parse_http_url(key: &'static str, raw: &str) -> Result<Url, BuildError> {
    let url = Url::parse(raw).map_err(|error| invalid(key, format!("`{raw}`: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(key, format!("`{raw}` is not an http(s) URL")));
    }
    Ok(url)
}

fn dlr_prefix(raw: &str) -> Result<String, BuildError> {
    let url = parse_http_url("dlr_url", raw)?;
    if url.fragment().is_some() {
        return Err(invalid(
            "dlr_url",
            format!("`{raw}` has a #fragment; the key would not reach campaignd"),
        ));
    }
    // The configured text is kept as written: re-serialising the parsed URL could alter
    // `%%` that the operator wrote for Kannel.
    let sep = match raw.find('?') {
        None => "?",
        Some(_) if raw.ends_with('?') || raw.ends_with('&') => "",
        Some(_) => "&",
    };
    Ok(format!("{raw}{sep}"))
}

fn invalid(key: &'static str, reason: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// reqwest's top-level messages ("error sending request") hide the cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

fn short(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(MAX_BODY_IN_ERROR) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_owned(),
    }
}

/// A finished send task: its message was reported, and counts in the batch's summary.
fn note(
    reported: &mut [bool],
    tally: &mut Tally,
    finished: Result<(usize, Result<Accepted, SendError>), tokio::task::JoinError>,
) {
    match finished {
        Ok((idx, res)) => {
            reported[idx] = true;
            tally.add(&res);
        }
        // The panic itself is already reported by the runtime; the message is reported as
        // a retryable failure once the batch is done.
        Err(error) => tracing::error!(message = "Kannel send task failed.", %error),
    }
}

fn no_result() -> SendError {
    SendError::Transient("Kannel send task ended without a result".to_owned())
}

fn log_outcome(msg: &Outbound, res: &Result<Accepted, SendError>) {
    let to = mask_msisdn(&msg.msisdn);
    match res {
        Ok(accepted) => tracing::debug!(
            message = "SMS submitted to Kannel.",
            key = %msg.key,
            %to,
            queued = accepted.queued,
        ),
        Err(error @ (SendError::Permanent(_) | SendError::Refused(_))) => tracing::warn!(
            message = "Kannel refused SMS.",
            key = %msg.key,
            %to,
            %error,
        ),
        Err(
            error @ (SendError::Transient(_)
            | SendError::Ambiguous(_)
            | SendError::Throttled { .. }),
        ) => tracing::debug!(
            message = "SMS submit failed, retryable.",
            key = %msg.key,
            %to,
            %error,
        ),
    }
}

/// A batch's outcomes, counted for its one summary line.
#[derive(Default)]
struct Tally {
    accepted: u32,
    queued: u32,
    transient: u32,
    permanent: u32,
    first_transient: Option<String>,
}

impl Tally {
    fn add(&mut self, res: &Result<Accepted, SendError>) {
        match res {
            Ok(a) if a.queued => self.queued += 1,
            Ok(_) => self.accepted += 1,
            Err(
                e @ (SendError::Transient(_)
                | SendError::Ambiguous(_)
                | SendError::Throttled { .. }),
            ) => {
                self.transient += 1;
                self.first_transient.get_or_insert_with(|| e.to_string());
            }
            Err(SendError::Permanent(_) | SendError::Refused(_)) => self.permanent += 1,
        }
    }

    fn log(&self) {
        let Tally {
            accepted,
            queued,
            transient,
            permanent,
            first_transient,
        } = self;
        if *transient > 0 {
            // One line per batch: during an outage per-message warnings would flood the log.
            tracing::warn!(
                message = "Kannel batch had retryable failures.",
                accepted,
                queued,
                transient,
                permanent,
                error = first_transient.as_deref().unwrap_or_default(),
            );
        } else {
            tracing::debug!(
                message = "Kannel batch done.",
                accepted,
                queued,
                transient,
                permanent,
            );
        }
    }
}
