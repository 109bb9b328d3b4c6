//! The loopback gateway: a stand-in for Kannel's `sendsms` that answers at once and counts.
//!
//! It runs in a child process (this binary re-executed with `--gateway-child PORTFILE`), so
//! the peak RSS read in the parent is the dispatcher's alone, and the CPU each side spends
//! can be told apart.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

/// The password the gateway expects (what a Kannel `sendsms-user` would be configured with).
pub(crate) const PASSWORD: &str = "bench-password";

/// What the gateway has seen since its last reset.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Counts {
    /// `sendsms` requests answered `202`.
    pub(crate) requests: u64,
    /// Distinct idempotency keys among them (the `key` inside each `dlr-url`).
    pub(crate) distinct: u64,
    /// Requests refused (bad password, no `dlr-url` key).
    pub(crate) rejected: u64,
    /// The gateway process's own peak RSS, MB.
    pub(crate) peak_rss_mb: f64,
}

#[derive(Default)]
struct Gw {
    requests: AtomicU64,
    rejected: AtomicU64,
    keys: Mutex<HashSet<String>>,
}

type Shared = &'static Gw;

/// The child process's main: serve until the parent closes our stdin (or dies).
pub(crate) fn child_main(portfile: &Path, threads: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async {
        let gw: Shared = Box::leak(Box::default());
        let app = axum::Router::new()
            .route("/cgi-bin/sendsms", get(sendsms))
            .route("/count", get(count))
            .route("/reset", post(reset))
            .with_state(gw);
        // tokio's bind listens with a backlog of 1024, enough for the pools used here.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let tmp = portfile.with_extension("tmp");
        std::fs::write(&tmp, port.to_string())?;
        std::fs::rename(&tmp, portfile)?;
        // The parent holds our stdin open; EOF means it is done or gone.
        std::thread::spawn(|| {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

async fn sendsms(State(gw): State<Shared>, RawQuery(q): RawQuery) -> (StatusCode, &'static str) {
    let q = q.unwrap_or_default();
    let mut password_ok = false;
    let mut key = None;
    // Only the two parameters the gateway checks are decoded: it should cost as little as
    // it can, being the stand-in for an unlimited gateway.
    for pair in q.split('&') {
        if let Some(v) = pair.strip_prefix("password=") {
            password_ok = decode(v) == PASSWORD;
        } else if let Some(v) = pair.strip_prefix("dlr-url=") {
            key = dlr_key(&decode(v));
        }
    }
    if !password_ok {
        gw.rejected.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::FORBIDDEN, "Authorization failed for sendsms");
    }
    let Some(key) = key else {
        gw.rejected.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::BAD_REQUEST, "no key in dlr-url");
    };
    gw.requests.fetch_add(1, Ordering::Relaxed);
    gw.keys.lock().expect("keys lock").insert(key);
    (StatusCode::ACCEPTED, "0: Accepted for delivery")
}

/// One percent-encoded (`+` for space) query value.
fn decode(v: &str) -> String {
    url::form_urlencoded::parse(format!("v={v}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The idempotency key inside a dlr-url as campaignd writes it: `...?key=K&type=%d...`, with
/// every `%` of the percent-encoded key doubled for Kannel.
fn dlr_key(dlr: &str) -> Option<String> {
    let query = dlr.split_once('?')?.1;
    let raw = query.split('&').find_map(|p| p.strip_prefix("key="))?;
    Some(decode(&raw.replace("%%", "%")))
}

async fn count(State(gw): State<Shared>) -> axum::Json<Counts> {
    axum::Json(Counts {
        requests: gw.requests.load(Ordering::Relaxed),
        distinct: gw.keys.lock().expect("keys lock").len() as u64,
        rejected: gw.rejected.load(Ordering::Relaxed),
        peak_rss_mb: bench::proc::peak_rss_mb().unwrap_or(f64::NAN),
    })
}

async fn reset(State(gw): State<Shared>) -> StatusCode {
    let mut keys = gw.keys.lock().expect("keys lock");
    *keys = HashSet::new();
    gw.requests.store(0, Ordering::Relaxed);
    gw.rejected.store(0, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

/// Talks to a running gateway (from the parent or from a backend child).
#[derive(Clone)]
pub(crate) struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// The gateway process, for its CPU time.
    pub(crate) pid: u32,
    client: reqwest::Client,
}

impl Gateway {
    pub(crate) fn new(base: String, pid: u32) -> anyhow::Result<Gateway> {
        Ok(Gateway {
            base,
            pid,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    pub(crate) fn sendsms_url(&self) -> String {
        format!("{}/cgi-bin/sendsms", self.base)
    }

    pub(crate) async fn counts(&self) -> anyhow::Result<Counts> {
        Ok(self
            .client
            .get(format!("{}/count", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub(crate) async fn reset(&self) -> anyhow::Result<()> {
        self.client
            .post(format!("{}/reset", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

/// The parent's handle on the gateway child; stops it when dropped.
pub(crate) struct GatewayProcess {
    child: std::process::Child,
    pub(crate) gateway: Gateway,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts the child and waits for its port.
    pub(crate) async fn start(threads: usize) -> anyhow::Result<GatewayProcess> {
        let dir = tempfile::tempdir()?;
        let portfile: PathBuf = dir.path().join("gateway.port");
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut child = std::process::Command::new(exe)
            .arg("--gateway-child")
            .arg(&portfile)
            .arg("--gateway-threads")
            .arg(threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the gateway child")?;
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&portfile) {
                break text.trim().parse::<u16>()?;
            }
            if let Some(status) = child.try_wait()? {
                bail!("the gateway child exited early: {status}");
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the gateway child did not report its port within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let gateway = Gateway::new(format!("http://127.0.0.1:{port}"), child.id())?;
        Ok(GatewayProcess {
            child,
            gateway,
            _dir: dir,
        })
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        // Closing stdin asks the child to exit; kill (by its pid) in case it does not.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_comes_back_out_of_the_kannel_dlr_url() {
        assert_eq!(
            dlr_key("http://x/dlr?key=r1-sms_offer-s42&type=%d&to=%p").as_deref(),
            Some("r1-sms_offer-s42")
        );
        assert_eq!(
            dlr_key("http://x/dlr?a=b&key=a%%26b&type=%d").as_deref(),
            Some("a&b")
        );
        assert_eq!(dlr_key("http://x/dlr?type=%d"), None);
    }
}
