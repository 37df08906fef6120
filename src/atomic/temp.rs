//! The new version of a file, complete and durable under a temporary name beside its
//! target, waiting to be renamed over it.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::distr::Alphanumeric;

use super::{Failed, Perms};

/// A temporary file in the target's directory; removed when dropped unless renamed.
pub struct Temp {
    path: PathBuf,
    renamed: bool,
}

impl Temp {
    /// `contents` with `perms`, fsync'd, under a fresh name `.<name>.XXXXXX` in `dir`.
    pub fn written(
        dir: &Path,
        name: &OsStr,
        contents: &[u8],
        perms: &Perms,
    ) -> Result<Temp, Failed> {
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
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
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

    /// Renames the file over `target`, in the same directory.
    pub fn rename_over(mut self, target: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, target)?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A file in `dir` with no name yet, mode 0600.
fn unnamed(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

/// Gives the unnamed `file` a fresh temporary name in `dir`.
fn link(file: &File, dir: &Path, name: &OsStr) -> io::Result<Temp> {
    let source = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(io::Error::other)?;
    loop {
        let path = dir.join(fresh_name(name));
        let target = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: both paths are NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                source.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc == 0 {
            return Ok(Temp {
                path,
                renamed: false,
            });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::AlreadyExists {
            return Err(err);
        }
    }
}

/// A file in `dir` under a fresh temporary name, created exclusively with mode 0600.
fn named(dir: &Path, name: &OsStr) -> Result<(File, Temp), Failed> {
    loop {
        let path = dir.join(fresh_name(name));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                let temp = Temp {
                    path,
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
fn fresh_name(name: &OsStr) -> std::ffi::OsString {
    let mut fresh = std::ffi::OsString::from(".");
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
