//! The `email` wave channel through a real SMTP server (aiosmtpd, STARTTLS with AUTH, as
//! production is configured): each treatment contact with an address gets one mail, to that
//! address only, with the template's subject and body rendered for them and the contact's
//! key as `Message-ID`; the server's permanent refusal (550 at RCPT) and a missing address
//! leave the contact `failed` (unreachable) with the reason; nothing is sent twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use channels::Channel;
use channels::email::{Mailer, SubscriberMail};
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::subscribers::OnDuplicate;

use crate::services::{SMTP_PASSWORD_ENV, Smtp, SmtpSetup, wait_for};

const WORKFLOW: &str = r#"
campaign: mail-offer
timezone: Asia/Shanghai
audience:
  segment: students
waves:
  - id: mail
    channel: email
    template: templates/mail.txt
    respond_within: 1d
    responses:
      - event: { type: order, value: campus-bundle }
"#;

const TEMPLATE: &str = "Subject: {name}, your campus bundle\n\nDear {name},\n\nthe campus bundle is 18 yuan a month in {region}.\n";

/// The domain the test server refuses (550 at RCPT).
const BOUNCING: &str = "bounce.example";

#[tokio::test]
async fn an_email_wave_mails_each_address_once_through_smtp_and_records_the_refused_and_unaddressed()
 {
    let db = crate::helpers::fresh_db(crate::helpers::env_backend()).await;
    let dir = tempfile::tempdir().unwrap();
    let wf_dir = dir.path().join("workflows");
    std::fs::create_dir_all(wf_dir.join("templates")).unwrap();
    std::fs::write(wf_dir.join("segments.yaml"), crate::helpers::SEGMENTS).unwrap();
    std::fs::write(wf_dir.join("templates/mail.txt"), TEMPLATE).unwrap();
    std::fs::write(wf_dir.join("mail-offer.yaml"), WORKFLOW).unwrap();
    let wf = spec::load_file(&wf_dir.join("mail-offer.yaml")).unwrap_or_else(|d| panic!("{d:?}"));

    // Six with an address, two at the bouncing domain, two without any.
    let address = |i: usize| match i {
        0..6 => Some(format!("student{i}@example.com")),
        6..8 => Some(format!("student{i}@{BOUNCING}")),
        _ => None,
    };
    let subs: Vec<_> = (0..10)
        .map(|i| {
            let s = store::testing::subscriber(&format!("1381234{i:04}"))
                .with("name", format!("Student {i}").as_str());
            match address(i) {
                Some(a) => s.with("email", a.as_str()),
                None => s,
            }
        })
        .collect();
    let now = store::wall_now();
    db.store
        .insert_subscribers(&subs, OnDuplicate::Fail, now - 86_400_000)
        .await
        .unwrap();
    let mut by_id = HashMap::new();
    for (i, s) in subs.iter().enumerate() {
        let id = db
            .store
            .subscriber_by_msisdn(&s.msisdn)
            .await
            .unwrap()
            .unwrap();
        by_id.insert(id, i);
    }

    let smtp = Smtp::start(SmtpSetup {
        starttls: true,
        auth: true,
        reject_domain: Some(BOUNCING),
    });
    let mailer = Mailer::new(
        &smtp.starttls_config(SMTP_PASSWORD_ENV, true),
        "Campus offers <offers@example.com>",
    )
    .unwrap();
    let clock = ManualClock::new(now);
    let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    chans.insert("email".into(), Arc::new(SubscriberMail::new(mailer)));
    let engine = Engine::new(
        db.store.clone(),
        clock.clock(),
        chans,
        EngineConfig::new("email-e2e", dir.path().join("no-calendars")),
    )
    .unwrap();
    engine.load(vec![wf]).await.unwrap();
    let run = engine.trigger("mail-offer", "e2e").await.unwrap();
    engine.tick().await.unwrap();
    let stats = engine.dispatch_round("email").await.unwrap();
    assert_eq!(stats.claimed, 10, "{stats:?}");
    assert_eq!((stats.sent, stats.failed), (6, 4), "{stats:?}");
    // Settled: nothing is due again, so nothing goes twice.
    assert_eq!(engine.dispatch_round("email").await.unwrap().claimed, 0);

    let wave = db.store.wave_runs(run).await.unwrap()[0].id;
    let states = db.store.contact_states(wave).await.unwrap();
    assert_eq!(states.len(), 10);
    for (sid, arm, state) in &states {
        assert_eq!(arm, "treatment");
        let i = by_id[sid];
        let want = if i < 6 { "sent" } else { "failed" };
        assert_eq!(state, want, "subscriber {i}");
    }

    let mails = wait_for("six mails stored", Duration::from_secs(30), || {
        Some(smtp.messages()).filter(|m| m.len() >= 6)
    })
    .await;
    assert_eq!(mails.len(), 6, "{mails:#?}");
    for i in 0..6 {
        let to = address(i).unwrap();
        let mine: Vec<&String> = mails
            .iter()
            .filter(|m| m.lines().any(|l| l.trim_end() == format!("X-RcptTo: {to}")))
            .collect();
        assert_eq!(mine.len(), 1, "{to}: {mails:#?}");
        let m = mine[0];
        assert!(
            m.contains(&format!("Subject: Student {i}, your campus bundle")),
            "{m}"
        );
        assert!(m.contains(&format!("Dear Student {i},")), "{m}");
        assert!(
            m.contains("the campus bundle is 18 yuan a month in beijing."),
            "{m}"
        );
        assert!(m.contains("<offers@example.com>"), "{m}");
        // One recipient per mail: no subscriber sees another's address.
        for j in (0..8).filter(|j| *j != i) {
            assert!(!m.contains(&address(j).unwrap()), "{m}");
        }
        assert!(m.contains("Message-ID: <"), "{m}");
    }
    assert!(
        smtp.log()
            .contains(&format!("rejected rcpt student6@{BOUNCING}"))
    );

    // Why each unreached contact failed, as `campaignd why` shows it.
    let errors = db.store.contact_errors(wave).await.unwrap();
    for (sid, error) in errors {
        let i = by_id[&sid];
        match i {
            6 | 7 => assert!(error.contains("550"), "{i}: {error}"),
            8 | 9 => assert!(error.contains(channels::email::NO_ADDRESS), "{i}: {error}"),
            _ => panic!("subscriber {i} has an error: {error}"),
        }
    }
}
