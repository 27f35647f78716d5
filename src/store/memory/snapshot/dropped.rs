//! What a restore left out of a usable snapshot ([`Dropped`]), counted
//! while the format is decoded and reported once, as warnings that say
//! where the whole file is kept.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

use crate::domain::{ModuleId, Modules};

/// What a usable snapshot held that this service no longer accepts.
#[derive(Debug, Default)]
pub(super) struct Dropped {
    /// Module codes that are not in `MODULES` any more.
    pub(super) unknown_modules: BTreeSet<String>,
    /// Entries with a value today's rules refuse (a user id, client id,
    /// page or resource, a time or a count out of bounds), each dropped
    /// whole.
    pub(super) invalid: usize,
    /// Sessions beyond `MAX_SESSIONS_PER_USER`, found by the restore.
    pub(super) over_cap: usize,
}

impl Dropped {
    /// The module of `code`, noting it when it is unknown.
    pub(super) fn module(&mut self, modules: &Modules, code: &str) -> Option<ModuleId> {
        let id = modules.by_code(code);
        if id.is_none() && !self.unknown_modules.contains(code) {
            self.unknown_modules.insert(code.to_owned());
        }
        id
    }

    pub(super) fn anything(&self) -> bool {
        !self.unknown_modules.is_empty() || self.invalid > 0 || self.over_cap > 0
    }

    /// One warning per kind of loss, each saying where the whole file is
    /// kept (or why it could not be).
    pub(super) fn warn(&self, kept: &io::Result<PathBuf>) {
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
