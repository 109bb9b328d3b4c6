//! The limit: the same gateway driven by a plain HTTP loop, with no database and no engine.
//!
//! One reqwest client built as `channels::sms::KannelSms` builds its own, `concurrency` tasks
//! each sending requests back to back, and requests of the same shape as campaignd's: the
//! same parameters in the same order, a text of the same length, a `dlr-url` carrying a key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

/// What the loop measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlainResult {
    pub(crate) secs: f64,
    pub(crate) errors: u64,
}

/// Sends `n` requests with `concurrency` in flight; returns once all are answered.
pub(crate) async fn run(
    sendsms_url: &str,
    dlr_url: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<PlainResult> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("campaignd/0.0.0")
        .build()?;
    let base = url::Url::parse(sendsms_url)?;
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let base = base.clone();
        let dlr_url = dlr_url.to_owned();
        let next = next.clone();
        let errors = errors.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let url = request_url(&base, &dlr_url, i);
                let ok = match client.get(url).send().await {
                    Ok(res) => {
                        let status = res.status();
                        matches!(res.text().await, Ok(body) if status.as_u16() == 202 && body.starts_with("0:"))
                    }
                    Err(_) => false,
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            bail!("plain-loop task failed: {e}");
        }
    }
    Ok(PlainResult {
        secs: started.elapsed().as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// A sendsms URL shaped like `KannelSms`'s for subscriber `i` of run 1.
fn request_url(base: &url::Url, dlr_url: &str, i: usize) -> url::Url {
    const NAMES: [&str; 4] = ["Wang Fang", "Li Wei", "Zhang Haoran", "Chen Xiuying"];
    let key = format!("r1-sms_offer-s{}", i + 1);
    let text = format!(
        "{}, the campus bundle is 18 yuan a month. Reply 1 to join.",
        NAMES[i % NAMES.len()]
    );
    let to = format!("138{:08}", i);
    let dlr = format!("{dlr_url}?key={key}&type=%d&smscid=%i&fid=%F&to=%p&ts=%T&reply=%A");
    let mut url = base.clone();
    url.query_pairs_mut()
        .append_pair("username", "campaignd")
        .append_pair("password", crate::gateway::PASSWORD)
        .append_pair("from", "10086")
        .append_pair("to", &to)
        .append_pair("text", &text)
        .append_pair("dlr-mask", "27")
        .append_pair("dlr-url", &dlr);
    url
}
