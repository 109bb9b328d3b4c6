//! The OpenAPI document the daemon serves describes exactly the routes the router serves:
//! both come from `api::route_table`, so adding a route without a `#[utoipa::path]` (or
//! documenting one that is not served) fails here.

use std::collections::BTreeSet;

use api::AppState;
use serde_json::Value;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[tokio::test]
async fn every_route_is_in_the_served_openapi_document_and_nothing_else() -> Res {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let listener = api::bind("127.0.0.1:0".parse()?)?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(api::serve(listener, AppState { store }, async move {
        let _ = stopped.await;
    }));

    let resp = reqwest::get(format!("{base}/openapi.json")).await?;
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let doc: Value = resp.json().await?;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .ok_or("no paths")?
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flat_map(|ops| ops.keys())
                .filter(|k| {
                    ["get", "post", "put", "patch", "delete", "head", "options"]
                        .contains(&k.as_str())
                })
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = api::route_table()
        .into_iter()
        .map(|(m, p, _)| (m.as_str().to_owned(), p.to_owned()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes without documentation: {undocumented:?}; documented but not routed: {unrouted:?}"
    );
    assert!(routed.len() >= 10, "{routed:?}");

    // Every operation says what it answers, and errors have a schema.
    for (path, item) in doc["paths"].as_object().ok_or("no paths")? {
        for (method, op) in item.as_object().ok_or("no ops")? {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
        }
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let _ = stop.send(());
    served.await??;
    Ok(())
}
