//! The local state file, held by one process through `<file>.lock` ([`super::lock`]);
//! and the `<file>.login` handover that `tokend login` leaves beside it for a running
//! daemon. Every one of them is reached through the checked state directory
//! ([`super::dir`]), never through a symlink.
//!
//! The file is in format 2 ([`super::slots`]): a rotation is committed with one write
//! and one data sync into the file as it stands. The file itself is created (or, for a
//! record that outgrew its slots, created again) by the full protocol: a new file
//! fsync'd, renamed over the old one, its directory fsync'd. A format 1 file (one JSON
//! record) is read, and migrated on the daemon's first start.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::atomic::{self, Dir, Perms};
use crate::store::dir::StateDir;
use crate::store::error::StoreError;
use crate::store::lock;
use crate::store::names::{beside, split, suffixed};
pub use crate::store::read::read_state_file;
use crate::store::read::read_with_position;
use crate::store::slots::{self, Position, SlotWriter};
use crate::store::state::State;

/// A local state file, held exclusively by one process through `<file>.lock`.
pub struct StateFile {
    path: PathBuf,
    dir: Arc<StateDir>,
    name: OsString,
    lock: File,
    /// Where the file's next version goes, once it is known to be in format 2.
    slots: Option<SlotWriter>,
}

impl StateFile {
    /// Takes the lock on `path`, making its directory (0700) when missing. Fails when
    /// the directory is not tokend's own (writable by others, or someone else's).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let (dir_path, name) = split(path)?;
        let dir = StateDir::open(dir_path)?;
        let lock = lock::take(&dir.dir(), &suffixed(name, ".lock"), path)?;
        Ok(StateFile {
            path: path.to_owned(),
            dir,
            name: name.to_owned(),
            lock,
            slots: None,
        })
    }

    /// Gives the lock file to the daemon's user: a root `tokend login` made it, and the
    /// daemon must be able to open it. On the open descriptor, never the path.
    pub fn give_lock_to(&self, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::fchown(&self.lock, Some(uid), Some(gid))
    }

    /// Replaces the state with `state`, written with `perms` by the full protocol
    /// (`tokend login`, which may give it to the daemon's user).
    pub fn replace(&mut self, state: &State, perms: &Perms) -> Result<(), StoreError> {
        self.slots = None;
        let bytes = slots::new_file(&record_bytes(&self.path, state)?);
        self.write_whole(&bytes, perms)
    }

    /// Creates the file anew in format 2, holding `record`, by the full protocol; the
    /// versions that follow go into its slots.
    fn create(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.slots = None;
        let bytes = slots::new_file(record);
        self.write_whole(&bytes, &Perms::mode(0o600))?;
        let at = Position {
            slot_size: bytes.len() / 2,
            newest: 0,
            sequence: 1,
        };
        let dir = self.dir.dir();
        self.slots = Some(SlotWriter::new(&dir, &self.name, at).map_err(|err| self.io(err))?);
        Ok(())
    }

    /// Writes the whole file by the full protocol. A state directory removed meanwhile
    /// is made again (with the lock in it), as a removed state file is.
    fn write_whole(&mut self, bytes: &[u8], perms: &Perms) -> Result<(), StoreError> {
        let dir = self.dir.dir();
        match atomic::write_in(&dir, &self.name, bytes, perms) {
            Err(failed) => {
                // (ENOENT, or EPERM for an unnamed file, when the directory is gone.)
                if !removed(&dir) {
                    return Err(self.io(failed.into_io()));
                }
                let dir = self.dir.recreate(&dir)?;
                self.relock(&dir);
                atomic::write_in(&dir, &self.name, bytes, perms)
                    .map_err(|failed| self.io(failed.into_io()))
            }
            Ok(()) => Ok(()),
        }
    }

    /// Takes the lock again in a directory made again: the old lock went with the old
    /// directory, and another process could otherwise take the state.
    fn relock(&mut self, dir: &Dir) {
        match lock::take(dir, &suffixed(&self.name, ".lock"), &self.path) {
            Ok(lock) => self.lock = lock,
            Err(e) => {
                tracing::error!(target: "tokend::store", error = %e, "cannot take the lock again in the state directory made again")
            }
        }
    }

    fn io(&self, err: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            err,
        }
    }
}

/// Whether `dir` was removed (it has no name left).
fn removed(dir: &Dir) -> bool {
    dir.metadata().is_ok_and(|m| m.nlink() == 0)
}

impl StateFile {
    /// The stored state, or `None` when there is none yet.
    pub fn load(&mut self) -> Result<Option<State>, StoreError> {
        let dir = self.dir.dir();
        let Some((state, position)) = read_with_position(&dir, &self.name, &self.path)? else {
            return Ok(None);
        };
        match position {
            // A file that cannot be written (a read-only mount) is not unreadable: the
            // state was read, and the next save says what fails.
            Some(at) => self.slots = SlotWriter::new(&dir, &self.name, at).ok(),
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

    /// Replaces the stored state durably; when this returns `Ok` the state survives a
    /// crash.
    pub fn save(&mut self, state: &State) -> Result<(), StoreError> {
        let record = record_bytes(&self.path, state)?;
        let dir = self.dir.dir();
        let Some(writer) = self
            .slots
            .as_mut()
            .filter(|w| slots::fits(record.len(), w.slot_size))
        else {
            return self.create(&record);
        };
        match writer.commit(&dir, &self.name, &record) {
            // Deleted or replaced behind our back: made again by the full protocol.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.create(&record),
            result => result.map_err(|err| {
                // After a failed sync the file's pages are in doubt: start a new file.
                self.slots = None;
                self.io(err)
            }),
        }
    }

    /// A state that `tokend login` left for this process while it held the lock.
    pub fn load_handover(&self) -> Result<Option<State>, StoreError> {
        let name = suffixed(&self.name, ".login");
        let path = beside(&self.path, ".login");
        Ok(read_with_position(&self.dir.dir(), &name, &path)?.map(|(state, _)| state))
    }

    /// Removes the handover once its state is saved.
    pub fn clear_handover(&mut self) -> Result<(), StoreError> {
        self.dir
            .dir()
            .remove(&suffixed(&self.name, ".login"))
            .map_err(|err| StoreError::Io {
                path: beside(&self.path, ".login"),
                err,
            })
    }
}

/// A state as its slot holds it: compact JSON.
fn record_bytes(path: &Path, state: &State) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(state).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Writes a state file (a new format 2 file, atomically and durably, with `perms`)
/// into its checked state directory, without its lock: `tokend login`'s handover for
/// a running daemon, and tests.
pub fn write_state_file(path: &Path, state: &State, perms: &Perms) -> Result<(), StoreError> {
    let (dir, name) = split(path)?;
    let dir = StateDir::open(dir)?;
    let bytes = slots::new_file(&record_bytes(path, state)?);
    atomic::write_in(&dir.dir(), name, &bytes, perms).map_err(|failed| StoreError::Io {
        path: path.to_owned(),
        err: failed.into_io(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::store::state::{VERSION, bootstrap_digest};
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
        let mut store = StateFile::open(&path).unwrap();
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
        let mut store = StateFile::open(&path).unwrap();
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

    /// A format 1 file (one JSON record) is read, and migrated on load, with
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
        let mut store = StateFile::open(&path).unwrap();
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

    /// A file truncated to nothing, or whose slots are both damaged, is
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
        let mut store = StateFile::open(&path).unwrap();
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
        let _first = StateFile::open(&path).unwrap();
        match StateFile::open(&path) {
            Err(StoreError::Locked { holder, .. }) => {
                assert_eq!(holder.pid, Some(std::process::id() as i32), "{holder}")
            }
            other => panic!("expected Locked, got {:?}", other.err()),
        }
    }

    /// Symlinks planted at the state file, its handover and its temporary names are
    /// replaced or refused, never followed.
    #[test]
    fn symlinks_in_the_state_directory_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let state_dir = dir.path().join("state");
        let path = state_dir.join("c.json");
        let mut store = StateFile::open(&path).unwrap();
        for name in ["c.json", "c.json.login"] {
            std::os::unix::fs::symlink(&victim, state_dir.join(name)).unwrap();
        }
        assert!(matches!(store.load(), Err(StoreError::Unsafe { .. })));
        assert!(matches!(
            store.load_handover(),
            Err(StoreError::Unsafe { .. })
        ));
        assert!(read_state_file(&path).is_err());
        store.save(&sample()).unwrap();
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        store.save(&sample()).unwrap();
        store.clear_handover().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(state_dir.join("c.json.login")).is_err());
    }

    /// A state file made world-readable behind tokend's back is 0600 again at the next
    /// commit; one replaced by a copy (same inode, other bytes) is written whole.
    #[test]
    fn each_commit_restores_the_mode_and_notices_a_copy_over_the_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let mut store = StateFile::open(&path).unwrap();
        let mut state = sample();
        store.save(&state).unwrap();
        state.generation = 2;
        store.save(&state).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        state.generation = 3;
        store.save(&state).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        // `cp other.json c.json`: the same inode, holding another file's versions, whose
        // sequence numbers are higher than this one's.
        let other = dir.path().join("other.json");
        let mut other_store = StateFile::open(&other).unwrap();
        let mut theirs = sample();
        theirs.generation = 99;
        for _ in 0..10 {
            other_store.save(&theirs).unwrap();
        }
        std::fs::write(&path, std::fs::read(&other).unwrap()).unwrap();
        state.generation = 4;
        store.save(&state).unwrap();
        assert_eq!(read_state_file(&path).unwrap().unwrap().generation, 4);
        // And a format 1 copy over it.
        std::fs::write(&path, serde_json::to_vec(&sample()).unwrap()).unwrap();
        state.generation = 5;
        store.save(&state).unwrap();
        assert_eq!(read_state_file(&path).unwrap().unwrap().generation, 5);
    }

    /// A state directory removed under the daemon is made again at the next save, with
    /// the lock in it.
    #[test]
    fn a_removed_state_directory_is_made_again_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/c.json");
        let mut store = StateFile::open(&path).unwrap();
        store.save(&sample()).unwrap();
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        let mut state = sample();
        state.generation = 7;
        store.save(&state).unwrap();
        assert_eq!(read_state_file(&path).unwrap().unwrap().generation, 7);
        assert!(matches!(
            StateFile::open(&path),
            Err(StoreError::Locked { .. })
        ));
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
