//! The local state file: JSON, replaced atomically and durably, held by one process
//! through `<file>.lock`; and the `<file>.login` handover that `tokend login` leaves
//! beside it for a running daemon.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::atomic::{self, Perms};
use crate::store::state::{State, StateStore, StoreError, VERSION};

/// A local JSON state file, held exclusively by one process through `<file>.lock`.
pub struct FileStore {
    path: PathBuf,
    _lock: File,
}

impl FileStore {
    /// Takes the lock on `path`, creating its directory (0700) when missing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let io = |err| StoreError::Io {
            path: path.to_owned(),
            err,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let lock_path = lock_path(path);
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|err| StoreError::Io {
                path: lock_path.clone(),
                err,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "holder unknown".to_owned()
                } else {
                    holder.to_owned()
                };
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(StoreError::Io {
                    path: lock_path,
                    err,
                });
            }
        }
        let me = format!("pid {} on {}\n", std::process::id(), hostname());
        let _ = lock
            .set_len(0)
            .and_then(|_| lock.rewind())
            .and_then(|_| lock.write_all(me.as_bytes()));
        Ok(FileStore {
            path: path.to_owned(),
            _lock: lock,
        })
    }
}

/// `<state_file>.lock`: the file whose lock says who owns the state.
pub fn lock_path(state_file: &Path) -> PathBuf {
    beside(state_file, ".lock")
}

/// A file next to `path`, named after it with `suffix`.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// This host's name, as the lock file and replica identities (SPEC §11) give it.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_owned(),
        _ => "this host".to_owned(),
    }
}

/// Reads a state file without locking it (for `status` and `token`): the file is only
/// ever replaced by rename, so a reader sees a whole version.
pub fn read_state_file(path: &Path) -> Result<Option<State>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                err,
            });
        }
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if state.version != VERSION {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            message: format!("unknown version {}", state.version),
        });
    }
    Ok(Some(state))
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Option<State>, StoreError> {
        read_state_file(&self.path)
    }

    fn save(&mut self, state: &State) -> Result<(), StoreError> {
        write_state_file(&self.path, state, &Perms::mode(0o600))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn load_handover(&self) -> Result<Option<State>, StoreError> {
        read_state_file(&handover_path(&self.path))
    }

    fn clear_handover(&mut self) -> Result<(), StoreError> {
        let path = handover_path(&self.path);
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::Io { path, err })
            }
            _ => Ok(()),
        }
    }
}

/// Writes a state file as the daemon does: atomically and durably, with `perms` (0600;
/// `tokend login` run as root also gives it the daemon's owner).
pub fn write_state_file(path: &Path, state: &State, perms: &Perms) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    atomic::write(path, &json, perms).map_err(|failed| StoreError::Io {
        path: path.to_owned(),
        err: failed.into_io(),
    })
}

/// Where `tokend login` leaves a new chain when a running daemon holds the state's lock:
/// `<state_file>.login`. The daemon adopts it on SIGHUP (which login sends), at start,
/// and while blocked.
pub fn handover_path(state_file: &Path) -> PathBuf {
    beside(state_file, ".login")
}

/// The pid in a lock holder's "pid N on HOST", when HOST is this host.
pub fn local_holder_pid(holder: &str) -> Option<i32> {
    let (pid, host) = holder.strip_prefix("pid ")?.split_once(" on ")?;
    (host == hostname()).then(|| pid.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::state::bootstrap_digest;
    use secrecy::{ExposeSecret, SecretString};
    use std::time::SystemTime;

    fn sample() -> State {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        State {
            version: VERSION,
            generation: 1,
            refresh_token: SecretString::from("rt"),
            access_token: Some(SecretString::from("at")),
            token_type: "Bearer".into(),
            scope: Some("a b".into()),
            obtained_at: Some(now),
            expires_at: Some(now + std::time::Duration::from_secs(3600)),
            chain_started_at: now,
            bootstrap_sha256: bootstrap_digest(&SecretString::from("boot")),
            refused_bootstrap_sha256: None,
            last_error: None,
        }
    }

    #[test]
    fn round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/c.json");
        let mut store = FileStore::open(&path).unwrap();
        assert!(store.load().unwrap().is_none());
        store.save(&sample()).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.refresh_token.expose_secret(), "rt");
        assert_eq!(back.expires_at, sample().expires_at);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"expires_at\": \"2027-01-15T09:00:00.000Z\""),
            "{text}"
        );
    }

    #[test]
    fn second_opener_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let _first = FileStore::open(&path).unwrap();
        match FileStore::open(&path) {
            Err(StoreError::Locked { holder, .. }) => assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            ),
            other => panic!("expected Locked, got {:?}", other.err()),
        }
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            read_state_file(&path),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn debug_output_is_redacted() {
        let text = format!("{:?}", sample());
        assert!(
            !text.contains("\"rt\"") && !text.contains("\"at\""),
            "{text}"
        );
    }
}
