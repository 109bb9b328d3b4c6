//! The real components: a campaign sent through a real Kannel (bearerbox, smsbox, and
//! fakesmsc as the operator's SMSC), delivery reports and a subscriber's reply coming back
//! through Kannel to campaignd's callbacks, and the evaluation e-mailed through a real SMTP
//! server. Both are started by the project's scripts; when they are missing the test fails.

use std::sync::Arc;
use std::time::Duration;

use channels::email::{EmailConfig, Mailer, SmtpTls};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig, Event};
use tokio_util::sync::CancellationToken;

use crate::helpers::{self, TWO_WAVES};
use crate::services::{Kannel, Smtp, SmtpSetup, until};

/// How long the real components get for each step (sends, reports, the reply, the mail).
/// Campaign time does not pass while they work: the test moves a manual clock only once a
/// step's outcome is stored, so a loaded machine makes the test slower, never wrong.
const STEP: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_through_real_kannel_and_smtp() {
    let db = helpers::fresh_db(helpers::env_backend()).await;
    let store = db.store.clone();
    let base: Vec<_> = subscribers::generate(&catalogue::shipped(), 1500, 5).collect();
    store
        .insert_subscribers(
            &base,
            store::subscribers::OnDuplicate::Fail,
            store::wall_now(),
        )
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_base = format!("http://{}", listener.local_addr().unwrap());
    // Both on ports of their own, stopped when the test ends however it ends.
    let kannel = Kannel::start(&api_base, &helpers::gateway_token(&store).await);
    let smtp = Smtp::start(SmtpSetup {
        starttls: false,
        auth: false,
        reject_domain: None,
    });
    let cancel = CancellationToken::new();
    let api_cancel = cancel.clone();
    let origin = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
        .unwrap()
        .timestamp_millis();
    let manual = ManualClock::new(origin);
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
    let wf = spec::load_file(&helpers::write_workflows(dir.path(), TWO_WAVES))
        .unwrap_or_else(|d| panic!("{d:?}"));
    let chans = helpers::kannel_channels(
        &store,
        kannel.sendsms_url(),
        format!("{api_base}/callbacks/kannel/dlr"),
        32,
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
        "campaignd@example.com",
    )
    .unwrap();
    let mut cfg = EngineConfig::new(
        "kannel-test",
        helpers::repo_root().join("workflows/calendars"),
    );
    cfg.poll = Duration::from_millis(20);
    let engine = Arc::new(
        Engine::new(store.clone(), clock.clone(), chans, cfg)
            .unwrap()
            .with_mailer(mailer, vec!["retention-staff@example.com".into()]),
    );
    engine.load(vec![wf]).await.unwrap();
    let mut events = engine.subscribe();
    let run_id = engine.trigger("test-campaign", "test").await.unwrap();
    let engine_task = tokio::spawn(engine.clone().run(cancel.clone(), false));

    // Wave 1 goes out through Kannel, and fakesmsc reports every message delivered.
    let w1_id = until("wave 1 to be planned", STEP, || async {
        let waves = store.wave_runs(run_id).await.unwrap();
        waves.first().filter(|w| w.state == "open").map(|w| w.id)
    })
    .await;
    let replier = until("every wave-1 message to be delivered", STEP, || async {
        let states = store.contact_states(w1_id).await.unwrap();
        let treatment: Vec<_> = states.iter().filter(|(_, a, _)| a == "treatment").collect();
        (!treatment.is_empty() && treatment.iter().all(|(_, _, st)| st == "delivered"))
            .then(|| treatment[0].0)
    })
    .await;
    // One subscriber replies "1" through the fake SMSC, inside the window.
    let msisdn = store.msisdns_of(&[replier]).await.unwrap().remove(0).1;
    kannel.mo(&msisdn, "10086", "1");
    until("the reply to be attributed", STEP, || async {
        let counts = store.wave_counts(w1_id).await.unwrap();
        (counts.responded(store::contacts::Arm::Treatment) == 1).then_some(())
    })
    .await;
    // The window closes: wave 2 (outbound calls) goes to those who did not reply.
    manual.advance(Duration::from_secs(86_400 + 60));
    until("wave 2 to be planned", STEP, || async {
        let waves = store.wave_runs(run_id).await.unwrap();
        waves.get(1).filter(|w| w.state == "open").map(|_| ())
    })
    .await;
    // Nobody works the call tasks; when wave 2's window closes the run is evaluated.
    manual.advance(Duration::from_secs(86_400 + 60));
    let report = tokio::time::timeout(STEP, async {
        loop {
            match events.recv().await.unwrap() {
                Event::RunFinished {
                    run_id: r, report, ..
                } if r == run_id => break report,
                _ => {}
            }
        }
    })
    .await
    .expect("the run finishes once its last window closed");
    // The report mail was queued with the finish; the engine's mail loop sends it through
    // the real SMTP server and settles the row.
    let mails = crate::services::wait_for("the report e-mail", Duration::from_secs(60), || {
        Some(smtp.messages()).filter(|m| !m.is_empty())
    })
    .await;
    let outbox = until("the report mail to be settled", STEP, || async {
        store
            .mail_by_key(&store::mail::report_dedup_key(run_id))
            .await
            .unwrap()
            .filter(|m| m.state != store::mail::MailState::Queued)
    })
    .await;
    cancel.cancel();
    engine_task.await.unwrap().unwrap();
    assert_eq!(outbox.state, store::mail::MailState::Sent);
    assert_eq!(outbox.attempt, 1);

    let waves = store.wave_runs(run_id).await.unwrap();
    let w1 = store.contact_states(waves[0].id).await.unwrap();
    let treatment: Vec<_> = w1.iter().filter(|(_, a, _)| a == "treatment").collect();
    assert!(!treatment.is_empty());
    assert!(
        treatment.iter().all(|(_, _, st)| st == "delivered"),
        "every message was delivered per Kannel's reports: {w1:?}"
    );
    assert_eq!(report.waves[0].responded, 1);
    let w2: Vec<i64> = store
        .contact_states(waves[1].id)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    assert_eq!(w2.len(), treatment.len() - 1);
    assert!(
        !w2.contains(&replier),
        "the subscriber who replied is not called"
    );

    // The report reached staff through the real SMTP server, once, from the queued row.
    assert_eq!(smtp.messages().len(), 1, "one report e-mail");
    assert_eq!(mails.len(), 1, "one report e-mail");
    assert!(
        mails[0].contains(&format!("test-campaign run {run_id} evaluation")),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains("retention-staff@example.com"));
    assert!(
        mails[0].contains(&format!("Message-ID: <report.run.{run_id}.")),
        "the Message-ID comes from the dedup key: {}",
        mails[0]
    );
    assert!(mails[0].contains("text/html"), "{}", mails[0]);
}
