//! campaignd's Mailer against a real SMTP server (aiosmtpd via scripts/smtp.sh) with AUTH
//! and STARTTLS: the password goes only over TLS, a wrong password delivers nothing, and a
//! config that requires TLS never falls back to plain text. The server's certificate comes
//! from a CA generated at start; the Mailer trusts it only because the config names the file.

use std::time::Duration;

use channels::SendError;
use channels::email::{EmailConfig, Mailer, SmtpTls};

use crate::services::{SECRET_ENV, SMTP_PASSWORD_ENV, Smtp, SmtpSetup, env_secret, wait_for};

const FROM: &str = "campaignd <campaignd@example.com>";
const TO: &str = "retention-staff@example.com";

async fn send(mailer: &Mailer, subject: &str) -> Result<(), SendError> {
    mailer
        .send(&[TO.into()], subject, "Wave 1: 1200 sent.", None)
        .await
}

#[tokio::test]
async fn mail_goes_through_starttls_with_auth() {
    crate::helpers::init();
    let smtp = Smtp::start(SmtpSetup {
        starttls: true,
        auth: true,
        reject_domain: None,
    });
    let mailer = Mailer::new(&smtp.starttls_config(SMTP_PASSWORD_ENV, true), FROM).unwrap();

    send(&mailer, "report over starttls").await.unwrap();

    let mails = wait_for("the mail in the maildir", Duration::from_secs(30), || {
        Some(smtp.messages()).filter(|m| !m.is_empty())
    })
    .await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.contains("Subject: report over starttls"), "{mail}");
    assert!(mail.contains(&format!("X-RcptTo: {TO}")), "{mail}");
    // The server's own record of the session: authenticated as our user, over TLS.
    let user = env_secret(SECRET_ENV);
    assert!(
        mail.contains(&format!("X-Authenticated-User: {user}")),
        "{mail}"
    );
    assert!(mail.contains("X-TLS: TLSv1."), "{mail}");
    let log = smtp.log();
    assert!(
        log.contains(&format!("auth ok user={user} ")) && log.contains(" tls=TLSv1."),
        "{log}"
    );
}

#[tokio::test]
async fn wrong_smtp_password_fails_and_delivers_nothing() {
    crate::helpers::init();
    let smtp = Smtp::start(SmtpSetup {
        starttls: true,
        auth: true,
        reject_domain: None,
    });
    // The variable holds something else than the server's password.
    let mailer = Mailer::new(&smtp.starttls_config(SECRET_ENV, true), FROM).unwrap();

    let err = send(&mailer, "wrong password").await.unwrap_err();
    // 535: resending with the same password gets the same answer.
    assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("535"), "{err}");
    assert!(
        smtp.log().contains("auth failed user="),
        "the server saw the attempt: {}",
        smtp.log()
    );
    assert!(smtp.messages().is_empty(), "nothing delivered");
}

#[tokio::test]
async fn required_starttls_never_falls_back_to_plain_text() {
    crate::helpers::init();
    // This server offers no STARTTLS and would take the mail in plain text without AUTH:
    // only the Mailer's refusal keeps it from going out unencrypted.
    let smtp = Smtp::start(SmtpSetup {
        starttls: false,
        auth: false,
        reject_domain: None,
    });
    let cfg = EmailConfig::Smtp {
        host: "127.0.0.1".into(),
        port: smtp.port,
        tls: SmtpTls::Starttls,
        ca_file: None,
        username_env: None,
        password_env: None,
    };
    let mailer = Mailer::new(&cfg, FROM).unwrap();

    let err = send(&mailer, "must not go in plain text")
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_ascii_lowercase().contains("tls"),
        "{err}"
    );
    assert!(
        smtp.messages().is_empty(),
        "nothing delivered in plain text"
    );
}

#[tokio::test]
async fn certificate_of_an_unknown_ca_is_refused() {
    crate::helpers::init();
    let smtp = Smtp::start(SmtpSetup {
        starttls: true,
        auth: true,
        reject_domain: None,
    });
    // Same server, but the config does not name its CA: verification must fail, and the
    // password must not be sent.
    let mailer = Mailer::new(&smtp.starttls_config(SMTP_PASSWORD_ENV, false), FROM).unwrap();

    let err = send(&mailer, "untrusted certificate").await.unwrap_err();
    assert!(
        err.to_string().to_ascii_lowercase().contains("certificate"),
        "{err}"
    );
    assert!(smtp.messages().is_empty(), "nothing delivered");
    assert!(
        !smtp.log().contains("auth "),
        "no AUTH attempt reached the server: {}",
        smtp.log()
    );
}
