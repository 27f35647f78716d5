//! The state file on disk: read whole within [`MAX_FILE_BYTES`], replaced
//! atomically (a temporary file, fsynced, renamed over it, the directory
//! fsynced), and, when a restore cannot use it all, kept or set aside
//! beside itself under a timestamped name for the operator.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::dropped::Dropped;
use super::format::{decode, encode};
use super::{MAX_FILE_BYTES, SaveError, Unusable};
use crate::config::directory_of;
use crate::domain::Modules;
use crate::store::memory::MemoryImage;

/// One snapshot file, and the modules its codes are read against.
#[derive(Debug)]
pub(super) struct StateFile {
    pub(super) path: PathBuf,
    tmp: PathBuf,
    modules: Modules,
    /// One write at a time: they share the temporary file.
    writing: Mutex<()>,
}

impl StateFile {
    /// The file at `path`, for a store of `modules`; nothing is read yet.
    pub(super) fn new(path: PathBuf, modules: Modules) -> Self {
        Self {
            // Per process: another process saving to the same file (which
            // the docs advise against) must not write into our temporary
            // file, or we would rename its half-written one into place.
            tmp: with_suffix(&path, &format!(".tmp.{}", std::process::id())),
            modules,
            path,
            writing: Mutex::new(()),
        }
    }

    /// The image in the file, and what of it was dropped; `None` when there
    /// is no file. Reads at most [`MAX_FILE_BYTES`], and only a regular
    /// file (a FIFO would block the start, a device never end).
    pub(super) fn read(&self) -> Result<Option<(MemoryImage, Dropped)>, Unusable> {
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
    pub(super) fn keep(&self) -> io::Result<PathBuf> {
        let kept = with_suffix(&self.path, &format!(".kept-{}", wall_clock_stamp()));
        if fs::hard_link(&self.path, &kept).is_err() {
            fs::copy(&self.path, &kept)?;
        }
        Ok(kept)
    }

    /// Moves an unusable snapshot out of the way, keeping it for a look.
    pub(super) fn set_aside(&self, why: &Unusable) {
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
    pub(super) fn write(&self, image: MemoryImage) -> Result<usize, SaveError> {
        let bytes = encode(image, &self.modules)?;
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
