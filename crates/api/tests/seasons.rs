//! `GET /campaigns/{id}/seasons` over real HTTP: the roll-up the daemon hands in is served as
//! it is built, for a campaign with a stored version only; a bad id is refused before
//! anything is read; a server given no roll-up says so. Runs on SQLite, or PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::AppState;
use reqwest::StatusCode;
use tokio::sync::oneshot;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Serves the API with `seasons` (or none); returns the base URL, an analyst's token, the
/// campaigns the roll-up was asked for, and the stop handle.
async fn serve(
    with_seasons: bool,
) -> Res<(
    String,
    String,
    Arc<Mutex<Vec<String>>>,
    oneshot::Sender<()>,
    tempfile::TempDir,
)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    store
        .upsert_version("core-retention", "abc", "{}", store::wall_now())
        .await?;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let seasons: api::SeasonReports = Arc::new(move |campaign: String| {
        seen.lock().unwrap().push(campaign.clone());
        Box::pin(async move {
            Ok(Some(format!(
                "{{\"campaign\":\"{campaign}\",\"seasons\":[]}}"
            )))
        })
    });
    let listener = api::bind("127.0.0.1:0".parse()?)?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    let opts = api::ServeOptions {
        seasons: with_seasons.then_some(seasons),
        ..api::ServeOptions::default()
    };
    tokio::spawn(api::serve_with(
        listener,
        AppState {
            store: store.clone(),
        },
        opts,
        async move {
            let _ = stopped.await;
        },
    ));
    let token = store
        .create_token(
            "analyst",
            store::auth::Role::Analyst,
            None,
            store::wall_now(),
        )
        .await?;
    Ok((base, token, asked, stop, dir))
}

async fn get(base: &str, token: &str, path: &str) -> Res<(StatusCode, String)> {
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await?;
    Ok((resp.status(), resp.text().await?))
}

#[tokio::test]
async fn the_season_roll_up_is_served_for_a_stored_campaign_only() -> Res {
    let (base, token, asked, stop, _dir) = serve(true).await?;
    let (status, body) = get(&base, &token, "/campaigns/core-retention/seasons").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(v["campaign"], "core-retention");
    let (status, body) = get(&base, &token, "/campaigns/never-loaded/seasons").await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = get(&base, &token, "/campaigns/Bad_Id/seasons").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("campaign id"), "{body}");
    assert_eq!(
        *asked.lock().unwrap(),
        vec!["core-retention".to_owned()],
        "only a stored campaign is rolled up"
    );
    let _ = stop.send(());

    let (base, token, _, stop, _dir) = serve(false).await?;
    let (status, body) = get(&base, &token, "/campaigns/core-retention/seasons").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let _ = stop.send(());
    Ok(())
}
