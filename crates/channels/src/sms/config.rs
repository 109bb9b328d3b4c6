//! The `[sms]` table of campaignd's config file. The `///` comments here are the user docs.

use std::path::PathBuf;

use serde::Deserialize;

/// Which SMS transport to use; from the daemon's TOML config `[sms]` table.
///
/// ```toml
/// [sms]
/// transport = "http"
/// username = "campaignd"
/// from = "10086"
/// dlr_url = "http://127.0.0.1:8080/callbacks/kannel/dlr"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case", deny_unknown_fields)]
pub enum SmsConfig {
    /// Append every message to a local JSON-lines file instead of sending it. Nothing leaves
    /// the machine; meant for the demo, tests and dry runs.
    Outbox(OutboxConfig),
    /// Submit through a Kannel smsbox's `sendsms` HTTP interface.
    Http(KannelConfig),
}

impl Default for SmsConfig {
    /// The outbox: a fresh install must never send real SMS by accident.
    fn default() -> Self {
        SmsConfig::Outbox(OutboxConfig::default())
    }
}

/// The outbox transport (`transport = "outbox"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// File that receives one JSON object per message:
    /// `{"key", "contact_id", "to", "text", "campaign", "wave", "at"}`. It is opened in append
    /// mode and created if missing; its directory must exist.
    ///
    /// Default: `campaignd-outbox.jsonl` (relative to the working directory).
    #[serde(default = "default_outbox_path")]
    pub path: PathBuf,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            path: default_outbox_path(),
        }
    }
}

/// The Kannel transport (`transport = "http"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KannelConfig {
    /// The smsbox `sendsms` URL.
    ///
    /// Default: `http://127.0.0.1:13013/cgi-bin/sendsms`.
    #[serde(default = "default_sendsms_url")]
    pub sendsms_url: String,

    /// The `sendsms-user` username.
    pub username: String,

    /// Name of the environment variable holding the password (secrets never live in config
    /// files). The variable is read once, when the daemon starts.
    ///
    /// Default: `CAMPAIGND_KANNEL_PASSWORD`.
    #[serde(default = "default_password_env")]
    pub password_env: String,

    /// Sender id shown to subscribers, e.g. `"10086"`.
    pub from: String,

    /// Base URL of campaignd's delivery-report callback, e.g.
    /// `http://127.0.0.1:8080/callbacks/kannel/dlr`.
    ///
    /// For each message campaignd appends
    /// `?key=<idempotency key>&t=<token>&type=%d&smscid=%i&fid=%F&to=%p&ts=%T&reply=%A` (or
    /// `&key=…` when the URL already has a query) and hands the result to Kannel as `dlr-url`.
    /// `t` is HMAC-SHA256 of the key with the secret in `CAMPAIGND_CALLBACK_SECRET` (required
    /// when `dlr_mask` is not 0; at least 16 bytes): the callback refuses reports without it. Kannel replaces
    /// `%`-escapes in this URL, so a literal `%` in the base URL must be written `%%`.
    pub dlr_url: String,

    /// Which delivery reports Kannel should call back with, as a bit mask: 1 delivered to the
    /// phone, 2 undeliverable, 4 buffered at the SMSC, 8 accepted by the SMSC, 16 rejected by
    /// the SMSC. 0 turns delivery reports off (no `dlr-url` is sent).
    ///
    /// Default: 27 (1 + 2 + 8 + 16).
    #[serde(default = "default_dlr_mask")]
    pub dlr_mask: u8,

    /// Requests in flight at once, each on its own keep-alive connection. Kannel stalls about
    /// 40 ms per request when delivery reports are on, so throughput needs 32–64 connections.
    ///
    /// Default: 64.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,

    /// Time limit for one `sendsms` request, connecting included, in milliseconds. A message
    /// that times out is reported as a transient failure although Kannel may have taken it.
    ///
    /// Default: 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,

    /// Kannel SMSC id to route through (`smsc=`). Unset: Kannel's own routing decides. Kannel
    /// does not reject unknown ids; strict routing needs `allowed-smsc-id` in Kannel.
    #[serde(default)]
    pub smsc: Option<String>,

    /// How long a message whose send was interrupted (campaignd died between handing it to
    /// Kannel and recording Kannel's answer) waits for Kannel's SMSC acknowledgement (DLR
    /// type 8) before it is sent again, in milliseconds, counted from the end of the dead
    /// worker's lease. The acknowledgement proves the message was submitted, so it is
    /// recorded as sent and never repeated. Used only when `dlr_mask` includes 8; without it
    /// an interrupted message is sent again as soon as its lease runs out. Longer means fewer
    /// duplicates when Kannel is slow to report, later delivery of the messages it never got.
    ///
    /// Default: 60000.
    #[serde(default = "default_ack_grace_ms")]
    pub ack_grace_ms: u64,

    /// Most messages per second sent through this account (operators buy SMSC throughput
    /// per account; more gets refused or throttled). Messages are spaced `1/max_per_second`
    /// apart, so no second ever holds more. On PostgreSQL the limit holds across every
    /// replica (slots are reserved in the database); on SQLite there is one daemon. Unset:
    /// no limit but `concurrency`.
    #[serde(default)]
    pub max_per_second: Option<u32>,
}

fn default_ack_grace_ms() -> u64 {
    60_000
}

fn default_outbox_path() -> PathBuf {
    PathBuf::from("campaignd-outbox.jsonl")
}

fn default_sendsms_url() -> String {
    "http://127.0.0.1:13013/cgi-bin/sendsms".to_owned()
}

fn default_password_env() -> String {
    "CAMPAIGND_KANNEL_PASSWORD".to_owned()
}

fn default_dlr_mask() -> u8 {
    27
}

fn default_concurrency() -> usize {
    64
}

fn default_timeout_ms() -> u64 {
    10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_transport_fills_defaults() {
        let cfg: SmsConfig = serde_json::from_value(serde_json::json!({
            "transport": "http",
            "username": "campaignd",
            "from": "10086",
            "dlr_url": "http://127.0.0.1:8080/callbacks/kannel/dlr",
        }))
        .unwrap();
        let SmsConfig::Http(kannel) = cfg else {
            panic!("expected the http transport, got {cfg:?}");
        };
        assert_eq!(
            kannel,
            KannelConfig {
                sendsms_url: "http://127.0.0.1:13013/cgi-bin/sendsms".into(),
                username: "campaignd".into(),
                password_env: "CAMPAIGND_KANNEL_PASSWORD".into(),
                from: "10086".into(),
                dlr_url: "http://127.0.0.1:8080/callbacks/kannel/dlr".into(),
                dlr_mask: 27,
                concurrency: 64,
                timeout_ms: 10_000,
                smsc: None,
                ack_grace_ms: 60_000,
                max_per_second: None,
            }
        );
    }

    #[test]
    fn outbox_transport_defaults_its_path() {
        let cfg: SmsConfig =
            serde_json::from_value(serde_json::json!({ "transport": "outbox" })).unwrap();
        assert_eq!(cfg, SmsConfig::default());
        assert_eq!(
            cfg,
            SmsConfig::Outbox(OutboxConfig {
                path: "campaignd-outbox.jsonl".into()
            })
        );
    }

    #[test]
    fn unknown_fields_and_transports_are_rejected() {
        let typo = serde_json::from_value::<SmsConfig>(serde_json::json!({
            "transport": "http",
            "username": "campaignd",
            "from": "10086",
            "dlr_url": "http://127.0.0.1:8080/dlr",
            "dlr_msk": 31,
        }))
        .unwrap_err();
        assert!(typo.to_string().contains("dlr_msk"), "{typo}");

        let outbox_typo = serde_json::from_value::<SmsConfig>(serde_json::json!({
            "transport": "outbox",
            "pth": "x.jsonl",
        }))
        .unwrap_err();
        assert!(outbox_typo.to_string().contains("pth"), "{outbox_typo}");

        let transport = serde_json::from_value::<SmsConfig>(serde_json::json!({
            "transport": "smpp",
        }))
        .unwrap_err();
        assert!(transport.to_string().contains("smpp"), "{transport}");
    }
}
