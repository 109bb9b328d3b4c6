//! The shipped core-customer anomaly monitor (`workflows/monitors/core-anomaly.yaml`, with
//! `workflows/staff.yaml`) over a synthetic base with a year of history and events
//! (`campaignd generate-base`), its digests sent through a real SMTP server (aiosmtpd, over
//! STARTTLS with AUTH, as production is configured) and read back from the server's maildir:
//! every open alert is in its owner's mail, numbers masked, one mail per owner; the next
//! day's evaluation tells nobody again.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use channels::email::Mailer;
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::alerts::EpisodeState;

use crate::services::{SMTP_PASSWORD_ENV, Smtp, SmtpSetup, wait_for};

/// The workflows folder of the repository, without its campaigns: the catalogue, segments,
/// staff and monitors only.
fn monitors_only(dir: &std::path::Path) -> std::path::PathBuf {
    let src = crate::helpers::repo_root().join("workflows");
    let wf = dir.join("workflows");
    std::fs::create_dir_all(wf.join("monitors")).unwrap();
    for f in ["attributes.yaml", "segments.yaml", "staff.yaml"] {
        std::fs::copy(src.join(f), wf.join(f)).unwrap();
    }
    // Every name with markup characters: a digest's HTML part must show them as text.
    let staff = std::fs::read_to_string(wf.join("staff.yaml")).unwrap();
    let marked: String = staff
        .lines()
        .map(|l| match l.strip_prefix("    name: ") {
            Some(name) => format!("    name: \"{name} <&>\"\n"),
            None => format!("{l}\n"),
        })
        .collect();
    assert_ne!(marked, staff);
    std::fs::write(wf.join("staff.yaml"), marked).unwrap();
    std::fs::copy(
        src.join("monitors/core-anomaly.yaml"),
        wf.join("monitors/core-anomaly.yaml"),
    )
    .unwrap();
    wf
}

/// The next 07:30 in Shanghai after `now`: half an hour after the monitor's daily slot.
fn next_morning(now: i64) -> i64 {
    let tz = chrono_tz::Asia::Shanghai;
    let local = tz.timestamp_millis_opt(now).unwrap().date_naive();
    let mut at = tz
        .from_local_datetime(&local.and_hms_opt(7, 30, 0).unwrap())
        .unwrap()
        .timestamp_millis();
    if at <= now {
        at += 86_400_000;
    }
    at
}

#[tokio::test]
async fn core_anomaly_alerts_reach_their_owners_through_smtp() {
    let db = crate::helpers::fresh_db(crate::helpers::env_backend()).await;
    let dir = tempfile::tempdir().unwrap();
    let wf = monitors_only(dir.path());
    // The base comes from the product's own generator, through the CLI.
    let config = dir.path().join("campaignd.toml");
    let mut toml = String::new();
    writeln!(toml, "database_url = {:?}", db.url).unwrap();
    if let Some(s) = &db.schema {
        writeln!(toml, "database_schema = {s:?}").unwrap();
    }
    writeln!(toml, "workflows = {:?}", wf.display().to_string()).unwrap();
    std::fs::write(&config, toml).unwrap();
    crate::daemon::cli(
        &config,
        &[
            "generate-base",
            "--subscribers",
            "3000",
            "--history-months",
            "12",
        ],
    )
    .await;

    let (monitors, staff, diags) = spec::monitor::load_monitors(&wf);
    assert!(diags.is_empty(), "{diags:#?}");
    let smtp = Smtp::start(SmtpSetup {
        starttls: true,
        auth: true,
        reject_domain: None,
    });
    let mailer = Mailer::new(
        &smtp.starttls_config(SMTP_PASSWORD_ENV, true),
        "campaignd <campaignd@example.com>",
    )
    .unwrap();
    let clock = ManualClock::new(next_morning(store::wall_now()));
    let engine = Engine::new(
        db.store.clone(),
        clock.clock(),
        HashMap::new(),
        EngineConfig::new("monitor-e2e", dir.path().join("no-calendars")),
    )
    .unwrap()
    .with_mailer(mailer, Vec::new())
    .with_monitors(monitors, staff.clone());

    assert_eq!(engine.tick().await.unwrap().monitor_evaluations, 1);
    let alerts = db
        .store
        .alerts(None, Some(EpisodeState::Open), 10_000)
        .await
        .unwrap();
    // The synthetic base has core customers whose spending and calls fall before they
    // port out; some have not yet.
    assert!(!alerts.is_empty(), "no alerts over a base with churners");
    let mut by_owner: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for a in &alerts {
        by_owner.entry(a.owner.clone()).or_default().push(a.id);
        assert!(staff.get(&a.owner).is_some(), "unknown owner {}", a.owner);
    }
    let sent = engine.mail_round().await.unwrap();
    assert_eq!(sent.sent as usize, by_owner.len(), "{sent:?}");

    let mails = wait_for(
        "every digest in the maildir",
        Duration::from_secs(30),
        || Some(smtp.messages()).filter(|m| m.len() >= by_owner.len()),
    )
    .await;
    assert_eq!(mails.len(), by_owner.len());
    for (owner, ids) in &by_owner {
        let email = &staff.get(owner).unwrap().email;
        let mine: Vec<&String> = mails
            .iter()
            .filter(|m| m.contains(&format!("X-RcptTo: {email}")))
            .collect();
        assert_eq!(mine.len(), 1, "{owner} got {} digests", mine.len());
        let mail = mine[0];
        assert!(
            mail.contains("Subject: [campaignd] core-anomaly: "),
            "{mail}"
        );
        for id in ids {
            assert!(
                mail.contains(&format!("alert {id} ")),
                "alert {id} missing: {mail}"
            );
        }
        // No phone number in the clear: 11 digits in a row never appear in the body (the
        // headers carry a Message-ID with a timestamp).
        let body = mail
            .split_once("\r\n\r\n")
            .or_else(|| mail.split_once("\n\n"))
            .map(|(_, b)| b)
            .unwrap_or(mail);
        assert!(body.contains("****"), "no masked number in: {body}");
        let digits_in_a_row = body
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(digits_in_a_row < 11, "an unmasked number in: {mail}");
        // The HTML part: greeting and a row per alert, the name's markup as text.
        assert!(
            mail.contains("Content-Type: multipart/alternative"),
            "{mail}"
        );
        let html = crate::helpers::mail_part(mail, "text/html");
        let name = &staff.get(owner).unwrap().name;
        let base = name.strip_suffix(" <&>").expect("a marked name");
        let escaped = base.replace('&', "&amp;").replace('\'', "&#39;");
        assert!(
            html.contains(&format!("<p>{escaped} &lt;&amp;&gt;,</p>")),
            "{html}"
        );
        assert!(!html.contains("<&>"), "{html}");
        for id in ids {
            assert!(
                html.contains(&format!("<tr><td>{id}</td>")),
                "alert {id}: {html}"
            );
        }
        for never in ["http:", "https:", "src=", "url("] {
            assert!(!html.contains(never), "{never} in {html}");
        }
    }

    // The next morning: the episodes are still open (or closed), nobody is told again
    // unless an alert rose a level.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(engine.tick().await.unwrap().monitor_evaluations, 1);
    let again = db.store.alerts(None, None, 10_000).await.unwrap();
    assert_eq!(again.len(), alerts.len(), "no new episode without new data");
    assert_eq!(engine.mail_round().await.unwrap().sent, 0);
}
