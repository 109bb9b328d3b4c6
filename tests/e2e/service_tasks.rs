//! The service-staff channel with the shipped VIP club workflow (`workflows/vip-club.yaml`:
//! a service wave for the `vip-club` desk, `sla: 2d`, `escalate_to: vip-club-supervisor`,
//! both from `workflows/staff.yaml`), its digests sent through a real SMTP server
//! (aiosmtpd, STARTTLS with AUTH, as production is configured) and read back from the
//! server's maildir: the desk gets one mail listing its new tasks, numbers masked; two days
//! on, the supervisor gets one mail listing exactly the tasks nobody worked, and nobody
//! else is mailed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use channels::Channel;
use channels::email::Mailer;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::inbound::TaskState;
use store::subscribers::OnDuplicate;

use crate::services::{SMTP_PASSWORD_ENV, Smtp, SmtpSetup, wait_for};

/// The workflows folder with the VIP club campaign and what it reads.
fn vip_club_only(dir: &std::path::Path) -> std::path::PathBuf {
    let src = crate::helpers::repo_root().join("workflows");
    let wf = dir.join("workflows");
    std::fs::create_dir_all(wf.join("templates")).unwrap();
    for f in [
        "attributes.yaml",
        "segments.yaml",
        "staff.yaml",
        "vip-club.yaml",
        "templates/vip-invitation.txt",
        "templates/vip-survey.txt",
        "templates/vip-premium-offer.txt",
    ] {
        std::fs::copy(src.join(f), wf.join(f)).unwrap();
    }
    // A name with markup characters: the digest's HTML part must show it as text.
    let staff = std::fs::read_to_string(wf.join("staff.yaml")).unwrap();
    let renamed = staff.replacen("name: VIP club desk\n", "name: \"VIP <club> & desk\"\n", 1);
    assert_ne!(renamed, staff);
    std::fs::write(wf.join("staff.yaml"), renamed).unwrap();
    wf
}

/// The plain-text part as a mail client shows it (the digest is multipart/alternative).
fn body(mail: &str) -> String {
    crate::helpers::mail_part(mail, "text/plain")
}

/// The HTML part of a digest: a page of its own, nothing loaded from elsewhere, and no value
/// from data left as markup (the desk's name and each customer id carry `<`, `&`, `"`).
fn html_part(mail: &str) -> String {
    assert!(
        mail.contains("Content-Type: multipart/alternative"),
        "{mail}"
    );
    let html = crate::helpers::mail_part(mail, "text/html");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.trim_end().ends_with("</body></html>"), "{html}");
    for never in ["<club>", "c<", "http:", "https:", "src=", "url(", "@import"] {
        assert!(!html.contains(never), "{never} in {html}");
    }
    html
}

fn assert_masked(mail: &str) {
    let body = body(mail);
    assert!(body.contains("****"), "no masked number in: {body}");
    let digits_in_a_row = body
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(digits_in_a_row < 11, "an unmasked number in: {mail}");
}

#[tokio::test]
async fn vip_club_tasks_reach_the_desk_and_overdue_ones_the_supervisor_through_smtp() {
    let db = crate::helpers::fresh_db(crate::helpers::env_backend()).await;
    let dir = tempfile::tempdir().unwrap();
    let wf_dir = vip_club_only(dir.path());
    let wf = spec::load_file(&wf_dir.join("vip-club.yaml")).unwrap_or_else(|d| panic!("{d:?}"));
    let (_, staff, diags) = spec::monitor::load_monitors(&wf_dir);
    assert!(diags.is_empty(), "{diags:#?}");
    let desk = staff.get("vip-club").unwrap().clone();
    let supervisor = staff.get("vip-club-supervisor").unwrap().clone();

    // Twenty gold members (ARPU 300: the club's audience) and ten who are not.
    let subs: Vec<_> = (0..30)
        .map(|i| {
            store::testing::subscriber(&format!("1381234{i:04}"))
                .with("arpu_3m", if i < 20 { 300.0 } else { 60.0 })
                .with("external_id", format!("c<{i}>&\"x\""))
        })
        .collect();
    let now = store::wall_now();
    db.store
        .insert_subscribers(&subs, OnDuplicate::Fail, now - 86_400_000)
        .await
        .unwrap();

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
    let clock = ManualClock::new(now);
    let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    chans.insert(
        "service".into(),
        Arc::new(channels::worklist::Worklist::new(
            db.store.clone(),
            "service",
        )),
    );
    let engine = Engine::new(
        db.store.clone(),
        clock.clock(),
        chans,
        EngineConfig::new("service-e2e", dir.path().join("no-calendars")),
    )
    .unwrap()
    .with_mailer(mailer, Vec::new())
    .with_monitors(Vec::new(), staff.clone());
    engine.load(vec![wf]).await.unwrap();
    engine.trigger("vip-club", "e2e").await.unwrap();
    engine.tick().await.unwrap();
    let opened = engine.dispatch_round("service").await.unwrap().sent;
    // The control group (5%) gets no task; the rest do.
    assert!((15..=20).contains(&opened), "{opened} tasks");
    let tasks = db
        .store
        .tasks(Some("vip-club"), TaskState::Open, 100)
        .await
        .unwrap();
    assert_eq!(tasks.len() as u64, opened);

    // The next pass tells the desk: one mail, every task in it.
    assert_eq!(engine.tick().await.unwrap().tasks.digests, 1);
    assert_eq!(engine.mail_round().await.unwrap().sent, 1);
    let mails = wait_for("the desk's digest", Duration::from_secs(30), || {
        Some(smtp.messages()).filter(|m| !m.is_empty())
    })
    .await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(
        mail.contains(&format!("X-RcptTo: {}", desk.email)),
        "{mail}"
    );
    assert!(
        mail.contains(&format!(
            "Subject: [campaignd] tasks: {opened} new and 0 overdue for {}",
            desk.name
        )),
        "{mail}"
    );
    for t in &tasks {
        assert!(
            body(mail).contains(&format!("task {}  service  vip-club/invitation  ", t.id)),
            "task {} missing: {mail}",
            t.id
        );
    }
    assert_masked(mail);
    // The HTML part: the greeting, a row per task (number masked, customer id escaped).
    let html = html_part(mail);
    assert!(
        html.contains("<p>VIP &lt;club&gt; &amp; desk,</p>"),
        "{html}"
    );
    assert!(
        html.contains("<h2>New tasks</h2>") && !html.contains("<h2>Overdue"),
        "{html}"
    );
    for t in &tasks {
        let row = format!(
            "<tr><td>{}</td><td>service</td><td>vip-club/invitation</td><td>138****",
            t.id
        );
        assert!(html.contains(&row), "task {} missing: {html}", t.id);
    }
    assert_eq!(html.matches("<td>c&lt;").count(), tasks.len(), "{html}");
    assert_eq!(
        html.matches("&gt;&amp;&quot;x&quot;</td>").count(),
        tasks.len(),
        "{html}"
    );

    // The desk works three tasks; two days and an hour on, the rest are overdue and go to
    // the supervisor, once.
    let worked: Vec<i64> = tasks.iter().take(3).map(|t| t.id).collect();
    for id in &worked {
        assert!(
            db.store
                .complete_task(*id, "accepted", "desk-1", now + 3_600_000)
                .await
                .unwrap()
        );
    }
    clock.advance(Duration::from_secs(2 * 86_400 + 3_600));
    let step = engine.tick().await.unwrap().tasks;
    assert_eq!((step.escalated, step.digests), (opened - 3, 1));
    assert_eq!(engine.tick().await.unwrap().tasks, Default::default());
    assert_eq!(engine.mail_round().await.unwrap().sent, 1);
    let mails = wait_for("the supervisor's digest", Duration::from_secs(30), || {
        Some(smtp.messages()).filter(|m| m.len() >= 2)
    })
    .await;
    assert_eq!(mails.len(), 2);
    let to_supervisor: Vec<&String> = mails
        .iter()
        .filter(|m| m.contains(&format!("X-RcptTo: {}", supervisor.email)))
        .collect();
    assert_eq!(to_supervisor.len(), 1);
    let mail = to_supervisor[0];
    assert!(
        mail.contains(&format!(
            "Subject: [campaignd] tasks: 0 new and {} overdue for {}",
            opened - 3,
            supervisor.name
        )),
        "{mail}"
    );
    let html = html_part(mail);
    assert!(html.contains("<p>VIP club supervisor,</p>"), "{html}");
    for t in &tasks {
        let line = format!(
            "task {}  service  vip-club/invitation  team vip-club  ",
            t.id
        );
        assert_eq!(
            body(mail).contains(&line),
            !worked.contains(&t.id),
            "task {}: {mail}",
            t.id
        );
        let row = format!(
            "<tr><td>{}</td><td>service</td><td>vip-club/invitation</td><td>vip-club</td><td>138****",
            t.id
        );
        assert_eq!(
            html.contains(&row),
            !worked.contains(&t.id),
            "task {}: {html}",
            t.id
        );
    }
    assert_eq!(html.matches("<td>c&lt;").count(), tasks.len() - 3, "{html}");
    assert_masked(mail);
}
