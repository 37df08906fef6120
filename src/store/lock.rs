//! `<state_file>.lock`: one process per state file. The lock is an exclusive `flock`
//! on that file, which says who holds it ("pid N on HOST").

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use nix::fcntl::OFlag;

use crate::atomic::Dir;
use crate::store::StoreError;

/// Who holds a lock, as far as can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holding process on this host, as the lock file says.
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

/// Takes the lock `name` in `dir` (for the state file at `state_path`, named in errors):
/// created 0600 when missing, never through a symlink, and only a regular file.
pub fn take(dir: &Dir, name: &OsStr, state_path: &Path) -> Result<File, StoreError> {
    let lock_path = dir.path().join(name);
    let io = |err| StoreError::Io {
        path: lock_path.clone(),
        err,
    };
    let mut lock = dir
        .open_file(name, OFlag::O_RDWR | OFlag::O_CREAT, 0o600)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => StoreError::Unsafe {
                path: lock_path.clone(),
                why:
                    "is a symbolic link: tokend never follows one in its state directory; remove it"
                        .into(),
            },
            _ => io(err),
        })?;
    let meta = lock.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(StoreError::Unsafe {
            path: lock_path,
            why: "is not a regular file; remove it".into(),
        });
    }
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StoreError::Locked {
                path: state_path.to_owned(),
                holder: holder(&mut lock),
            });
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(io(err)),
    }
    let me = format!(
        "pid {} on {}\n",
        std::process::id(),
        crate::store::file::hostname()
    );
    let _ = lock
        .set_len(0)
        .and_then(|_| lock.rewind())
        .and_then(|_| lock.write_all(me.as_bytes()));
    Ok(lock)
}

/// Who holds the lock on `lock`, an open lock file that someone else has locked.
fn holder(lock: &mut File) -> Holder {
    let mut text = String::new();
    let _ = lock.take(256).read_to_string(&mut text);
    let says: String = text
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(100)
        .collect();
    Holder {
        pid: claimed_pid(&says),
        says,
    }
}

/// The pid in a lock holder's "pid N on HOST", when HOST is this host.
pub fn claimed_pid(holder: &str) -> Option<i32> {
    let (pid, host) = holder.strip_prefix("pid ")?.split_once(" on ")?;
    (host == crate::store::file::hostname())
        .then(|| pid.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_at_the_lock_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("c.json.lock")).unwrap();
        let d = Dir::open(dir.path()).unwrap();
        let e = take(&d, OsStr::new("c.json.lock"), &dir.path().join("c.json")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
