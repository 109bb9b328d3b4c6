//! The e-mail transport config. The `///` comments here are the user docs.

use std::path::PathBuf;

use serde::Deserialize;

/// How campaignd delivers e-mail to staff (reports, alerts).
///
/// ```toml
/// transport = "smtp"
/// host = "127.0.0.1"
/// port = 2525
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case", deny_unknown_fields)]
pub enum EmailConfig {
    /// Write each message as an `.eml` file (RFC 5322, openable by any mail client) instead
    /// of sending it. Meant for the demo and tests.
    File {
        /// Directory that receives one `<uuid>.eml` per message; created if missing.
        dir: PathBuf,
    },
    /// Hand messages to an SMTP server.
    Smtp {
        /// Host name or IP address of the SMTP server. With TLS it is also the name the
        /// server's certificate must carry.
        host: String,
        /// TCP port. Usually 25 (relay), 587 (`starttls`) or 465 (`tls`).
        ///
        /// Default: 25.
        #[serde(default = "default_smtp_port")]
        port: u16,
        /// `none`: plain text, only for a relay on the same host or a trusted network.
        /// `starttls`: upgrade the connection and refuse to continue if the server cannot.
        /// `tls`: TLS from the first byte (SMTPS).
        ///
        /// Default: `none`.
        #[serde(default)]
        tls: SmtpTls,
        /// PEM file with extra CA certificates to trust for this server, on top of the
        /// built-in public roots: for a relay whose certificate comes from a private CA.
        /// Certificates are always verified; only with `tls` set to `starttls` or `tls`.
        ///
        /// Default: none (public roots only).
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// Name of the environment variable holding the SMTP username. Set together with
        /// `password_env`, or leave both unset to send without authentication.
        #[serde(default)]
        username_env: Option<String>,
        /// Name of the environment variable holding the SMTP password.
        #[serde(default)]
        password_env: Option<String>,
    },
}

/// Transport security for the SMTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// No encryption.
    #[default]
    None,
    /// STARTTLS, required.
    Starttls,
    /// Implicit TLS.
    Tls,
}

fn default_smtp_port() -> u16 {
    25
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_defaults_to_plain_port_25_without_auth() {
        let cfg: EmailConfig =
            serde_json::from_value(serde_json::json!({"transport": "smtp", "host": "127.0.0.1"}))
                .unwrap();
        assert_eq!(
            cfg,
            EmailConfig::Smtp {
                host: "127.0.0.1".into(),
                port: 25,
                tls: SmtpTls::None,
                ca_file: None,
                username_env: None,
                password_env: None,
            }
        );
    }

    #[test]
    fn tls_modes_and_unknown_fields() {
        let cfg: EmailConfig = serde_json::from_value(serde_json::json!({
            "transport": "smtp",
            "host": "mail.example.com",
            "port": 587,
            "tls": "starttls",
            "username_env": "SMTP_USER",
            "password_env": "SMTP_PASSWORD",
        }))
        .unwrap();
        assert!(matches!(
            cfg,
            EmailConfig::Smtp {
                tls: SmtpTls::Starttls,
                port: 587,
                ..
            }
        ));

        let err = serde_json::from_value::<EmailConfig>(serde_json::json!({
            "transport": "smtp",
            "host": "127.0.0.1",
            "tls": "ssl",
        }))
        .unwrap_err();
        assert!(err.to_string().contains("ssl"), "{err}");

        let err = serde_json::from_value::<EmailConfig>(serde_json::json!({
            "transport": "file",
            "dir": "/tmp/mail",
            "directory": "/tmp/mail",
        }))
        .unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }
}
