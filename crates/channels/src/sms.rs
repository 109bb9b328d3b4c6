//! SMS transports: the embedded outbox file and Kannel's `sendsms` HTTP interface.
//!
//! [`build`] turns the `[sms]` config table into a [`Channel`]; both transports report
//! `kind() == "sms"`. Phone numbers only reach logs through [`mask_msisdn`].

use std::sync::Arc;

use crate::Channel;

mod config;
mod kannel;
mod outbox;
mod rate;

pub use config::{KannelConfig, OutboxConfig, SmsConfig};
pub use kannel::KannelSms;
pub use outbox::OutboxSms;

/// Why an SMS transport could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The environment variable named by `password_env` is not set (or not valid UTF-8).
    #[error(
        "environment variable `{var}` is not set; it must hold the Kannel sendsms password \
         (config key `sms.password_env`)"
    )]
    MissingPassword {
        /// Name of the variable.
        var: String,
    },
    /// A config value is out of range or malformed.
    #[error("invalid `sms.{key}`: {reason}")]
    Invalid {
        /// The config key, without the `sms.` prefix.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The outbox file could not be opened for appending.
    #[error("cannot open SMS outbox `{path}` for appending: {source}")]
    Outbox {
        /// The configured path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for Kannel: {0}")]
    Client(#[source] reqwest::Error),
}

/// Builds the configured SMS channel.
///
/// # Panics
///
/// For the `http` transport, when no process-wide rustls crypto provider is installed:
/// campaignd's `main` installs ring before building channels, tests must do the same.
pub async fn build(cfg: &SmsConfig) -> Result<Arc<dyn Channel>, BuildError> {
    let channel: Arc<dyn Channel> = match cfg {
        SmsConfig::Outbox(outbox) => Arc::new(OutboxSms::open(outbox).await?),
        SmsConfig::Http(kannel) => Arc::new(KannelSms::new(kannel)?),
    };
    Ok(channel)
}

/// [`build`] for a daemon on `store`: on PostgreSQL, where replicas share the work, Kannel's
/// `max_per_second` is shared through the database too ([`KannelSms::with_shared_rate`]),
/// so the account's rate holds however many replicas send. On SQLite (one daemon) the
/// limit stays in the process.
pub async fn build_for(
    cfg: &SmsConfig,
    store: &store::Store,
) -> Result<Arc<dyn Channel>, BuildError> {
    match cfg {
        SmsConfig::Http(kannel) if store.is_postgres() && kannel.max_per_second.is_some() => Ok(
            Arc::new(KannelSms::new(kannel)?.with_shared_rate(store.clone())),
        ),
        other => build(other).await,
    }
}

/// Hides the middle of a phone number for logs (`13800138000` → `138****8000`): the one mask
/// of [`domain::mask`], under the name this crate's modules use.
pub use domain::mask as mask_msisdn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_msisdn_keeps_only_prefix_and_suffix() {
        assert_eq!(mask_msisdn("13800138000"), "138****8000");
        assert_eq!(mask_msisdn("+8613800138000"), "+86****8000");
        assert_eq!(mask_msisdn("12345678"), "12****78");
        assert_eq!(mask_msisdn("10086"), "****");
        assert_eq!(mask_msisdn("1234567"), "****");
        assert_eq!(mask_msisdn("12"), "****");
        assert_eq!(mask_msisdn(""), "****");
        // Multi-byte input must not panic on a char boundary.
        assert_eq!(mask_msisdn("１３８００１３８０００"), "１３８****８０００");
    }

    #[tokio::test]
    async fn build_reports_the_missing_password_variable_by_name() {
        let cfg = SmsConfig::Http(KannelConfig {
            sendsms_url: "http://127.0.0.1:13013/cgi-bin/sendsms".into(),
            username: "campaignd".into(),
            password_env: "CAMPAIGND_TEST_UNSET_PASSWORD_6F1C".into(),
            from: "10086".into(),
            dlr_url: "http://127.0.0.1:8080/callbacks/kannel/dlr".into(),
            dlr_mask: 27,
            concurrency: 4,
            timeout_ms: 1000,
            smsc: None,
            ack_grace_ms: 60_000,
            max_per_second: None,
        });
        let err = match build(&cfg).await {
            Ok(_) => panic!("built a Kannel channel without a password"),
            Err(err) => err,
        };
        assert!(
            matches!(&err, BuildError::MissingPassword { var } if var == "CAMPAIGND_TEST_UNSET_PASSWORD_6F1C"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("CAMPAIGND_TEST_UNSET_PASSWORD_6F1C"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn build_gives_an_outbox_channel_of_kind_sms() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SmsConfig::Outbox(OutboxConfig {
            path: dir.path().join("out.jsonl"),
        });
        let channel = build(&cfg).await.unwrap();
        assert_eq!(channel.kind(), "sms");
        channel.healthcheck().await.unwrap();
    }
}
