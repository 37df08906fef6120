//! The new version of a file, complete and durable under a temporary name beside its
//! target, waiting to be renamed over it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;

use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use rand::Rng;
use rand::distr::Alphanumeric;

use super::{Dir, Failed, Perms};

/// A temporary file in the target's directory; removed when dropped unless renamed.
pub struct Temp<'d> {
    dir: &'d Dir,
    name: OsString,
    renamed: bool,
}

impl<'d> Temp<'d> {
    /// `contents` with `perms`, fsync'd, under a fresh name `.<name>.XXXXXX` in `dir`.
    pub fn written(
        dir: &'d Dir,
        name: &OsStr,
        contents: &[u8],
        perms: &Perms,
    ) -> Result<Temp<'d>, Failed> {
        match unnamed(dir) {
            Ok(file) => {
                perms.apply(&file)?;
                (&file).write_all(contents).map_err(Failed::Io)?;
                match link(&file, dir, name) {
                    Ok(temp) => {
                        // After the link: btrfs ignores a sync of a file with no name.
                        file.sync_all().map_err(Failed::Io)?;
                        return Ok(temp);
                    }
                    // No /proc to link it through: start again with a named file.
                    Err(err) if err.kind() == io::ErrorKind::NotFound && proc_missing() => {}
                    Err(err) => return Err(Failed::Io(err)),
                }
            }
            // ENOTSUP: this file system has no O_TMPFILE; EISDIR: this kernel has none.
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOTSUP | libc::EISDIR)) => {}
            Err(err) => return Err(Failed::Io(err)),
        }
        let (file, temp) = named(dir, name)?;
        perms.apply(&file)?;
        (&file).write_all(contents).map_err(Failed::Io)?;
        file.sync_all().map_err(Failed::Io)?;
        Ok(temp)
    }

    /// Renames the file over `target`, in the same directory (a symlink there is
    /// replaced, not followed).
    pub fn rename_over(mut self, target: &OsStr) -> io::Result<()> {
        self.dir.rename(&self.name, target)?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = self.dir.remove(&self.name);
        }
    }
}

/// A file in `dir` with no name yet, mode 0600.
fn unnamed(dir: &Dir) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        dir.fd(),
        ".",
        OFlag::O_WRONLY | OFlag::O_TMPFILE | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    Ok(File::from(fd))
}

/// Whether this process has no /proc to link an unnamed file through.
fn proc_missing() -> bool {
    std::fs::metadata("/proc/self/fd").is_err()
}

/// Gives the unnamed `file` a fresh temporary name in `dir`.
fn link<'d>(file: &File, dir: &'d Dir, name: &OsStr) -> io::Result<Temp<'d>> {
    let source = format!("/proc/self/fd/{}", file.as_raw_fd());
    loop {
        let fresh = fresh_name(name);
        match nix::unistd::linkat(
            AT_FDCWD,
            source.as_str(),
            dir.fd(),
            fresh.as_os_str(),
            AtFlags::AT_SYMLINK_FOLLOW,
        ) {
            Ok(()) => {
                return Ok(Temp {
                    dir,
                    name: fresh,
                    renamed: false,
                });
            }
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A file in `dir` under a fresh temporary name, created exclusively with mode 0600.
fn named<'d>(dir: &'d Dir, name: &OsStr) -> Result<(File, Temp<'d>), Failed> {
    loop {
        let fresh = fresh_name(name);
        match dir.open_file(
            &fresh,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            0o600,
        ) {
            Ok(file) => {
                let temp = Temp {
                    dir,
                    name: fresh,
                    renamed: false,
                };
                return Ok((file, temp));
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(Failed::Io(err)),
        }
    }
}

/// `.<name>.XXXXXX`: hidden, and named after its target for whoever finds it after a
/// crash.
fn fresh_name(name: &OsStr) -> OsString {
    let mut fresh = OsString::from(".");
    fresh.push(name);
    fresh.push(".");
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(6)
        .map(char::from)
        .collect();
    fresh.push(suffix);
    fresh
}
