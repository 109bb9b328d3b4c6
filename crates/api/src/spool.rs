//! The callback spool: where a delivery report or an SMS reply goes when the database cannot
//! take it. Kannel retries a failed callback only a few times, seconds apart, so an outage
//! longer than that would lose what came back; spooled, the callback is on disk (fsynced)
//! before Kannel gets its `200`, and [`Spool::replay`] stores it once the database is back.
//!
//! Layout of the spool folder (one per daemon; it is local state, like a WAL):
//! - `current.jsonl`: the callbacks being spooled now, one JSON object per line;
//! - `batch-<time>-<random>.jsonl`: a closed file waiting for replay. A replay first closes
//!   `current.jsonl` by renaming it, so appends and replays never touch the same file;
//! - `bad-<name>`: a file with a line that is not a spooled callback, set aside (and logged)
//!   so the rest can go on; an operator looks at it.
//!
//! Exactly once: a batch's rows and its name are committed together
//! ([`store::Store::replay_spooled`]), and a batch already recorded is skipped, so a daemon
//! killed between that commit and deleting the file does not store its callbacks twice. A
//! line torn by a crash mid-write (the last one, without its newline) was never answered
//! `200`, so Kannel still has it: it is dropped.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use store::Millis;
use store::inbound::{NewInbound, source};
use tracing::{error, info, warn};

const CURRENT: &str = "current.jsonl";
const BATCH_PREFIX: &str = "batch-";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("replaying {batch}: {source}")]
    Store {
        batch: String,
        source: store::StoreError,
    },
}

/// One spooled callback: [`NewInbound`] as a line of JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    source: String,
    idem_key: Option<String>,
    msisdn: Option<String>,
    kind: String,
    value: Option<String>,
    payload: String,
    received_at: Millis,
}

impl Record {
    fn of(row: &NewInbound) -> Record {
        Record {
            source: row.source.to_owned(),
            idem_key: row.idem_key.clone(),
            msisdn: row.msisdn.clone(),
            kind: row.kind.clone(),
            value: row.value.clone(),
            payload: row.payload.clone(),
            received_at: row.received_at,
        }
    }

    fn into_row(self) -> Option<NewInbound> {
        // Only the callbacks spool; the source names are the store's own constants.
        let source = [source::DLR, source::MO]
            .into_iter()
            .find(|s| *s == self.source)?;
        Some(NewInbound {
            source,
            idem_key: self.idem_key,
            msisdn: self.msisdn,
            kind: self.kind,
            value: self.value,
            payload: self.payload,
            received_at: self.received_at,
        })
    }
}

/// What one [`Spool::replay`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Files stored and deleted.
    pub batches: usize,
    /// Callbacks stored.
    pub rows: usize,
    /// Files found already stored (a replay killed before its delete) and deleted.
    pub skipped: usize,
}

/// The spool folder of this daemon. Appends and the rename that closes `current.jsonl` are
/// serialised by one lock; replays run one at a time (one loop calls them).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    lock: Mutex<()>,
    /// Appends made durable, counted; and the count a replay had seen when it stored
    /// everything. Unequal: callbacks wait here that the database does not have yet (see
    /// [`Spool::is_clear`]).
    appended: AtomicU64,
    replayed: AtomicU64,
}

impl Spool {
    /// Opens (creating, mode 0700) the spool folder.
    pub fn open(dir: &Path) -> Result<Arc<Spool>, SpoolError> {
        let io = |source| SpoolError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let spool = Spool {
            dir: dir.to_owned(),
            lock: Mutex::new(()),
            appended: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
        };
        // What a previous life was writing is closed first: a line it tore when it died
        // stays the last line of its own file, and new appends start a clean one.
        spool.close_current()?;
        if !spool.files()?.is_empty() {
            spool.appended.store(1, Ordering::SeqCst);
        }
        Ok(Arc::new(spool))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `rows` and makes them durable (fsync of the file, and of the folder when the
    /// file is new) before returning: only then may the caller answer `200`.
    pub async fn append(self: &Arc<Self>, rows: Vec<NewInbound>) -> Result<(), SpoolError> {
        let me = self.clone();
        let mut text = String::new();
        for r in &rows {
            text.push_str(&serde_json::to_string(&Record::of(r)).expect("plain strings"));
            text.push('\n');
        }
        tokio::task::spawn_blocking(move || {
            let _g = me.lock.lock().unwrap_or_else(|p| p.into_inner());
            let path = me.dir.join(CURRENT);
            let io = |source| SpoolError::Io {
                path: path.clone(),
                source,
            };
            let new = !path.exists();
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_data().map_err(io)?;
            if new {
                me.sync_dir()?;
            }
            // Counted once written: a replay that reads this count closes a file holding
            // these rows.
            me.appended.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await
        .expect("spool append does not panic")
    }

    /// True when every callback spooled so far is in the database. While it is false the
    /// engine claims nothing and closes no wave window (`Engine::with_inbound_backlog`): a
    /// delivery report or a reply waiting here is what stops a message being sent again or a
    /// responder getting the next wave. Cheap: two atomics.
    pub fn is_clear(&self) -> bool {
        self.replayed.load(Ordering::SeqCst) >= self.appended.load(Ordering::SeqCst)
    }

    /// Spooled callbacks not yet replayed: lines in `current.jsonl` and the batch files.
    pub fn pending(&self) -> usize {
        self.files()
            .unwrap_or_default()
            .iter()
            .chain(std::iter::once(&self.dir.join(CURRENT)))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.lines().count())
            .sum()
    }

    /// Stores every spooled callback, oldest file first, and deletes each file once its
    /// rows are committed. Stops at the first file the store refuses (the database is still
    /// down): that file and the later ones wait for the next call.
    pub async fn replay(
        self: &Arc<Self>,
        store: &store::Store,
        now: Millis,
    ) -> Result<Replayed, SpoolError> {
        // Read before the rename: every append counted in it is in a file this replay sees.
        let seen = self.appended.load(Ordering::SeqCst);
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.close_current())
            .await
            .expect("spool rename does not panic")?;
        let mut done = Replayed::default();
        for path in self.files()? {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let rows = match read_batch(&path) {
                Ok(rows) => rows,
                Err(e) => {
                    error!(message = "Spool file has a line that is not a callback; set aside.", file = %path.display(), error = %e);
                    let bad = self.dir.join(format!("bad-{name}"));
                    std::fs::rename(&path, &bad).map_err(|source| SpoolError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    continue;
                }
            };
            let stored = store
                .replay_spooled(&name, &rows, now)
                .await
                .map_err(|source| SpoolError::Store {
                    batch: name.clone(),
                    source,
                })?;
            std::fs::remove_file(&path).map_err(|source| SpoolError::Io {
                path: path.clone(),
                source,
            })?;
            self.sync_dir()?;
            if stored {
                done.batches += 1;
                done.rows += rows.len();
                info!(message = "Spooled callbacks stored.", file = %name, rows = rows.len());
            } else {
                done.skipped += 1;
                warn!(message = "Spool file was already stored; deleted.", file = %name);
            }
        }
        self.replayed.fetch_max(seen, Ordering::SeqCst);
        Ok(done)
    }

    /// Renames `current.jsonl` to a new batch name, so the next appends start a new file.
    fn close_current(&self) -> Result<(), SpoolError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.dir.join(CURRENT);
        if !current.exists() {
            return Ok(());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        // Random per batch: replicas share the `spool_replayed` table, so names must not meet.
        let random = RandomState::new().build_hasher().finish();
        let batch = self
            .dir
            .join(format!("{BATCH_PREFIX}{now:024}-{random:016x}.jsonl"));
        std::fs::rename(&current, &batch).map_err(|source| SpoolError::Io {
            path: current.clone(),
            source,
        })?;
        self.sync_dir()
    }

    /// The batch files, oldest first (their names start with the time they were closed).
    fn files(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let io = |source| SpoolError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(BATCH_PREFIX) && n.ends_with(".jsonl"))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    fn sync_dir(&self) -> Result<(), SpoolError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| SpoolError::Io {
                path: self.dir.clone(),
                source,
            })
    }
}

/// The callbacks of one file. A last line without its newline was torn by a crash before
/// its fsync, so never acknowledged: dropped. Any other line that does not parse is an error.
fn read_batch(path: &Path) -> Result<Vec<NewInbound>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut rows = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        let parsed = serde_json::from_str::<Record>(line)
            .map_err(|e| format!("line {}: {e}", i + 1))
            .and_then(|r| {
                r.into_row()
                    .ok_or_else(|| format!("line {}: not a callback source", i + 1))
            });
        match parsed {
            Ok(row) => rows.push(row),
            Err(_) if last && !complete => {
                warn!(message = "Torn last line of a spool file dropped (it was never acknowledged).", file = %path.display());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(rows)
}
