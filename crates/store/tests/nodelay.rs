//! PostgreSQL connections over TCP have `TCP_NODELAY` set (`src/nodelay.rs`): sqlx 0.9.0
//! leaves Nagle's algorithm on, and every statement longer than one TCP segment then waited
//! ~40 ms for a delayed ACK. Runs against the test PostgreSQL on either backend setting.

type Res = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn every_postgres_connection_has_nodelay() -> Res {
    let url = store::testing::pg_url();
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .ok_or("a port in CAMPAIGND_TEST_PG_URL")?;
    let schema = store::testing::fresh_pg_schema().await?;
    let store = store::Store::connect(&url, Some(&schema)).await?;
    store.migrate().await?;
    // Several connections at once, so the pool opens more than its first.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let s = store.clone();
        tasks.spawn(async move { s.pending_migrations().await });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let sockets = store::testing::tcp_nodelay_to(port);
    assert!(!sockets.is_empty(), "no connection to port {port} found");
    assert!(
        sockets.iter().all(|on| *on),
        "TCP_NODELAY per connection: {sockets:?}"
    );
    Ok(())
}
