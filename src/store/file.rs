//! The local state file, held by one process through `<file>.lock`; and the
//! `<file>.login` handover that `tokend login` leaves beside it for a running daemon.
//!
//! The file is in format 2 ([`super::slots`]): a rotation is committed with one write
//! and one data sync into the file as it stands. The file itself is created (or, for a
//! record that outgrew its slots, created again) by the full protocol: a new file
//! fsync'd, renamed over the old one, its directory fsync'd. A format 1 file (one JSON
//! record) is read, and migrated on the daemon's first start.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::atomic::{self, Perms};
use crate::store::slots::{self, Contents, Position, SlotWriter};
use crate::store::state::{State, StateStore, StoreError, VERSION};

/// A local state file, held exclusively by one process through `<file>.lock`.
pub struct FileStore {
    path: PathBuf,
    _lock: File,
    /// The open file and where its next version goes, once it is known to be in
    /// format 2.
    slots: Option<SlotWriter>,
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
            slots: None,
        })
    }

    /// Creates the file anew in format 2, holding `record`, by the full protocol; the
    /// versions that follow go into its slots.
    fn create(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.slots = None;
        let bytes = slots::new_file(record);
        atomic::write(&self.path, &bytes, &Perms::mode(0o600)).map_err(|failed| {
            StoreError::Io {
                path: self.path.clone(),
                err: failed.into_io(),
            }
        })?;
        let at = Position {
            slot_size: bytes.len() / 2,
            newest: 0,
            sequence: 1,
        };
        self.slots = Some(
            SlotWriter::new(&self.path, at).map_err(|err| StoreError::Io {
                path: self.path.clone(),
                err,
            })?,
        );
        Ok(())
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

/// Reads a state file without locking it (for `status` and `token`): a slot being
/// written fails its checksum and the other is read, so a reader sees a whole version.
pub fn read_state_file(path: &Path) -> Result<Option<State>, StoreError> {
    Ok(read_with_position(path)?.map(|(state, _)| state))
}

/// The state in a file and, in format 2, where its newest version is.
fn read_with_position(path: &Path) -> Result<Option<(State, Option<Position>)>, StoreError> {
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
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.to_owned(),
        message,
    };
    let (record, position) = match slots::read(&bytes) {
        Contents::Json => (std::borrow::Cow::Borrowed(bytes.as_slice()), None),
        Contents::Slots { newest: None, .. } => {
            return Err(corrupt(
                "neither of its two slots holds a whole version (both torn or damaged)".into(),
            ));
        }
        Contents::Slots {
            slot_size,
            newest: Some((newest, slot)),
        } => (
            std::borrow::Cow::Owned(slot.record),
            Some(Position {
                slot_size,
                newest,
                sequence: slot.sequence,
            }),
        ),
    };
    let state: State = serde_json::from_slice(&record).map_err(|e| corrupt(e.to_string()))?;
    if state.version != VERSION {
        return Err(corrupt(format!("unknown version {}", state.version)));
    }
    Ok(Some((state, position)))
}

impl StateStore for FileStore {
    fn load(&mut self) -> Result<Option<State>, StoreError> {
        let Some((state, position)) = read_with_position(&self.path)? else {
            return Ok(None);
        };
        match position {
            // A file that cannot be written (a read-only mount) is not unreadable: the
            // state was read, and the next save says what fails.
            Some(at) => self.slots = SlotWriter::new(&self.path, at).ok(),
            // Format 1: migrated now, durably, before anything else happens to it. A
            // migration that cannot be written (a read-only directory) is not a reason to
            // stop: the state was read, and the next save writes format 2 or says why.
            None => match self.create(&record_bytes(&self.path, &state)?) {
                Ok(()) => {
                    tracing::info!(target: "tokend::store", file = %self.path.display(), "state file migrated to format 2 (two slots, one sync per rotation)")
                }
                Err(e) => {
                    tracing::warn!(target: "tokend::store", error = %e, "cannot migrate the state file to format 2 now; the next save writes it")
                }
            },
        }
        Ok(Some(state))
    }

    fn save(&mut self, state: &State) -> Result<(), StoreError> {
        let record = record_bytes(&self.path, state)?;
        let Some(writer) = self
            .slots
            .as_mut()
            .filter(|w| slots::fits(record.len(), w.slot_size))
        else {
            return self.create(&record);
        };
        match writer.commit(&self.path, &record) {
            // Deleted or replaced behind our back: made again by the full protocol.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.create(&record),
            result => result.map_err(|err| {
                // After a failed sync the file's pages are in doubt: start a new file.
                self.slots = None;
                StoreError::Io {
                    path: self.path.clone(),
                    err,
                }
            }),
        }
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

/// A state as its slot holds it: compact JSON.
fn record_bytes(path: &Path, state: &State) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(state).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Writes a state file as `tokend login` does when no daemon holds it: a new format 2
/// file, atomically and durably, with `perms` (0600; run as root, also the daemon's
/// owner).
pub fn write_state_file(path: &Path, state: &State, perms: &Perms) -> Result<(), StoreError> {
    let bytes = slots::new_file(&record_bytes(path, state)?);
    atomic::write(path, &bytes, perms).map_err(|failed| StoreError::Io {
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
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::store::state::bootstrap_digest;
    use secrecy::{ExposeSecret, SecretString};
    use std::time::SystemTime;

    fn sample() -> State {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        State {
            version: VERSION,
            generation: 1,
            refresh_token: Some(SecretString::from("rt")),
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
        assert_eq!(back.refresh_token.unwrap().expose_secret(), "rt");
        assert_eq!(back.expires_at, sample().expires_at);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(slots::MAGIC));
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("\"expires_at\":\"2027-01-15T09:00:00.000Z\""),
            "{text}"
        );
    }

    /// Each save after the first is one write into the other slot of the same file.
    #[test]
    fn saves_alternate_slots_in_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let mut store = FileStore::open(&path).unwrap();
        let mut state = sample();
        store.save(&state).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        for generation in 2..6 {
            state.generation = generation;
            store.save(&state).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
            let back = read_state_file(&path).unwrap().unwrap();
            assert_eq!(back.generation, generation);
        }
        // A record that outgrows its slot gets a new file with larger ones.
        state.access_token = Some(SecretString::from("a".repeat(10_000)));
        store.save(&state).unwrap();
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * 32768);
        assert_eq!(
            read_state_file(&path)
                .unwrap()
                .unwrap()
                .access_token
                .unwrap()
                .expose_secret()
                .len(),
            10_000
        );
        // Deleted behind the daemon's back: the next save writes a file again.
        std::fs::remove_file(&path).unwrap();
        store.save(&state).unwrap();
        assert!(read_state_file(&path).unwrap().is_some());
        // Replaced by another file (a format 1 copy, say): its bytes are not our slots,
        // and the next save writes a whole file instead of one slot into it.
        std::fs::write(dir.path().join("other"), b"{}").unwrap();
        std::fs::rename(dir.path().join("other"), &path).unwrap();
        state.generation = 9;
        store.save(&state).unwrap();
        assert_eq!(read_state_file(&path).unwrap().unwrap().generation, 9);
        assert!(std::fs::read(&path).unwrap().starts_with(slots::MAGIC));
    }

    /// Issue 15: a format 1 file (one JSON record) is read, and migrated on load, with
    /// the same state and no refresh.
    #[test]
    fn a_format_1_file_is_migrated_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&sample()).unwrap()).unwrap();
        assert_eq!(
            read_state_file(&path)
                .unwrap()
                .unwrap()
                .refresh_token
                .unwrap()
                .expose_secret(),
            "rt"
        );
        let mut store = FileStore::open(&path).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.refresh_token.unwrap().expose_secret(), "rt");
        assert!(std::fs::read(&path).unwrap().starts_with(slots::MAGIC));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert_eq!(read_state_file(&path).unwrap().unwrap().generation, 1);
    }

    /// Issue 15: a file truncated to nothing, or whose slots are both damaged, is
    /// unreadable, which blocks; never "no state", which would replay the bootstrap.
    #[test]
    fn an_empty_or_doubly_damaged_file_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            read_state_file(&path),
            Err(StoreError::Corrupt { .. })
        ));
        let mut store = FileStore::open(&path).unwrap();
        store.save(&sample()).unwrap();
        store.save(&sample()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let half = bytes.len() / 2;
        bytes[30] ^= 0xff;
        bytes[half + 30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = read_state_file(&path).unwrap_err();
        assert!(e.to_string().contains("neither of its two slots"), "{e}");
        assert!(store.load().is_err());
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
