//! The state directory: where tokend keeps refresh tokens, so nobody but tokend's user
//! (or root) may change what is in it. It is opened once per process and shared by every
//! credential whose state file it holds; its owner and mode are checked on the open
//! descriptor, and every file in it is reached relative to that descriptor without
//! following a symlink (see [`crate::atomic::Dir`]). A root `tokend login` or `once` in
//! a directory the daemon's user owns can then neither be steered to another file nor
//! handed a planted one.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::atomic::{Dir, create_dirs, dir::writable_by_others};
use crate::store::StoreError;

/// The state directories open in this process, each shared by its credentials.
static OPEN: Mutex<BTreeMap<PathBuf, Weak<StateDir>>> = Mutex::new(BTreeMap::new());

/// A checked, open state directory.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// The directory as last opened: replaced when it was removed and made again.
    dir: Mutex<Arc<Dir>>,
    /// Its owner and group when first opened, which a directory made again gets back.
    owner: (u32, u32),
}

impl StateDir {
    /// The state directory at `path`, made (0700) when missing, checked, and shared with
    /// every other credential of this process whose state file is in it.
    pub fn open(path: &Path) -> Result<Arc<StateDir>, StoreError> {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(dir) = open.get(path).and_then(Weak::upgrade) {
            return Ok(dir);
        }
        let dir = open_checked(path)?;
        let meta = dir.metadata().map_err(|err| io_error(path, err))?;
        let shared = Arc::new(StateDir {
            path: path.to_owned(),
            dir: Mutex::new(Arc::new(dir)),
            owner: (meta.uid(), meta.gid()),
        });
        open.retain(|_, d| d.strong_count() > 0);
        open.insert(path.to_owned(), Arc::downgrade(&shared));
        Ok(shared)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory as it stands.
    pub fn dir(&self) -> Arc<Dir> {
        self.dir
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes the directory again after it was removed under the process (`gone` is the
    /// one found missing), with its first owner; returns the new one. Another credential
    /// may have done it already: then that one is returned.
    pub fn recreate(&self, gone: &Arc<Dir>) -> Result<Arc<Dir>, StoreError> {
        let mut current = self.dir.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&current, gone) {
            return Ok(current.clone());
        }
        let dir = open_checked(&self.path)?;
        let meta = dir.metadata().map_err(|err| io_error(&self.path, err))?;
        if (meta.uid(), meta.gid()) != self.owner && nix::unistd::geteuid().is_root() {
            let (uid, gid) = self.owner;
            std::os::unix::fs::fchown(
                std::fs::File::from(dir_fd(&dir, &self.path)?),
                Some(uid),
                Some(gid),
            )
            .map_err(|err| io_error(&self.path, err))?;
        }
        tracing::warn!(target: "tokend::store", dir = %self.path.display(), "the state directory was removed while tokend ran; made it again");
        *current = Arc::new(dir);
        Ok(current.clone())
    }
}

fn dir_fd(dir: &Dir, path: &Path) -> Result<std::os::fd::OwnedFd, StoreError> {
    dir.fd()
        .try_clone_to_owned()
        .map_err(|err| io_error(path, err))
}

fn io_error(path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        err,
    }
}

/// Opens the directory at `path`, making it (0700, missing parents 0755) when it is
/// missing, and checks what was opened.
fn open_checked(path: &Path) -> Result<Dir, StoreError> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    if std::fs::symlink_metadata(path).is_err() {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dirs(parent, 0o755, None).map_err(|err| io_error(parent, err))?;
        }
        create_dirs(path, 0o700, None).map_err(|err| io_error(path, err))?;
    }
    let dir = Dir::open(path).map_err(|err| io_error(path, err))?;
    let meta = dir.metadata().map_err(|err| io_error(path, err))?;
    let euid = nix::unistd::geteuid().as_raw();
    check(&meta, euid).map_err(|why| StoreError::Unsafe {
        path: path.to_owned(),
        why,
    })?;
    Ok(dir)
}

/// Whether a state directory can be trusted by a process running as `euid`: nobody but
/// its owner may write it, and its owner is this user or root. Root trusts any owner:
/// `tokend login` run as root writes into the daemon's directory, as the daemon's user.
pub fn check(meta: &std::fs::Metadata, euid: u32) -> Result<(), String> {
    if writable_by_others(meta) {
        return Err(format!(
            "is writable by its group or by others (mode {:04o}): any of them could replace the state or plant a link in it. Make it 0700 (chmod 0700 DIR), or point state_dir at a directory of tokend's own, which tokend makes itself when it is missing",
            meta.mode() & 0o7777
        ));
    }
    let owner = meta.uid();
    if euid != 0 && owner != euid && owner != 0 {
        return Err(format!(
            "is owned by uid {owner}, not by tokend's user (uid {euid}) or root: its owner could replace the state. Give it to tokend's user (chown), or point state_dir elsewhere"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_directory_others_can_write_or_own_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        // Made when missing, 0700.
        let state = StateDir::open(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        // Shared while open.
        assert!(Arc::ptr_eq(&state, &StateDir::open(&path).unwrap()));
        drop(state);
        for mode in [0o770, 0o707, 0o1777, 0o720] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = StateDir::open(&path).unwrap_err();
            assert!(
                e.to_string().contains("writable by its group or by others"),
                "{mode:o}: {e}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Someone else's directory (root's own test gives it to uid 4242 first).
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        }
        let meta = std::fs::metadata(&path).unwrap();
        assert!(check(&meta, meta.uid()).is_ok());
        assert!(check(&meta, 0).is_ok());
        let e = check(&meta, meta.uid() + 1).unwrap_err();
        assert!(e.contains("not by tokend's user"), "{e}");
    }

    #[test]
    fn a_removed_directory_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let state = StateDir::open(&path).unwrap();
        let first = state.dir();
        std::fs::remove_dir(&path).unwrap();
        let again = state.recreate(&first).unwrap();
        assert!(!Arc::ptr_eq(&first, &again));
        assert!(path.is_dir());
        // A second credential finding the old one gone gets the new one.
        assert!(Arc::ptr_eq(&again, &state.recreate(&first).unwrap()));
    }
}
