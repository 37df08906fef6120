//! The files beside a state file, named after it: its lock and a login's handover.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::store::error::StoreError;

/// `<state_file>.lock`: the file whose lock says who owns the state.
pub fn lock_path(state_file: &Path) -> PathBuf {
    beside(state_file, ".lock")
}

/// Where `tokend login` leaves a new chain when a running daemon holds the state's lock:
/// `<state_file>.login`. The daemon adopts it on SIGHUP (which login sends), at start,
/// and while blocked.
pub fn handover_path(state_file: &Path) -> PathBuf {
    beside(state_file, ".login")
}

/// A file next to `path`, named after it with `suffix`.
pub(super) fn beside(path: &Path, suffix: &str) -> PathBuf {
    path.with_file_name(suffixed(path.file_name().unwrap_or_default(), suffix))
}

/// `name` with `suffix` appended.
pub(super) fn suffixed(name: &OsStr, suffix: &str) -> OsString {
    let mut n = name.to_owned();
    n.push(suffix);
    n
}

/// The directory and the name of the file at `path`.
pub(super) fn split(path: &Path) -> Result<(&Path, &OsStr), StoreError> {
    let name = path.file_name().ok_or_else(|| StoreError::Io {
        path: path.to_owned(),
        err: std::io::Error::from_raw_os_error(libc::EISDIR),
    })?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    Ok((dir.unwrap_or(Path::new(".")), name))
}
