//! `STATE_FILE`: where the memory store keeps its snapshot. Parsed as a
//! path, then checked against the store and the disk (a directory that
//! exists, a regular file or none yet).

use std::path::{Path, PathBuf};

use super::{ConfigError, StoreKind};

const STATE_FILE_EXAMPLE: &str = "/var/lib/presence/state.json";

pub(super) fn parse_state_file(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err(format!(
            "expected a file path like {STATE_FILE_EXAMPLE} (unset it to keep nothing)"
        ));
    }
    Ok(PathBuf::from(s))
}

/// `STATE_FILE` is for the memory store, and names a file in a directory
/// that exists (the file itself may not exist yet; if it does, it is a
/// regular file). What the file holds is
/// not checked here: an unusable snapshot never stops start-up.
pub(super) fn check_state_file(path: &Path, store: StoreKind) -> Result<(), ConfigError> {
    let fail = |message: String| Err(ConfigError::new("STATE_FILE", message));
    if store == StoreKind::Redis {
        return fail("only for STORE=memory; with STORE=redis the state lives in Redis".into());
    }
    if path.is_dir() {
        return fail(format!(
            "`{}` is a directory; expected a file path like {STATE_FILE_EXAMPLE}",
            path.display()
        ));
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        // A FIFO would block the start-up read, a device never end it, and
        // neither may be renamed aside like an unusable snapshot.
        return fail(format!(
            "`{}` is not a regular file; expected a file path like {STATE_FILE_EXAMPLE}",
            path.display()
        ));
    }
    let dir = directory_of(path);
    if !dir.is_dir() {
        return fail(format!("directory `{}` does not exist", dir.display()));
    }
    Ok(())
}

/// The directory a file path is in: its parent, or `.` for a bare name.
pub(crate) fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::serve;

    #[test]
    fn state_file_is_for_the_memory_store_in_a_directory_that_exists() {
        let err = serve(&["--store", "redis", "--state-file", "state.json"]).unwrap_err();
        assert!(err.starts_with("STATE_FILE:"), "{err}");
        let err = serve(&["--state-file", "/nonexistent/dir/state.json"]).unwrap_err();
        assert!(
            err.starts_with("STATE_FILE:") && err.contains("/nonexistent/dir"),
            "{err}"
        );
        let err = serve(&["--state-file", "/"]).unwrap_err();
        assert!(err.starts_with("STATE_FILE:"), "{err}");
        let err = serve(&["--state-file", ""]).unwrap_err();
        assert!(err.starts_with("STATE_FILE (--state-file)"), "{err}");
        assert!(err.contains("expected a file path"), "{err}");
        assert!(serve(&["--state-file", "state.json"]).is_ok());
    }
}
