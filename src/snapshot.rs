//! Snapshots of the memory store (`STATE_FILE`): a restart or a deploy
//! keeps `today`, `totalUsers` and the history, and after a quick restart
//! the live sessions too.
//!
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

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::{First, Millis, every, rfc3339};
use crate::config::directory_of;
use crate::domain::{Activity, ClientId, ModuleId, Modules, Page, Profile, ResourceId, UserId};
use crate::metrics::Metrics;
use crate::store::SessionInfo;
use crate::store::history::{MinuteBucket, ModuleMinute};
use crate::store::memory::{MemoryImage, MemoryStore, SessionImage, UserImage};

/// The format version written.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// The oldest version read: version 1 had no `state` per session and no
/// `users`; its sessions are restored as active.
const OLDEST_VERSION_READ: u32 = 1;

/// How often a snapshot is saved while serving.
pub(crate) const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

/// The largest snapshot read or written: 1 GiB. A million sessions with
/// every field at its longest (ASCII) take about 0.8 GB, a typical million
/// about 0.2 GB; a larger file is not one of ours, and is moved aside
/// unread rather than read until memory runs out.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 30;

/// The latest instant a snapshot may name: 9999-12-31T23:59:59.999Z, the
/// last one RFC 3339 can write. Times run from the epoch to it.
const MAX_TIME: Millis = 253_402_300_799_999;

/// The most a minute may count of anything (sessions started or ended, a
/// sample, a peak): 2^32 - 1, far above any real minute and far enough
/// below `u64::MAX` that 24 hours of them add up without overflow.
const MAX_COUNT: u64 = u32::MAX as u64;

/// The most a minute's ended sessions may add up to, in milliseconds:
/// 2^53, the largest integer every JSON reader keeps exact.
const MAX_ENDED_MS: u64 = 1 << 53;

/// Saves one memory store to one file. Cheap to clone: clones share the
/// file.
#[derive(Debug, Clone)]
pub struct Snapshots {
    store: MemoryStore,
    file: Arc<StateFile>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct StateFile {
    path: PathBuf,
    tmp: PathBuf,
    modules: Modules,
    /// One write at a time: they share the temporary file.
    writing: Mutex<()>,
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
        let file = StateFile {
            // Per process: another process saving to the same file (which
            // the docs advise against) must not write into our temporary
            // file, or we would rename its half-written one into place.
            tmp: with_suffix(&path, &format!(".tmp.{}", std::process::id())),
            modules: store.modules().clone(),
            path,
            writing: Mutex::new(()),
        };
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

impl StateFile {
    /// The image in the file, and what of it was dropped; `None` when there
    /// is no file. Reads at most [`MAX_FILE_BYTES`], and only a regular
    /// file (a FIFO would block the start, a device never end).
    fn read(&self) -> Result<Option<(MemoryImage, Dropped)>, Unusable> {
        let metadata = match fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Unusable::Unreadable(e)),
        };
        if !metadata.is_file() {
            return Err(Unusable::NotAFile);
        }
        if metadata.len() > MAX_FILE_BYTES {
            return Err(Unusable::TooLarge(metadata.len()));
        }
        let mut bytes = Vec::new();
        File::open(&self.path)
            .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(Unusable::Unreadable)?;
        let read = bytes.len() as u64;
        if read > MAX_FILE_BYTES {
            // It grew since the look above.
            return Err(Unusable::TooLarge(read));
        }
        decode(&bytes, &self.modules).map(Some)
    }

    /// Keeps the file as it is now beside it, as `<file>.kept-<time>`,
    /// before a save replaces it: a hard link (the save renames a new file
    /// over the name, the link keeps the old one), or a copy where links
    /// are not possible. Returns where it is kept.
    fn keep(&self) -> io::Result<PathBuf> {
        let kept = with_suffix(&self.path, &format!(".kept-{}", wall_clock_stamp()));
        if fs::hard_link(&self.path, &kept).is_err() {
            fs::copy(&self.path, &kept)?;
        }
        Ok(kept)
    }

    /// Moves an unusable snapshot out of the way, keeping it for a look.
    fn set_aside(&self, why: &Unusable) {
        let aside = with_suffix(&self.path, &format!(".corrupt-{}", wall_clock_stamp()));
        let path = self.path.display();
        match fs::rename(&self.path, &aside) {
            Ok(()) => tracing::warn!(
                path = %path,
                moved_to = %aside.display(),
                error = %why,
                "unusable snapshot moved aside; starting clean"
            ),
            Err(e) => tracing::warn!(
                path = %path,
                error = %why,
                rename_error = %e,
                "unusable snapshot could not be moved aside; starting clean, and the next snapshot replaces it"
            ),
        }
    }

    /// Encodes `image` and replaces the file with it; returns its size.
    fn write(&self, image: MemoryImage) -> Result<usize, SaveError> {
        let bytes = serde_json::to_vec(&Snapshot::from_image(image, &self.modules))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            // The next start would not read it; the previous one stays.
            return Err(SaveError::TooLarge(bytes.len()));
        }
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        replace_atomically(&self.path, &self.tmp, &bytes)?;
        Ok(bytes.len())
    }
}

/// Now, for the names of files set aside or kept: by the wall clock, since
/// the name is for the operator to read, not a decision of the service.
fn wall_clock_stamp() -> impl std::fmt::Display {
    chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Replaces `path` with `bytes` such that a crash at any point leaves the
/// old file or the new one, complete: write `tmp` and fsync it, rename it
/// over `path`, fsync the directory (which makes the rename durable).
fn replace_atomically(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let replaced = write_synced(tmp, bytes).and_then(|()| fs::rename(tmp, path));
    if replaced.is_err() {
        let _ = fs::remove_file(tmp);
    }
    replaced?;
    sync_directory(directory_of(path))
}

fn write_synced(tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    // A temporary file left by a crash is removed rather than truncated, so
    // the new one is created with the mode below: snapshots hold user ids,
    // and are for the service's user only.
    let _ = fs::remove_file(tmp);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(unix)]
fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_directory(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn decode(bytes: &[u8], modules: &Modules) -> Result<(MemoryImage, Dropped), Unusable> {
    /// What every version has, asked first.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let Versioned { version } = serde_json::from_slice(bytes).map_err(Unusable::Corrupt)?;
    if !(OLDEST_VERSION_READ..=FORMAT_VERSION).contains(&version) {
        return Err(Unusable::Version(version));
    }
    let file: Snapshot = serde_json::from_slice(bytes).map_err(Unusable::Corrupt)?;
    Ok(file.into_image(modules))
}

/// What a usable snapshot held that this service no longer accepts.
#[derive(Debug, Default)]
struct Dropped {
    /// Module codes that are not in `MODULES` any more.
    unknown_modules: BTreeSet<String>,
    /// Entries with a value today's rules refuse (a user id, client id,
    /// page or resource, a time or a count out of bounds), each dropped
    /// whole.
    invalid: usize,
    /// Sessions beyond `MAX_SESSIONS_PER_USER`, found by the restore.
    over_cap: usize,
}

impl Dropped {
    /// The module of `code`, noting it when it is unknown.
    fn module(&mut self, modules: &Modules, code: &str) -> Option<ModuleId> {
        let id = modules.by_code(code);
        if id.is_none() && !self.unknown_modules.contains(code) {
            self.unknown_modules.insert(code.to_owned());
        }
        id
    }

    fn anything(&self) -> bool {
        !self.unknown_modules.is_empty() || self.invalid > 0 || self.over_cap > 0
    }

    /// One warning per kind of loss, each saying where the whole file is
    /// kept (or why it could not be).
    fn warn(&self, kept: &io::Result<PathBuf>) {
        let kept_at = match kept {
            Ok(path) => path.display().to_string(),
            Err(e) => format!("nowhere: it could not be kept ({e}), and the next save replaces it"),
        };
        if !self.unknown_modules.is_empty() {
            tracing::warn!(
                modules = ?self.unknown_modules,
                kept_at = %kept_at,
                "the snapshot has modules that are not configured any more; their sessions, counts and history are dropped (the file as it was is kept)"
            );
        }
        if self.invalid > 0 {
            tracing::warn!(
                dropped = self.invalid,
                kept_at = %kept_at,
                "snapshot entries with values that are no longer valid are dropped (the file as it was is kept)"
            );
        }
        if self.over_cap > 0 {
            tracing::warn!(
                dropped = self.over_cap,
                kept_at = %kept_at,
                "snapshot sessions beyond MAX_SESSIONS_PER_USER are dropped; each user keeps the most recently seen (the file as it was is kept)"
            );
        }
    }
}

/// The file, version 2 (and version 1, which lacks `state` and `users`:
/// their defaults migrate it). The field names are the format: see
/// "Snapshot format" in `docs/design.md` before changing any.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    version: u32,
    saved_at: Millis,
    today_start: Millis,
    sessions: Vec<SessionEntry>,
    today: IndexMap<String, Vec<String>>,
    total: IndexMap<String, Vec<String>>,
    history: Vec<MinuteV1>,
    /// Since version 2: what is kept per user.
    #[serde(default)]
    users: Vec<UserEntry>,
}

/// One user's entry (version 2).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserEntry {
    user_id: String,
    #[serde(default)]
    last_seen: Option<Millis>,
    #[serde(default)]
    profile: Option<serde_json::Value>,
    #[serde(default)]
    hidden: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionEntry {
    user_id: String,
    client_id: Option<String>,
    module: String,
    page: Option<String>,
    resource: Option<String>,
    started_at: Millis,
    resource_since: Millis,
    last_seen: Millis,
    /// Since version 2: `active` or `idle`; absent (version 1) is active.
    #[serde(default)]
    state: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MinuteV1 {
    start: Millis,
    modules: IndexMap<String, ModuleMinuteV1>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModuleMinuteV1 {
    sample: Option<u64>,
    peak: u64,
    peak_at: Option<Millis>,
    started: u64,
    ended: u64,
    ended_ms: u64,
}

impl Snapshot {
    fn from_image(image: MemoryImage, modules: &Modules) -> Self {
        let code = |m: ModuleId| modules.get(m).code.clone();
        let by_code = |sets: Vec<Vec<UserId>>| -> IndexMap<String, Vec<String>> {
            modules
                .ids()
                .zip(sets)
                .map(|(m, users)| (code(m), users.iter().map(|u| u.to_string()).collect()))
                .collect()
        };
        let text = |s: Option<&str>| s.map(str::to_owned);
        Self {
            version: FORMAT_VERSION,
            saved_at: image.at,
            today_start: image.today_start,
            sessions: image
                .sessions
                .iter()
                .map(
                    |SessionImage {
                         info: s,
                         resource_since,
                     }| SessionEntry {
                        user_id: s.user.to_string(),
                        client_id: text(s.client.as_ref().map(ClientId::as_str)),
                        module: code(s.module),
                        page: text(s.page.as_ref().map(Page::as_str)),
                        resource: text(s.resource.as_ref().map(ResourceId::as_str)),
                        started_at: s.started_at,
                        resource_since: *resource_since,
                        last_seen: s.last_seen,
                        state: Some(s.state.as_str().to_owned()),
                    },
                )
                .collect(),
            users: image
                .users
                .into_iter()
                .map(|u| UserEntry {
                    user_id: u.user.to_string(),
                    last_seen: u.last_seen,
                    profile: u.profile.as_ref().map(Profile::to_value),
                    hidden: u.hidden,
                })
                .collect(),
            today: by_code(image.today),
            total: by_code(image.total),
            history: image
                .history
                .into_iter()
                .map(|bucket| MinuteV1 {
                    start: bucket.start,
                    modules: modules
                        .ids()
                        .zip(bucket.modules)
                        .filter(|(_, minute)| *minute != ModuleMinute::default())
                        .map(|(m, minute)| (code(m), minute.into()))
                        .collect(),
                })
                .collect(),
        }
    }

    /// The image this file describes for the configured `modules`, leaving
    /// out what they no longer accept.
    fn into_image(self, modules: &Modules) -> (MemoryImage, Dropped) {
        let mut dropped = Dropped::default();
        let sessions = self
            .sessions
            .into_iter()
            .filter_map(|s| s.into_image(modules, &mut dropped))
            .collect();
        let today = users_by_module(self.today, modules, &mut dropped);
        let total = users_by_module(self.total, modules, &mut dropped);
        let history = self
            .history
            .into_iter()
            .map(|minute| {
                let mut bucket = MinuteBucket {
                    start: minute.start,
                    modules: vec![ModuleMinute::default(); modules.len()],
                };
                for (code, module_minute) in minute.modules {
                    if let Some(m) = dropped.module(modules, &code) {
                        if time_ok(minute.start) && module_minute.within_bounds() {
                            bucket.modules[m.index()] = module_minute.into();
                        } else {
                            dropped.invalid += 1;
                        }
                    }
                }
                bucket
            })
            .collect();
        let users = self
            .users
            .into_iter()
            .filter_map(|u| {
                let user = u.into_image();
                dropped.invalid += usize::from(user.is_none());
                user
            })
            .collect();
        let image = MemoryImage {
            at: self.saved_at,
            today_start: self.today_start,
            sessions,
            today,
            total,
            history,
            users,
        };
        (image, dropped)
    }
}

impl SessionEntry {
    fn into_image(self, modules: &Modules, dropped: &mut Dropped) -> Option<SessionImage> {
        let module = dropped.module(modules, &self.module)?;
        let session = (|| {
            let times = [self.started_at, self.resource_since, self.last_seen];
            if !times.into_iter().all(time_ok) {
                return None;
            }
            Some(SessionImage {
                info: SessionInfo {
                    user: UserId::parse(&self.user_id)?,
                    client: optional(self.client_id.as_deref(), ClientId::parse)?,
                    module,
                    page: optional(self.page.as_deref(), Page::parse)?,
                    resource: optional(self.resource.as_deref(), ResourceId::parse)?,
                    state: optional(self.state.as_deref(), Activity::parse)?.unwrap_or_default(),
                    started_at: self.started_at,
                    last_seen: self.last_seen,
                },
                resource_since: self.resource_since,
            })
        })();
        dropped.invalid += usize::from(session.is_none());
        session
    }
}

impl UserEntry {
    /// The user as the store keeps them, or `None` when a value is one
    /// today's rules refuse.
    fn into_image(self) -> Option<UserImage> {
        let profile = match self.profile {
            None => None,
            Some(value) => Some(Profile::from_json(&value.to_string())?),
        };
        if !self.last_seen.is_none_or(time_ok) {
            return None;
        }
        Some(UserImage {
            user: UserId::parse(&self.user_id)?,
            last_seen: self.last_seen,
            profile,
            hidden: self.hidden,
        })
    }
}

/// Whether `t` is an instant a snapshot may name: from the epoch to
/// [`MAX_TIME`].
fn time_ok(t: Millis) -> bool {
    (0..=MAX_TIME).contains(&t)
}

impl ModuleMinuteV1 {
    /// Whether every value is one a minute can hold.
    fn within_bounds(&self) -> bool {
        let counts = [self.peak, self.started, self.ended];
        counts
            .into_iter()
            .chain(self.sample)
            .all(|n| n <= MAX_COUNT)
            && self.ended_ms <= MAX_ENDED_MS
            && self.peak_at.is_none_or(time_ok)
    }
}

/// `Some(None)` for no value, `Some(Some(_))` for a valid one, `None` for
/// an invalid one.
fn optional<T>(value: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) => parse(v).map(Some),
    }
}

fn users_by_module(
    sets: IndexMap<String, Vec<String>>,
    modules: &Modules,
    dropped: &mut Dropped,
) -> Vec<Vec<UserId>> {
    let mut by_module = vec![Vec::new(); modules.len()];
    for (code, users) in sets {
        let Some(m) = dropped.module(modules, &code) else {
            continue;
        };
        for user in users {
            match UserId::parse(&user) {
                Some(user) => by_module[m.index()].push(user),
                None => dropped.invalid += 1,
            }
        }
    }
    by_module
}

impl From<ModuleMinute> for ModuleMinuteV1 {
    fn from(m: ModuleMinute) -> Self {
        Self {
            sample: m.sample,
            peak: m.peak,
            peak_at: m.peak_at,
            started: m.started,
            ended: m.ended,
            ended_ms: m.ended_ms,
        }
    }
}

impl From<ModuleMinuteV1> for ModuleMinute {
    fn from(m: ModuleMinuteV1) -> Self {
        Self {
            sample: m.sample,
            peak: m.peak,
            peak_at: m.peak_at,
            started: m.started,
            ended: m.ended,
            ended_ms: m.ended_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules(spec: &str) -> Modules {
        Modules::parse(spec).expect("registry")
    }

    #[test]
    fn a_file_round_trips_through_the_format() {
        let registry = modules("pms:procurement,ih:innovation");
        let pms = registry.by_code("pms").expect("pms");
        let user = |s: &str| UserId::parse(s).expect("user");
        let image = MemoryImage {
            at: 1_000,
            today_start: 500,
            sessions: vec![SessionImage {
                info: SessionInfo {
                    user: user("42"),
                    client: ClientId::parse("tab-1"),
                    module: pms,
                    page: Page::parse("/requests/1"),
                    resource: ResourceId::parse("request:1"),
                    state: Activity::Idle,
                    started_at: 600,
                    last_seen: 900,
                },
                resource_since: 700,
            }],
            today: vec![vec![user("42")], vec![]],
            total: vec![vec![user("42")], vec![user("7")]],
            history: vec![MinuteBucket {
                start: 0,
                modules: vec![
                    ModuleMinute {
                        sample: Some(1),
                        peak: 1,
                        peak_at: Some(30),
                        started: 1,
                        ended: 0,
                        ended_ms: 0,
                    },
                    ModuleMinute::default(),
                ],
            }],
            users: vec![UserImage {
                user: user("42"),
                last_seen: Some(900),
                profile: Profile::build([("name", "Ann")]),
                hidden: true,
            }],
        };
        let bytes =
            serde_json::to_vec(&Snapshot::from_image(image.clone(), &registry)).expect("encode");
        let (back, dropped) = decode(&bytes, &registry).expect("decode");
        assert_eq!(back, image);
        assert!(dropped.unknown_modules.is_empty() && dropped.invalid == 0);
    }

    #[test]
    fn entries_of_unknown_modules_or_with_invalid_values_are_dropped() {
        let json = br#"{"version":1,"savedAt":0,"todayStart":0,
            "sessions":[
              {"userId":"1","clientId":null,"module":"gone","page":null,"resource":null,"startedAt":0,"resourceSince":0,"lastSeen":0},
              {"userId":"2","clientId":"bad id","module":"pms","page":null,"resource":null,"startedAt":0,"resourceSince":0,"lastSeen":0},
              {"userId":"3","clientId":null,"module":"pms","page":null,"resource":null,"startedAt":0,"resourceSince":0,"lastSeen":0}],
            "today":{"pms":["1",""],"gone":["9"]},"total":{"pms":["1"]},"history":[]}"#;
        let (image, dropped) = decode(json, &modules("pms:procurement")).expect("decode");
        assert_eq!(image.sessions.len(), 1);
        assert_eq!(image.sessions[0].info.user.as_str(), "3");
        assert_eq!(
            image.sessions[0].info.state,
            Activity::Active,
            "version 1 had no state: active"
        );
        assert_eq!(image.today, vec![vec![UserId::parse("1").expect("user")]]);
        assert_eq!(
            dropped.unknown_modules.into_iter().collect::<Vec<_>>(),
            ["gone"]
        );
        assert_eq!(dropped.invalid, 2, "the bad client id and the empty user");
    }

    #[test]
    fn another_version_or_shape_is_unusable() {
        let registry = modules("pms:procurement");
        assert!(matches!(
            decode(br#"{"version":3,"anything":"else"}"#, &registry),
            Err(Unusable::Version(3))
        ));
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            b"{\"version\":1}",
            b"{\"version\":1,",
        ] {
            assert!(
                matches!(decode(bad, &registry), Err(Unusable::Corrupt(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
