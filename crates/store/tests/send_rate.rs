//! The shared send slots of a gateway account (`Store::reserve_send_slots`, both backends).

type Res = Result<(), Box<dyn std::error::Error>>;

/// Guards the one-statement reservation: an idle account starts now; runs reserved at the
/// same time, from many tasks (replicas), never overlap; accounts do not share slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_runs_never_overlap_whoever_asks() -> Res {
    let dir = tempfile::tempdir()?;
    let s = store::testing::fresh_store(dir.path()).await?;
    // Slots a second apart: the first run lasts 10 s, so the second reservation falls inside
    // it however slowly a loaded machine gets there (with 1 ms slots, a 10 ms pause between
    // the two calls made this test fail on a busy CI machine).
    let first = s.reserve_send_slots("kannel:a", 10, 1_000_000).await?;
    assert_eq!(first.delay_us, 0, "an idle account starts at once");
    let second = s.reserve_send_slots("kannel:a", 10, 1_000_000).await?;
    assert_eq!(
        second.start_us,
        first.start_us + 10_000_000,
        "right after the first run"
    );
    assert!(
        second.delay_us > 0 && second.delay_us <= 10_000_000,
        "{second:?}"
    );
    let other = s.reserve_send_slots("kannel:b", 10, 1_000).await?;
    assert_eq!(other.delay_us, 0, "another account has slots of its own");

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let s = s.clone();
        tasks.spawn(async move { s.reserve_send_slots("kannel:a", 5, 2_000).await });
    }
    let mut starts = vec![second.start_us];
    while let Some(r) = tasks.join_next().await {
        starts.push(r??.start_us);
    }
    starts.sort_unstable();
    // The run before each start ended at or before it (the first: second's 10 slots).
    assert!(starts[1] >= starts[0] + 10_000_000, "{starts:?}");
    for w in starts[1..].windows(2) {
        assert!(w[1] >= w[0] + 10_000, "runs overlap: {starts:?}");
    }
    Ok(())
}
