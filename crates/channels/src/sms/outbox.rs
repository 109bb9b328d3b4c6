//! The embedded transport: messages go to a JSON-lines file instead of a gateway.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Serialize;
use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{BuildError, OutboxConfig, mask_msisdn};
use crate::{Accepted, Channel, Outbound, SendError};

/// Appends one JSON line per message to a local file; see [`OutboxConfig`].
///
/// A batch is written with one `write` and made durable with one `fsync` before
/// [`Channel::send_batch`] returns, so a message reported as accepted survives a crash.
#[derive(Debug)]
pub struct OutboxSms {
    path: PathBuf,
    /// Serialises batches so that lines of concurrent batches never interleave, and so that a
    /// failed write can be cut back to the last complete line.
    file: Mutex<File>,
}

/// The line format; field order is the documented one.
#[derive(Serialize)]
struct Line<'a> {
    key: &'a str,
    contact_id: i64,
    to: &'a str,
    text: &'a str,
    campaign: &'a str,
    wave: &'a str,
    at: chrono::DateTime<chrono::Utc>,
}

impl OutboxSms {
    /// Opens (or creates) the outbox file in append mode.
    pub async fn open(cfg: &OutboxConfig) -> Result<Self, BuildError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.path)
            .await
            .map_err(|source| BuildError::Outbox {
                path: cfg.path.clone(),
                source,
            })?;
        Ok(OutboxSms {
            path: cfg.path.clone(),
            file: Mutex::new(file),
        })
    }

    /// The file this outbox appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn append(&self, buf: &[u8]) -> std::io::Result<()> {
        let mut file = self.file.lock().await;
        let len_before = file.metadata().await?.len();
        let res = async {
            file.write_all(buf).await?;
            file.flush().await?;
            file.sync_data().await
        }
        .await;
        if res.is_err() {
            // A torn last line would corrupt every later line for readers that split on '\n'.
            if let Err(error) = file.set_len(len_before).await {
                tracing::error!(
                    message = "Could not cut the SMS outbox back after a failed write.",
                    path = %self.path.display(),
                    %error,
                );
            }
        }
        res
    }
}

#[async_trait]
impl Channel for OutboxSms {
    fn kind(&self) -> &'static str {
        domain::ChannelKind::Sms.as_str()
    }

    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        if batch.is_empty() {
            return Vec::new();
        }
        let at = chrono::Utc::now();
        let mut buf = Vec::with_capacity(batch.len() * 256);
        for msg in batch {
            let line = Line {
                key: &msg.key,
                contact_id: msg.contact_id,
                to: &msg.msisdn,
                text: &msg.text,
                campaign: &msg.campaign,
                wave: &msg.wave,
                at,
            };
            // Serialising plain strings and integers into a Vec cannot fail.
            serde_json::to_writer(&mut buf, &line).expect("outbox line serialises");
            buf.push(b'\n');
        }

        match self.append(&buf).await {
            Ok(()) => {
                for msg in batch {
                    tracing::debug!(
                        message = "SMS written to outbox.",
                        key = %msg.key,
                        to = %mask_msisdn(&msg.msisdn),
                    );
                }
                batch
                    .iter()
                    .map(|_| {
                        Ok(Accepted {
                            gateway_ref: None,
                            queued: false,
                        })
                    })
                    .collect()
            }
            Err(error) => {
                tracing::warn!(
                    message = "SMS outbox write failed.",
                    path = %self.path.display(),
                    messages = batch.len(),
                    %error,
                );
                let reason = format!("outbox {}: {error}", self.path.display());
                batch
                    .iter()
                    .map(|_| Err(SendError::Transient(reason.clone())))
                    .collect()
            }
        }
    }

    async fn healthcheck(&self) -> Result<(), SendError> {
        // The handle stays writable even after the file is deleted or rotated away; checking
        // the path catches an outbox that nobody will ever read.
        let meta = tokio::fs::metadata(&self.path).await.map_err(|error| {
            SendError::Transient(format!("outbox {}: {error}", self.path.display()))
        })?;
        if meta.permissions().readonly() {
            return Err(SendError::Permanent(format!(
                "outbox {} is read-only",
                self.path.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn msg(n: i64) -> Outbound {
        Outbound {
            contact_id: n,
            key: format!("run1-w1-{n}"),
            subscriber_id: 1000 + n,
            msisdn: format!("1380013{n:04}"),
            text: format!("您好 #{n}, \"quoted\"\nsecond line"),
            campaign: "spring".into(),
            wave: "w1".into(),
            team: None,
            due_at: None,
            escalate_to: None,
            outcomes: Vec::new(),
            subject: None,
            address: None,
        }
    }

    fn read_lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn appends_one_json_line_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let outbox = OutboxSms::open(&OutboxConfig { path: path.clone() })
            .await
            .unwrap();
        assert_eq!(outbox.kind(), "sms");

        let res = outbox.send_batch(&[msg(1), msg(2)]).await;
        assert_eq!(
            res,
            vec![
                Ok(Accepted {
                    gateway_ref: None,
                    queued: false
                });
                2
            ]
        );

        let lines = read_lines(&path);
        assert_eq!(lines.len(), 3, "existing content must be kept: {lines:?}");
        assert_eq!(lines[0], serde_json::json!({"earlier": true}));
        let first = lines[1].as_object().unwrap();
        assert_eq!(first.len(), 7, "{first:?}");
        // serde_json's Map sorts keys, so the documented order is checked on the raw text.
        let raw = std::fs::read_to_string(&path).unwrap();
        let raw = raw.lines().nth(1).unwrap();
        let positions: Vec<usize> = ["key", "contact_id", "to", "text", "campaign", "wave", "at"]
            .iter()
            .map(|k| raw.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{raw}");
        assert_eq!(first["key"], "run1-w1-1");
        assert_eq!(first["contact_id"], 1);
        assert_eq!(first["to"], "13800130001");
        assert_eq!(first["text"], "您好 #1, \"quoted\"\nsecond line");
        assert_eq!(first["campaign"], "spring");
        assert_eq!(first["wave"], "w1");
        chrono::DateTime::parse_from_rfc3339(first["at"].as_str().unwrap()).unwrap();
        assert_eq!(lines[2]["key"], "run1-w1-2");

        assert!(outbox.send_batch(&[]).await.is_empty());
        assert_eq!(read_lines(&path).len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_batches_do_not_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let outbox = Arc::new(
            OutboxSms::open(&OutboxConfig { path: path.clone() })
                .await
                .unwrap(),
        );

        let mut tasks = Vec::new();
        for b in 0..8 {
            let outbox = Arc::clone(&outbox);
            tasks.push(tokio::spawn(async move {
                let batch: Vec<Outbound> = (0..50).map(|i| msg(b * 100 + i)).collect();
                outbox.send_batch(&batch).await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().iter().all(Result::is_ok));
        }

        let lines = read_lines(&path);
        assert_eq!(lines.len(), 400);
        // Each batch's 50 lines must be contiguous and in order.
        for chunk in lines.chunks(50) {
            let ids: Vec<i64> = chunk
                .iter()
                .map(|l| l["contact_id"].as_i64().unwrap())
                .collect();
            let base = ids[0];
            assert_eq!(base % 100, 0, "{ids:?}");
            assert_eq!(ids, (base..base + 50).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn open_fails_clearly_when_the_directory_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("outbox.jsonl");
        let err = OutboxSms::open(&OutboxConfig { path: path.clone() })
            .await
            .unwrap_err();
        assert!(matches!(err, BuildError::Outbox { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    #[tokio::test]
    async fn healthcheck_fails_when_the_file_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let outbox = OutboxSms::open(&OutboxConfig { path: path.clone() })
            .await
            .unwrap();
        outbox.healthcheck().await.unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = outbox.healthcheck().await.unwrap_err();
        assert!(err.to_string().contains("outbox.jsonl"), "{err}");
    }
}
