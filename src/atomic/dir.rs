//! An open directory, through which files are reached without following a symlink at
//! their name; and directories created with exact modes, durably.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

/// A directory held open: the files in it are opened, created, renamed and removed
/// relative to it, so that the directory checked is the one written to.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory at `path` (following symlinks on the way: the path is
    /// configuration, and what was opened is what callers check).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The path it was opened by, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The directory's own metadata (owner, mode), from the open descriptor.
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        File::from(self.fd.try_clone()?).metadata()
    }

    /// Opens `name` in this directory with `flags` (and `O_CREAT`'s `mode`), never
    /// following a symlink there: a planted link is `ELOOP`, not its target.
    pub fn open_file(&self, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<File> {
        let fd = openat(
            self.fd(),
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Reads the whole of `name`, or `None` when there is no such file.
    pub fn read(&self, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let mut file = match self.open_file(name, OFlag::O_RDONLY, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// Removes `name` (a file, or a symlink: never what it points at); absent is fine.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        match nix::unistd::unlinkat(self.fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Err(nix::errno::Errno::ENOENT) => Ok(()),
            other => other.map_err(io::Error::from),
        }
    }

    /// Renames `from` over `to`, both in this directory.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        nix::fcntl::renameat(self.fd(), from, self.fd(), to).map_err(io::Error::from)
    }
}

/// Creates `dir` and whichever of its parents are missing, each with exactly `mode`
/// (whatever the umask) and, when given, group `gid`; syncs each parent after the new
/// entry, so that a crash does not forget a directory a durable file is in. Existing
/// directories are left as they are.
pub fn create_dirs(dir: &Path, mode: u32, gid: Option<u32>) -> io::Result<()> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_err())
        .map(Path::to_path_buf)
        .collect();
    for path in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            // Made meanwhile by someone else (another credential): theirs stands.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        let made = Dir::open(path)?;
        let file = File::from(made.fd.try_clone()?);
        if gid.is_some() {
            std::os::unix::fs::fchown(&file, None, gid)?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            super::sync_dir(&Dir::open(parent)?)?;
        }
    }
    Ok(())
}

/// Whether users other than the owner (and root) can add, remove or rename entries in
/// the directory `meta` describes: its group or others may write it.
pub fn writable_by_others(meta: &std::fs::Metadata) -> bool {
    meta.mode() & 0o022 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_directories_have_their_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        // SAFETY: umask only changes this process's mask; restored below.
        let old = unsafe { libc::umask(0) };
        let made = create_dirs(&deep, 0o750, None);
        unsafe { libc::umask(old) };
        made.unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(dir.path().join(p)).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o750, "{p}");
        }
        // Existing directories are left alone.
        std::fs::set_permissions(dir.path().join("a"), PermissionsExt::from_mode(0o711)).unwrap();
        create_dirs(&deep.join("d"), 0o755, None).unwrap();
        let a = std::fs::metadata(dir.path().join("a")).unwrap();
        assert_eq!(a.mode() & 0o7777, 0o711);
        assert!(!writable_by_others(&a));
    }

    #[test]
    fn a_symlink_at_a_name_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        let d = Dir::open(dir.path()).unwrap();
        let e = d
            .open_file(OsStr::new("link"), OFlag::O_WRONLY | OFlag::O_CREAT, 0o600)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        assert!(d.read(OsStr::new("link")).is_err());
        d.remove(OsStr::new("link")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
