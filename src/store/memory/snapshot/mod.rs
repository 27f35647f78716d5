//! Snapshots of the memory store (`STATE_FILE`): a restart or a deploy
//! keeps `today`, `totalUsers` and the history, and after a quick restart
//! the live sessions too.
//!
//! - this file: [`Snapshots`], the handle that restores the store at
//!   start-up and saves it, what a save reports ([`Saved`], [`SaveError`]),
//!   and [`run`], the periodic save.
//! - `file`: the state file: read with its limits, replaced atomically,
//!   set aside or kept beside itself.
//! - `format`: what is in the file: the versioned JSON, and the checks
//!   that turn it back into a `MemoryImage`.
//! - `dropped`: what those checks left out, and the warnings saying so.
//!
//! # Behaviour
//! - **When.** `Snapshots::open` restores the store at start-up, before
//!   anything is served; [`run`] saves every minute while serving, and
//!   `serve` saves once more after the shutdown drain.
//! - **How.** The store's lock is held only to copy its state into a
//!   `MemoryImage`; encoding and file I/O run on a blocking thread, off
//!   the async workers. The file is replaced atomically: written to
//!   `<file>.tmp.<pid>`, fsynced, renamed over `<file>`, then the directory is
//!   fsynced, so a crash at any point leaves the old snapshot or the new
//!   one, complete.
//! - **Never fatal.** A failed save is a warning (the previous snapshot
//!   stays). A snapshot that cannot be read, does not parse, has another
//!   format version or is over [`MAX_FILE_BYTES`] is renamed to
//!   `<file>.corrupt-<time>` with a warning, and the service starts clean.
//! - **Nothing lost for good.** A restore that leaves anything out (a
//!   module no longer configured, a value today's rules refuse, sessions
//!   over the cap) keeps the file it came from as `<file>.kept-<time>`,
//!   and its warnings say where: the next save would otherwise replace it.
//! - **Format.** JSON with `"version": 2` (version 1 is still read),
//!   modules keyed by code. The
//!   fields, and how the format evolves: "Snapshot format" in
//!   `docs/design.md`.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::MemoryStore;
use crate::clock::{First, Millis, every, rfc3339};
use crate::metrics::Metrics;

mod dropped;
mod file;
mod format;

use file::StateFile;
use format::{FORMAT_VERSION, OLDEST_VERSION_READ};

/// How often a snapshot is saved while serving.
pub(crate) const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

/// The largest snapshot read or written: 1 GiB. A million sessions with
/// every field at its longest (ASCII) take about 0.8 GB, a typical million
/// about 0.2 GB; a larger file is not one of ours, and is moved aside
/// unread rather than read until memory runs out.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 30;

/// Saves one memory store to one file. Cheap to clone: clones share the
/// file.
#[derive(Debug, Clone)]
pub struct Snapshots {
    store: MemoryStore,
    file: Arc<StateFile>,
    metrics: Arc<Metrics>,
}

/// A snapshot that was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    /// The store's time when it was taken.
    pub at: Millis,
    /// Sessions in it (live, or expired and not yet swept).
    pub sessions: usize,
    /// The file's size.
    pub bytes: usize,
    /// How long taking and writing it took.
    pub took: Duration,
}

/// Why a snapshot was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The state could not be encoded.
    #[error("cannot encode the snapshot: {0}")]
    Encode(#[from] serde_json::Error),
    /// The file could not be written, synced or renamed.
    #[error("cannot write the snapshot: {0}")]
    Write(#[from] io::Error),
    /// The blocking task that writes it panicked.
    #[error("the snapshot writer panicked")]
    Panicked,
    /// It would be larger than a restore reads.
    #[error("the snapshot would be {0} bytes, over the {max} a restore reads", max = MAX_FILE_BYTES)]
    TooLarge(usize),
}

/// Why a snapshot file cannot be restored.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error("cannot read it: {0}")]
    Unreadable(io::Error),
    #[error("not a snapshot: {0}")]
    Corrupt(serde_json::Error),
    #[error(
        "format version {0}, and this build reads versions {OLDEST_VERSION_READ} to {FORMAT_VERSION}"
    )]
    Version(u32),
    #[error("{0} bytes, larger than the {max} bytes a snapshot may be", max = MAX_FILE_BYTES)]
    TooLarge(u64),
    #[error("not a regular file")]
    NotAFile,
}

impl Snapshots {
    /// The snapshots of `store` in `path`, after restoring `store` from it.
    /// No file is a clean start; an unusable one is moved aside with a
    /// warning and the store starts clean. The file is read here,
    /// synchronously: once, at start-up, before anything is served.
    pub(crate) fn open(store: MemoryStore, path: PathBuf, metrics: Arc<Metrics>) -> Self {
        let file = StateFile::new(path, store.modules().clone());
        let shown = file.path.display();
        match file.read() {
            Ok(Some((image, mut dropped))) => {
                let saved_at = image.at;
                let restored = store.restore(image);
                tracing::info!(
                    path = %shown,
                    saved_at = %rfc3339(saved_at),
                    sessions = restored.sessions,
                    expired = restored.expired,
                    today_kept = restored.today_kept,
                    "snapshot restored"
                );
                dropped.over_cap = restored.over_cap;
                if dropped.anything() {
                    let kept = file.keep();
                    dropped.warn(&kept);
                }
            }
            Ok(None) => tracing::info!(path = %shown, "no snapshot yet; starting clean"),
            Err(why) => file.set_aside(&why),
        }
        Self {
            store,
            file: Arc::new(file),
            metrics,
        }
    }

    /// Saves a snapshot now, replacing the file atomically. Logs the
    /// outcome (a failure as a warning) and records a success in the
    /// metrics; the result is for callers that want more.
    ///
    /// # Errors
    /// The snapshot could not be written; the previous file is untouched.
    pub async fn save(&self) -> Result<Saved, SaveError> {
        let started = Instant::now();
        let image = self.store.image();
        let (at, sessions) = (image.at, image.sessions.len());
        let file = self.file.clone();
        let written = tokio::task::spawn_blocking(move || file.write(image))
            .await
            .unwrap_or(Err(SaveError::Panicked));
        let path = self.file.path.display();
        match written {
            Ok(bytes) => {
                let saved = Saved {
                    at,
                    sessions,
                    bytes,
                    took: started.elapsed(),
                };
                self.metrics.snapshot_saved(at);
                tracing::info!(path = %path, sessions, bytes, took = ?saved.took, "snapshot saved");
                Ok(saved)
            }
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "snapshot not saved; the previous one is kept");
                Err(e)
            }
        }
    }
}

/// Saves a snapshot every `SNAPSHOT_INTERVAL` until `cancel` fires. A save
/// in progress is finished first, so `serve` can take the last one after
/// this task ends without the two writing at once.
pub async fn run(snapshots: Snapshots, cancel: CancellationToken) {
    every(SNAPSHOT_INTERVAL, First::AfterPeriod, &cancel, || async {
        // The outcome is logged by `save`; the next tick tries again.
        let _ = snapshots.save().await;
    })
    .await;
}
