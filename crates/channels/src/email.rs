//! E-mail: to staff (reports, alerts, digests, through the engine's mail queue) and, as
//! [`SubscriberMail`], a wave channel to subscribers (through the contact queue). Both send
//! through one [`Mailer`]: an SMTP server or `.eml` files.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use lettre::address::AddressError;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::SendError;

mod config;

pub use config::{EmailConfig, SmtpTls};

/// Why a [`Mailer`] could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The sender address does not parse.
    #[error("invalid e-mail sender address `{address}`: {source}")]
    InvalidFrom {
        /// The address as given.
        address: String,
        /// What the parser objected to.
        source: AddressError,
    },
    /// An environment variable named by `username_env` or `password_env` is not set.
    #[error(
        "environment variable `{var}` is not set; it must hold the SMTP {what} \
         (config key `{what}_env`)"
    )]
    MissingEnv {
        /// Name of the variable.
        var: String,
        /// `username` or `password`.
        what: &'static str,
    },
    /// Only one of `username_env` and `password_env` is set.
    #[error("set both `username_env` and `password_env` for SMTP authentication, or neither")]
    IncompleteCredentials,
    /// The `.eml` directory cannot be created.
    #[error("cannot create e-mail directory `{dir}`: {source}")]
    Dir {
        /// The configured directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `ca_file` cannot be read.
    #[error("cannot read SMTP `ca_file` `{path}`: {source}")]
    CaFile {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `ca_file` is set although `tls` is `none`: a trust anchor with nothing to verify is a
    /// config mistake (the operator believes the connection is verified).
    #[error("SMTP `ca_file` is set but `tls` is `none`; set `tls` to `starttls` or `tls`")]
    CaFileWithoutTls,
    /// TLS parameters for the SMTP host could not be built.
    #[error("cannot set up TLS for SMTP host `{host}`: {source}")]
    Tls {
        /// The configured host.
        host: String,
        /// lettre's error.
        source: lettre::transport::smtp::Error,
    },
}

/// Sends e-mail to staff through the configured transport.
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    File(AsyncFileTransport<Tokio1Executor>),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.transport {
            Transport::File(_) => "file",
            Transport::Smtp(_) => "smtp",
        };
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("transport", &transport)
            .finish()
    }
}

impl Mailer {
    /// Builds a mailer that sends as `from` (`"campaignd <campaignd@example.com>"` or a bare
    /// address). Reads SMTP credentials from the environment now, so a missing secret fails
    /// at startup rather than at the first report.
    ///
    /// # Panics
    ///
    /// For SMTP, outside a Tokio runtime: lettre's connection pool spawns its reaper task
    /// when the transport is built.
    pub fn new(cfg: &EmailConfig, from: &str) -> Result<Self, BuildError> {
        let from: Mailbox = from.parse().map_err(|source| BuildError::InvalidFrom {
            address: from.to_owned(),
            source,
        })?;
        let transport = match cfg {
            EmailConfig::File { dir } => {
                std::fs::create_dir_all(dir).map_err(|source| BuildError::Dir {
                    dir: dir.clone(),
                    source,
                })?;
                Transport::File(AsyncFileTransport::new(dir))
            }
            EmailConfig::Smtp {
                host,
                port,
                tls,
                ca_file,
                username_env,
                password_env,
            } => {
                let extra_root = match ca_file {
                    None => None,
                    Some(_) if *tls == SmtpTls::None => return Err(BuildError::CaFileWithoutTls),
                    Some(path) => {
                        let pem = std::fs::read(path)
                            .and_then(|pem| {
                                // lettre accepts a file without certificates and would then
                                // trust nothing extra, failing only at the first send.
                                if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                                    Ok(pem)
                                } else {
                                    Err(std::io::Error::new(
                                        std::io::ErrorKind::InvalidData,
                                        "no PEM certificate in it",
                                    ))
                                }
                            })
                            .map_err(|source| BuildError::CaFile {
                                path: path.clone(),
                                source,
                            })?;
                        let cert =
                            Certificate::from_pem(&pem).map_err(|source| BuildError::Tls {
                                host: host.clone(),
                                source,
                            })?;
                        Some(cert)
                    }
                };
                // Verification stays on: a private CA is trusted only by naming it in the
                // config, never by turning checks off.
                let tls_for = |host: &str| {
                    let mut params = TlsParameters::builder(host.to_owned());
                    if let Some(cert) = extra_root.clone() {
                        params = params.add_root_certificate(cert);
                    }
                    params.build().map_err(|source| BuildError::Tls {
                        host: host.to_owned(),
                        source,
                    })
                };
                let tls = match tls {
                    SmtpTls::None => Tls::None,
                    SmtpTls::Starttls => Tls::Required(tls_for(host)?),
                    SmtpTls::Tls => Tls::Wrapper(tls_for(host)?),
                };
                let plaintext = matches!(tls, Tls::None);
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                    .port(*port)
                    .tls(tls);
                match (username_env, password_env) {
                    (Some(user_var), Some(password_var)) => {
                        if plaintext && !is_loopback(host) {
                            tracing::warn!(
                                message = "SMTP credentials will cross the network unencrypted; set `tls`.",
                                host = %host,
                            );
                        }
                        let username = env_secret(user_var, "username")?;
                        let password = env_secret(password_var, "password")?;
                        builder = builder.credentials(Credentials::new(username, password));
                    }
                    (None, None) => {}
                    _ => return Err(BuildError::IncompleteCredentials),
                }
                Transport::Smtp(builder.build())
            }
        };
        Ok(Mailer { from, transport })
    }

    /// Sends one message to every address in `to`.
    ///
    /// With `html_body` the message is `multipart/alternative` (plain text first, so mail
    /// clients that prefer HTML show the HTML). Bad addresses and SMTP 5xx answers are
    /// [`SendError::Permanent`]; unreachable servers, 4xx answers and disk errors are
    /// [`SendError::Transient`].
    pub async fn send(
        &self,
        to: &[String],
        subject: &str,
        text_body: &str,
        html_body: Option<&str>,
    ) -> Result<(), SendError> {
        self.send_keyed(to, subject, text_body, html_body, None)
            .await
    }

    /// [`Mailer::send`] with a `Message-ID` made from `key` (and the sender's domain): a
    /// queued mail sent again after a crash between the server's accept and the settle
    /// carries the same `Message-ID`, so a receiver can recognise the repeat. `key` is made
    /// header-safe (characters outside `[A-Za-z0-9.-]` become `.`).
    pub async fn send_keyed(
        &self,
        to: &[String],
        subject: &str,
        text_body: &str,
        html_body: Option<&str>,
        key: Option<&str>,
    ) -> Result<(), SendError> {
        if to.is_empty() {
            return Err(SendError::Permanent("e-mail has no recipients".to_owned()));
        }
        let mut builder = Message::builder().from(self.from.clone()).subject(subject);
        if let Some(key) = key {
            builder = builder.message_id(Some(message_id(key, self.from.email.domain())));
        }
        for address in to {
            let mailbox: Mailbox = address.parse().map_err(|error| {
                SendError::Permanent(format!("invalid recipient address `{address}`: {error}"))
            })?;
            builder = builder.to(mailbox);
        }
        let message = match html_body {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                text_body.to_owned(),
                html.to_owned(),
            )),
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(text_body.to_owned()),
        }
        .map_err(|error| SendError::Permanent(format!("cannot build e-mail: {error}")))?;

        let res = match &self.transport {
            Transport::File(file) => file.send(message).await.map(drop).map_err(|error| {
                SendError::Transient(format!("cannot write e-mail file: {error}"))
            }),
            Transport::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(|error| {
                let reason = format!("SMTP: {error}");
                if error.is_permanent() {
                    SendError::Permanent(reason)
                } else {
                    SendError::Transient(reason)
                }
            }),
        };
        match &res {
            Ok(()) => tracing::info!(
                message = "E-mail sent.",
                subject = %subject,
                recipients = to.len(),
            ),
            Err(error) => tracing::warn!(
                message = "E-mail not sent.",
                subject = %subject,
                recipients = to.len(),
                %error,
            ),
        }
        res
    }
}

/// The `email` wave channel: each contact is one mail to the subscriber's address, with the
/// contact's idempotency key as its `Message-ID` (a repeat after a crash between the
/// server's accept and the settle carries the same one). The engine's dispatcher claims,
/// leases and settles the contacts as for SMS; this only sends.
///
/// There is no delivery report for mail: the server's acceptance is the last thing
/// campaignd learns, so an accepted mail is `sent` and that is what counts as reached.
/// A subscriber without an address, an address that does not parse and a permanent SMTP
/// refusal (5xx) are [`SendError::Permanent`] (the contact fails: unreachable); 4xx and a
/// server that cannot be reached are [`SendError::Transient`] (retried until send-by).
#[derive(Debug, Clone)]
pub struct SubscriberMail {
    mailer: Mailer,
}

impl SubscriberMail {
    pub fn new(mailer: Mailer) -> SubscriberMail {
        SubscriberMail { mailer }
    }
}

/// The error text of a contact whose subscriber has no e-mail address.
pub const NO_ADDRESS: &str = "the subscriber has no e-mail address";

#[async_trait::async_trait]
impl crate::Channel for SubscriberMail {
    fn kind(&self) -> &'static str {
        domain::ChannelKind::Email.as_str()
    }

    async fn send_batch(
        &self,
        batch: &[crate::Outbound],
    ) -> Vec<Result<crate::Accepted, SendError>> {
        let mut out = Vec::with_capacity(batch.len());
        // One after another: a wave's mails are few next to its SMS, and lettre's pool
        // keeps the connection open between them.
        for o in batch {
            let Some(address) = o.address.as_deref().filter(|a| !a.trim().is_empty()) else {
                out.push(Err(SendError::Permanent(NO_ADDRESS.to_owned())));
                continue;
            };
            let subject = o.subject.as_deref().unwrap_or_default();
            let res = self
                .mailer
                .send_keyed(&[address.to_owned()], subject, &o.text, None, Some(&o.key))
                .await
                .map(|()| crate::Accepted {
                    gateway_ref: None,
                    queued: false,
                });
            out.push(res);
        }
        out
    }
}

/// `<key@domain>` with `key` reduced to characters a `Message-ID` may hold.
fn message_id(key: &str, domain: &str) -> String {
    let left: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("<{left}@{domain}>")
}

fn env_secret(var: &str, what: &'static str) -> Result<String, BuildError> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(BuildError::MissingEnv {
            var: var.to_owned(),
            what,
        }),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "campaignd <campaignd@example.com>";

    fn file_mailer(dir: &std::path::Path) -> Mailer {
        Mailer::new(
            &EmailConfig::File {
                dir: dir.to_owned(),
            },
            FROM,
        )
        .unwrap()
    }

    fn emls(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn file_transport_writes_a_readable_eml() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mail");
        let mailer = file_mailer(&dir);

        mailer
            .send(
                &["ops@example.com".into(), "Lead <lead@example.com>".into()],
                "Wave w1 finished",
                "Sent 1200, delivered 1180.",
                None,
            )
            .await
            .unwrap();

        let files = emls(&dir);
        assert_eq!(files.len(), 1);
        let eml = &files[0];
        assert!(
            eml.contains("From: campaignd <campaignd@example.com>\r\n"),
            "{eml}"
        );
        assert!(
            eml.contains("To: ops@example.com, Lead <lead@example.com>\r\n"),
            "{eml}"
        );
        assert!(eml.contains("Subject: Wave w1 finished\r\n"), "{eml}");
        assert!(eml.contains("Content-Type: text/plain"), "{eml}");
        assert!(eml.contains("\r\n\r\nSent 1200, delivered 1180."), "{eml}");
        assert!(!eml.contains("multipart"), "{eml}");
    }

    #[tokio::test]
    async fn a_keyed_mail_carries_a_message_id_from_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let mailer = file_mailer(tmp.path());
        mailer
            .send_keyed(
                &["ops@example.com".into()],
                "s",
                "b",
                None,
                Some("report:run:42.1700000000000"),
            )
            .await
            .unwrap();
        let files = emls(tmp.path());
        assert_eq!(files.len(), 1);
        assert!(
            files[0].contains("Message-ID: <report.run.42.1700000000000@example.com>\r\n"),
            "{}",
            files[0]
        );
    }

    #[tokio::test]
    async fn html_report_is_multipart_alternative() {
        let tmp = tempfile::tempdir().unwrap();
        let mailer = file_mailer(tmp.path());

        mailer
            .send(
                &["ops@example.com".into()],
                "春季活动日报",
                "Delivered: 98%",
                Some("<h1>Delivered</h1><p>98%</p>"),
            )
            .await
            .unwrap();

        let files = emls(tmp.path());
        assert_eq!(files.len(), 1);
        let eml = &files[0];
        assert!(eml.contains("Content-Type: multipart/alternative"), "{eml}");
        let plain = eml.find("Content-Type: text/plain").expect("plain part");
        let html = eml.find("Content-Type: text/html").expect("html part");
        assert!(plain < html, "plain text must come first: {eml}");
        assert!(eml.contains("Delivered: 98%"), "{eml}");
        assert!(eml.contains("<h1>Delivered</h1><p>98%</p>"), "{eml}");
        // A raw UTF-8 subject is not a valid header; it must be RFC 2047 encoded.
        assert!(!eml.contains("春季"), "{eml}");
        assert!(
            eml.to_ascii_lowercase().contains("subject: =?utf-8?"),
            "{eml}"
        );
    }

    #[tokio::test]
    async fn bad_addresses_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = EmailConfig::File {
            dir: tmp.path().to_owned(),
        };

        let err = Mailer::new(&cfg, "campaignd at example").unwrap_err();
        assert!(matches!(err, BuildError::InvalidFrom { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("invalid e-mail sender address `campaignd at example`"),
            "{err}"
        );

        let mailer = Mailer::new(&cfg, FROM).unwrap();
        let err = mailer
            .send(
                &["ops@example.com".into(), "not-an-address".into()],
                "s",
                "b",
                None,
            )
            .await
            .unwrap_err();
        let SendError::Permanent(reason) = &err else {
            panic!("a bad address must not be retried: {err:?}");
        };
        assert!(
            reason.starts_with("invalid recipient address `not-an-address`"),
            "{reason}"
        );

        let err = mailer.send(&[], "s", "b", None).await.unwrap_err();
        assert_eq!(
            err,
            SendError::Permanent("e-mail has no recipients".to_owned())
        );
        assert!(emls(tmp.path()).is_empty());
    }

    #[tokio::test]
    async fn smtp_credentials_come_from_named_variables() {
        let smtp = |username_env: Option<&str>, password_env: Option<&str>| EmailConfig::Smtp {
            host: "127.0.0.1".into(),
            port: 2525,
            tls: SmtpTls::None,
            ca_file: None,
            username_env: username_env.map(str::to_owned),
            password_env: password_env.map(str::to_owned),
        };
        Mailer::new(&smtp(None, None), FROM).unwrap();

        let err = Mailer::new(&smtp(Some("CAMPAIGND_TEST_SMTP_USER"), None), FROM).unwrap_err();
        assert!(matches!(err, BuildError::IncompleteCredentials), "{err:?}");

        let err = Mailer::new(
            &smtp(
                Some("CAMPAIGND_TEST_UNSET_SMTP_USER_9D2E"),
                Some("CAMPAIGND_TEST_UNSET_SMTP_PASSWORD_9D2E"),
            ),
            FROM,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("`CAMPAIGND_TEST_UNSET_SMTP_USER_9D2E` is not set"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unreachable_smtp_server_is_transient() {
        // Bind then drop to get a port nobody listens on.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mailer = Mailer::new(
            &EmailConfig::Smtp {
                host: "127.0.0.1".into(),
                port,
                tls: SmtpTls::None,
                ca_file: None,
                username_env: None,
                password_env: None,
            },
            FROM,
        )
        .unwrap();
        let err = mailer
            .send(&["ops@example.com".into()], "s", "b", None)
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    }

    #[tokio::test]
    async fn ca_file_must_hold_a_certificate_and_needs_tls() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tmp = tempfile::tempdir().unwrap();
        let smtp = |tls: SmtpTls, ca_file: PathBuf| EmailConfig::Smtp {
            host: "127.0.0.1".into(),
            port: 2525,
            tls,
            ca_file: Some(ca_file),
            username_env: None,
            password_env: None,
        };

        let missing = tmp.path().join("missing.pem");
        let err = Mailer::new(&smtp(SmtpTls::Starttls, missing), FROM).unwrap_err();
        assert!(matches!(err, BuildError::CaFile { .. }), "{err:?}");

        // lettre would accept this file and trust nothing extra; the operator must hear now.
        let empty = tmp.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Mailer::new(&smtp(SmtpTls::Starttls, empty.clone()), FROM).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");

        let err = Mailer::new(&smtp(SmtpTls::None, empty), FROM).unwrap_err();
        assert!(matches!(err, BuildError::CaFileWithoutTls), "{err:?}");
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("localhost"));
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("[::1]"));
        assert!(!is_loopback("smtp.example.com"));
        assert!(!is_loopback("10.0.0.5"));
    }
}
