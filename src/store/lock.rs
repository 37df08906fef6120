//! `<state_file>.lock`: one process per state file. The lock is an exclusive `flock`
//! on that file; what the file says ("pid N on HOST") is for people only. Who holds it
//! is asked of the kernel (`/proc/locks`), never read from the file, whose owner could
//! write any pid there: a root `tokend login` signals only a process the kernel names
//! as the holder, and only one running as the lock file's owner or root.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::OFlag;

use crate::atomic::Dir;
use crate::store::error::{Holder, StoreError};

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
        crate::host::hostname()
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
    let pid = lock.metadata().ok().and_then(|meta| {
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let pid = flock_holder(&locks, meta.dev(), meta.ino())?;
        runs_as(pid, meta.uid()).then_some(pid)
    });
    Holder { pid, says }
}

/// The process holding an exclusive lock on the lock file of `state_file`, as the
/// kernel names it (for `login`'s handover and `status`); `None` when nobody visible
/// from here holds it.
pub fn holder_of(lock_file: &Path) -> Option<i32> {
    let dir = Dir::open(lock_file.parent()?).ok()?;
    let file = dir
        .open_file(lock_file.file_name()?, OFlag::O_RDONLY, 0)
        .ok()?;
    let meta = file.metadata().ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = flock_holder(&locks, meta.dev(), meta.ino())?;
    runs_as(pid, meta.uid()).then_some(pid)
}

/// The pid holding an `flock` on the file (`dev`, `ino`) in `/proc/locks`'s text:
/// `1: FLOCK  ADVISORY  WRITE 5129 fe:00:10010931 0 EOF` (waiters' lines start "->").
fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<i32> {
    let file = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, at, ..] if *at == file => pid.parse().ok().filter(|p| *p > 1),
            _ => None,
        }
    })
}

/// Whether process `pid` runs (effectively) as `uid` or as root.
fn runs_as(pid: i32, uid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u32>().ok());
    effective.is_some_and(|e| e == uid || e == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_comes_from_the_kernels_table() {
        let table = "1: FLOCK  ADVISORY  WRITE 5129 fe:00:10010931 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 6000 fe:00:10010931 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 77 fe:00:42 0 EOF\n";
        let dev = libc::makedev(0xfe, 0);
        assert_eq!(flock_holder(table, dev, 10010931), Some(5129));
        assert_eq!(flock_holder(table, dev, 42), None);
        assert_eq!(flock_holder(table, libc::makedev(8, 1), 10010931), None);
    }

    #[test]
    fn a_second_taker_is_told_the_holders_pid_whatever_the_file_says() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dir::open(dir.path()).unwrap();
        let name = OsStr::new("c.json.lock");
        let _held = take(&d, name, &dir.path().join("c.json")).unwrap();
        // The file's owner writes a lie into it.
        std::fs::write(dir.path().join(name), "pid 1 on elsewhere").unwrap();
        let d2 = Dir::open(dir.path()).unwrap();
        match take(&d2, name, &dir.path().join("c.json")) {
            Err(StoreError::Locked { holder, .. }) => {
                assert_eq!(holder.pid, Some(std::process::id() as i32), "{holder:?}");
                assert_eq!(holder.says, "pid 1 on elsewhere");
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        assert_eq!(
            holder_of(&dir.path().join(name)),
            Some(std::process::id() as i32)
        );
    }

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
