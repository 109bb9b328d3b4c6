//! `channel: preferred` through the real components: each subscriber's first choice is
//! e-mail, mailed through a real SMTP server; the server refuses the addresses at one domain
//! (550 at RCPT), those contacts end `failed`, and their fallback, written with that settle,
//! goes by SMS through a real Kannel (fakesmsc as the SMSC), whose delivery reports come back
//! through campaignd's callbacks. Nobody else gets an SMS, and nobody gets two.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use channels::Channel;
use channels::email::{EmailConfig, Mailer, SmtpTls, SubscriberMail};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::contacts::Choice;
use store::subscribers::OnDuplicate;
use tokio_util::sync::CancellationToken;

use crate::helpers;
use crate::services::{Kannel, Smtp, SmtpSetup, until, wait_for};

const WORKFLOW: &str = r#"
campaign: pref-e2e
timezone: Asia/Shanghai
audience:
  segment: students
waves:
  - id: offer
    channel: preferred
    templates:
      email: templates/mail.txt
      sms: templates/offer.txt
    respond_within: 1d
"#;

const MAIL: &str =
    "Subject: {name}, your campus bundle\n\nDear {name}, the campus bundle is 18 yuan a month.\n";

/// The domain the test server refuses.
const BOUNCING: &str = "bounce.example";

/// How long the real components get for each step; campaign time stands still meanwhile.
const STEP: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mail_falls_back_to_one_sms_through_real_kannel() {
    let db = helpers::fresh_db(helpers::env_backend()).await;
    let store = db.store.clone();
    // 0, 1 reachable by mail; 2, 3 at the refusing domain. All prefer mail 09:00-12:00,
    // then SMS in the same slot.
    let subs: Vec<_> = (0..4)
        .map(|i| {
            let domain = if i < 2 { "example.com" } else { BOUNCING };
            store::testing::subscriber(&format!("1381235{i:04}"))
                .with("name", format!("Student {i}").as_str())
                .with("email", format!("student{i}@{domain}").as_str())
                .with("first_channel", "email")
                .with("first_channel_slot", "09:00-12:00")
                .with("second_channel", "sms")
                .with("second_channel_slot", "09:00-12:00")
        })
        .collect();
    store
        .insert_subscribers(&subs, OnDuplicate::Fail, store::wall_now())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for s in &subs {
        ids.push(
            store
                .subscriber_by_msisdn(&s.msisdn)
                .await
                .unwrap()
                .unwrap(),
        );
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_base = format!("http://{}", listener.local_addr().unwrap());
    let kannel = Kannel::start(&api_base, &helpers::gateway_token(&store).await);
    let smtp = Smtp::start(SmtpSetup {
        starttls: false,
        auth: false,
        reject_domain: Some(BOUNCING),
    });
    let cancel = CancellationToken::new();
    let api_cancel = cancel.clone();
    let manual = ManualClock::new(
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
            .unwrap()
            .timestamp_millis(),
    );
    let clock = manual.clock();
    tokio::spawn(api::serve_with(
        listener,
        api::AppState {
            store: store.clone(),
        },
        helpers::serve_options(clock.now_fn()),
        async move { api_cancel.cancelled().await },
    ));

    let dir = tempfile::tempdir().unwrap();
    let wf_dir = dir.path().join("workflows");
    helpers::write_workflows(&wf_dir, WORKFLOW);
    std::fs::write(wf_dir.join("templates/mail.txt"), MAIL).unwrap();
    let wf =
        spec::load_file(&wf_dir.join("test-campaign.yaml")).unwrap_or_else(|d| panic!("{d:?}"));
    let mut chans: HashMap<String, Arc<dyn Channel>> = helpers::kannel_channels(
        &store,
        kannel.sendsms_url(),
        format!("{api_base}/callbacks/kannel/dlr"),
        4,
    )
    .await;
    let mailer = Mailer::new(
        &EmailConfig::Smtp {
            host: "127.0.0.1".into(),
            port: smtp.port,
            tls: SmtpTls::None,
            ca_file: None,
            username_env: None,
            password_env: None,
        },
        "Campus offers <offers@example.com>",
    )
    .unwrap();
    chans.insert("email".into(), Arc::new(SubscriberMail::new(mailer)));
    let engine = Engine::new(
        store.clone(),
        clock,
        chans,
        EngineConfig::new("pref-e2e", dir.path().join("no-calendars")),
    )
    .unwrap();
    engine.load(vec![wf]).await.unwrap();
    let run = engine.trigger("pref-e2e", "e2e").await.unwrap();
    engine.tick().await.unwrap();

    // First choices: two mails accepted, two refused; the refused get their fallback.
    let stats = engine.dispatch_round("email").await.unwrap();
    assert_eq!((stats.sent, stats.failed), (2, 2), "{stats:?}");
    let key = |i: usize, choice: Choice| {
        let store = store.clone();
        let id = ids[i];
        async move {
            store
                .choice_contact_key(run, "offer", id, choice)
                .await
                .unwrap()
        }
    };
    for i in 0..4 {
        assert_eq!(
            key(i, Choice::Second).await.is_some(),
            i >= 2,
            "subscriber {i}"
        );
    }
    let stats = engine.dispatch_round("sms").await.unwrap();
    assert_eq!(stats.sent, 2, "{stats:?}");
    assert_eq!(engine.dispatch_round("sms").await.unwrap().claimed, 0);

    // fakesmsc reports both delivered, through Kannel to the callbacks.
    let wave = store.wave_runs(run).await.unwrap()[0].id;
    until("both fallbacks delivered", STEP, || {
        let (store, engine) = (store.clone(), &engine);
        async move {
            engine.tick().await.unwrap();
            let states = store.contact_states(wave).await.unwrap();
            (states.iter().filter(|(_, _, st)| st == "delivered").count() == 2).then_some(())
        }
    })
    .await;
    let delivered = wait_for("fakesmsc to log both messages", STEP, || {
        Some(kannel.delivered()).filter(|d| d.len() >= 2)
    })
    .await;
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    for s in &subs[2..4] {
        let msisdn = &s.msisdn;
        assert_eq!(
            delivered
                .iter()
                .filter(|m| m.contains(msisdn.as_str()))
                .count(),
            1,
            "{msisdn}: {delivered:?}"
        );
    }
    let mails = wait_for("two mails stored", STEP, || {
        Some(smtp.messages()).filter(|m| m.len() >= 2)
    })
    .await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let states = store.contact_states(wave).await.unwrap();
    let mut by_state: Vec<(i64, String)> = states.into_iter().map(|(s, _, st)| (s, st)).collect();
    by_state.sort();
    assert_eq!(
        by_state,
        [
            (ids[0], "sent".to_owned()),
            (ids[1], "sent".to_owned()),
            (ids[2], "delivered".to_owned()),
            (ids[2], "failed".to_owned()),
            (ids[3], "delivered".to_owned()),
            (ids[3], "failed".to_owned()),
        ]
    );
    // Reach per channel and choice: the mail reached two of four, the SMS both fallbacks.
    let reach: Vec<(String, Choice, u64, u64)> = store
        .choice_reach(wave)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.channel.as_str().to_owned(),
                r.choice,
                r.targeted,
                r.reached,
            )
        })
        .collect();
    assert_eq!(
        reach,
        [
            ("email".to_owned(), Choice::First, 4, 2),
            ("sms".to_owned(), Choice::Second, 2, 2),
        ]
    );
    cancel.cancel();
}
