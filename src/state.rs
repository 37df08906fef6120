//! The state file: the daemon's memory of a credential, and the only place the refresh
//! token lives after its first rotation (SPEC §4).
//!
//! Persistence sits behind [`StateStore`] so that a store shared by several replicas can
//! replace the local file later; [`FileStore`] is the local one, with its lock.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::Perms;

/// The current state-file format.
pub const VERSION: u32 = 1;

/// One credential's durable state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    #[serde(with = "secret_text")]
    pub refresh_token: SecretString,
    /// Absent only when a server rotated the refresh token in an otherwise unusable answer
    /// before any access token was obtained.
    #[serde(default, with = "option_secret_text")]
    pub access_token: Option<SecretString>,
    #[serde(default)]
    pub token_type: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default, with = "option_rfc3339")]
    pub obtained_at: Option<SystemTime>,
    #[serde(default, with = "option_rfc3339")]
    pub expires_at: Option<SystemTime>,
    #[serde(with = "rfc3339")]
    pub chain_started_at: SystemTime,
    pub bootstrap_sha256: String,
    /// The last failed refresh, cleared by the next success; for `tokend status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub message: String,
    /// True when refreshing has stopped until a person acts.
    pub blocked: bool,
}

impl State {
    /// The access token, if there is one and it has not expired at `now`.
    pub fn valid_access_token(&self, now: SystemTime) -> Option<&SecretString> {
        match (&self.access_token, self.expires_at) {
            (Some(t), Some(exp)) if exp > now => Some(t),
            _ => None,
        }
    }
}

/// The digest by which a state remembers which bootstrap token its chain came from.
pub fn bootstrap_digest(token: &SecretString) -> String {
    let digest = Sha256::digest(token.expose_secret().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is locked by another tokend ({holder})")]
    Locked { path: PathBuf, holder: String },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path} is not a valid tokend state file: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// Where a credential's state is kept.
pub trait StateStore: Send + 'static {
    /// The stored state, or `None` when there is none yet.
    fn load(&self) -> Result<Option<State>, StoreError>;
    /// Replaces the stored state durably; when this returns `Ok` the state survives a crash.
    fn save(&mut self, state: &State) -> Result<(), StoreError>;
    /// Where the state lives, for messages.
    fn describe(&self) -> String;
    /// A state that `tokend login` left for this process while it held the lock.
    fn load_handover(&self) -> Result<Option<State>, StoreError>;
    /// Removes the handover once its state is saved.
    fn clear_handover(&mut self) -> Result<(), StoreError>;
}

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

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

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

fn hostname() -> String {
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
    crate::atomic::write(path, &json, perms).map_err(|failed| StoreError::Io {
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

mod secret_text {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose_secret())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        String::deserialize(d).map(SecretString::from)
    }
}

mod option_secret_text {
    use super::*;
    pub fn serialize<S: serde::Serializer>(
        v: &Option<SecretString>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v.expose_secret()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SecretString>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
    }
}

/// RFC 3339 UTC timestamps, as humantime writes them.
pub mod rfc3339 {
    use super::*;
    pub fn format(t: SystemTime) -> String {
        humantime::format_rfc3339_millis(t).to_string()
    }
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}

mod option_rfc3339 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&rfc3339::format(*t)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => humantime::parse_rfc3339_weak(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        State {
            version: VERSION,
            refresh_token: SecretString::from("rt"),
            access_token: Some(SecretString::from("at")),
            token_type: "Bearer".into(),
            scope: Some("a b".into()),
            obtained_at: Some(now),
            expires_at: Some(now + std::time::Duration::from_secs(3600)),
            chain_started_at: now,
            bootstrap_sha256: bootstrap_digest(&SecretString::from("boot")),
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
