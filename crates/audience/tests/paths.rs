//! Action paths: a following wave targets whichever treatment subscribers of the wave it
//! follows its `targets` names: a reply keyword, a delivery state, an agent's outcome, a
//! business event. Runs on SQLite, or on PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use sea_orm::ConnectionTrait;
use store::Store;
use store::runs::NewRun;
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;

const NOW: i64 = 1_789_000_000_000;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const PATHS: &str = r#"
campaign: paths
timezone: Asia/Shanghai
audience:
  where: "arpu_3m >= 0"
outcomes: [accepted, refused, wants_visit]
waves:
  - id: offer
    channel: sms
    template: t.txt
    respond_within: 1d
    responses: [{ reply: "1" }, { reply: "2" }]
  - id: call
    after: offer
    targets: { replied: ["2"] }
    channel: outbound_call
    team: callcentre
    template: t.txt
    respond_within: 1d
  - id: resend
    after: offer
    targets: undelivered
    channel: sms
    template: t.txt
    respond_within: 1d
  - id: quiet
    after: offer
    targets: delivered_silent
    channel: sms
    template: t.txt
    respond_within: 1d
  - id: nudge
    after: offer
    targets: { event: { type: app_login } }
    channel: sms
    template: t.txt
    respond_within: 1d
  - id: visit
    after: call
    targets: { outcome: [wants_visit] }
    channel: service
    team: hall
    template: t.txt
    respond_within: 1d
"#;

async fn plan(
    store: &Store,
    wf: &spec::Workflow,
    run_id: i64,
    waves: &[store::runs::WaveRunRow],
    wave: &str,
    after: Option<&str>,
) -> Res<Vec<i64>> {
    let id = |w: &str| waves.iter().find(|r| r.wave == w).map(|r| r.id).unwrap();
    let summary = audience::plan_wave(
        store,
        audience::PlanInput {
            workflow: wf,
            wave: wf.wave(wave).unwrap(),
            run_id,
            wave_run_id: id(wave),
            previous_wave_run_id: after.map(id),
            now: NOW,
            global_holdout: None,
            arbitration: None,
        },
    )
    .await?;
    assert!(summary.opened, "{wave} was planned");
    let mut ids: Vec<i64> = store
        .contact_states(id(wave))
        .await?
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Guards `store::planning::earlier_wave_targets` (each `Path` arm) and tracking's recording
/// of a reply's keyword: each path takes exactly its subscribers.
#[tokio::test]
async fn each_action_path_takes_exactly_its_subscribers() -> Res {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("t.txt"), "{name}: reply 1 or 2")?;
    std::fs::write(dir.path().join("segments.yaml"), "segments: {}\n")?;
    let path = dir.path().join("paths.yaml");
    std::fs::write(&path, PATHS)?;
    let wf = spec::load_file(&path).map_err(|d| format!("{d:?}"))?;

    let db = tempfile::tempdir()?;
    let store = store::testing::fresh_store(db.path()).await?;
    let rows: Vec<_> = (0..6)
        .map(|i| store::testing::subscriber(&format!("1380000{i:04}")))
        .collect();
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, 0)
        .await?;
    let mut s = Vec::new();
    for r in &rows {
        s.push(
            store
                .subscriber_by_msisdn(&r.msisdn)
                .await?
                .ok_or("missing")?,
        );
    }
    let version = store
        .upsert_version(&wf.campaign, &wf.hash, &wf.bundle.to_json(), 0)
        .await?;
    let wave_list: Vec<(String, String)> = wf
        .waves
        .iter()
        .map(|w| (w.id.clone(), w.channel.as_str().to_owned()))
        .collect();
    let run_id = store
        .start_run(NewRun {
            campaign: &wf.campaign,
            version_id: version,
            slot_at: None,
            trigger: "test",
            waves: &wave_list,
            now: 0,
        })
        .await?
        .ok_or("no run")?;
    let waves = store.wave_runs(run_id).await?;
    assert_eq!(plan(&store, &wf, run_id, &waves, "offer", None).await?, s);

    // 0 replied "2 please", 1 replied "1", 2 was silent, 3's message was undelivered, 4
    // logged in to the app (not a response of the offer), 5's was rejected by the gateway.
    let offer = waves.iter().find(|w| w.wave == "offer").unwrap().id;
    for (i, state) in [
        (0, "delivered"),
        (1, "delivered"),
        (2, "delivered"),
        (3, "undelivered"),
        (4, "delivered"),
        (5, "failed"),
    ] {
        store
            .db()
            .execute_raw(store::stmt(
                store.db(),
                "DELETE FROM dispatch WHERE contact_id IN (SELECT id FROM contact WHERE wave_run_id = ? AND subscriber_id = ?)",
                [offer.into(), s[i].into()],
            ))
            .await?;
        store
            .db()
            .execute_raw(store::stmt(
                store.db(),
                "UPDATE contact SET state = ? WHERE wave_run_id = ? AND subscriber_id = ?",
                [state.into(), offer.into(), s[i].into()],
            ))
            .await?;
    }
    let respond = async |wave: &str, i: usize, kind: &str, value: &str, counts: bool| -> Res {
        let key = store
            .contact_key(run_id, wave, s[i])
            .await?
            .ok_or("no key")?;
        let contact = store.contact_by_key(&key).await?.ok_or("no contact")?;
        store
            .record_response(&contact, kind, Some(value), NOW + 1, counts)
            .await?;
        Ok(())
    };
    respond("offer", 0, "reply", "2", true).await?;
    respond("offer", 1, "reply", "1", true).await?;
    respond("offer", 4, "app_login", "ios", false).await?;

    assert_eq!(
        plan(&store, &wf, run_id, &waves, "call", Some("offer")).await?,
        [s[0]]
    );
    assert_eq!(
        plan(&store, &wf, run_id, &waves, "resend", Some("offer")).await?,
        [s[3], s[5]]
    );
    assert_eq!(
        plan(&store, &wf, run_id, &waves, "quiet", Some("offer")).await?,
        [s[2], s[4]]
    );
    assert_eq!(
        plan(&store, &wf, run_id, &waves, "nudge", Some("offer")).await?,
        [s[4]]
    );

    respond("call", 0, "outcome", "wants_visit", false).await?;
    assert_eq!(
        plan(&store, &wf, run_id, &waves, "visit", Some("call")).await?,
        [s[0]]
    );
    Ok(())
}
