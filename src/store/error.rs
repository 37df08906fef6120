//! What can go wrong with a state file, and who holds a lock that stopped us.

use std::path::PathBuf;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is locked by another tokend ({holder})")]
    Locked { path: PathBuf, holder: Holder },
    /// Not tokend's own: a directory others may write, a symlink, not a regular file.
    #[error("{path} {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path} is not a valid tokend state file: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// Who holds a lock, as far as can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holding process, as the kernel's lock table names it (and checked to run as
    /// the lock file's owner or root); `None` when it cannot be seen from here (another
    /// pid namespace or host).
    pub pid: Option<i32>,
    /// What the lock file says, cleaned for printing: a claim, not a fact.
    pub says: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}"),
            None if self.says.is_empty() => f.write_str("holder unknown"),
            None => write!(f, "the lock file says: {}", self.says),
        }
    }
}
