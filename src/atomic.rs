//! Durable atomic file replacement, shared by the state store and the outputs.
//!
//! `atomic-write-file` creates the new version as an unnamed `O_TMPFILE` in the target's
//! directory (a named, exclusively created temporary where the file system lacks it),
//! fsyncs it, links it in, renames it over the target and fsyncs the directory. We set
//! the exact owner, group and mode on the still-invisible file, so the target never
//! exists with other permissions, whatever the umask.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt};
use std::path::Path;

use atomic_write_file::AtomicWriteFile;
use atomic_write_file::unix::OpenOptionsExt as _;

/// The permissions a file must have from the moment it is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Perms {
    /// Just a mode; owner and group are the process's own.
    pub const fn mode(mode: u32) -> Self {
        Perms {
            mode,
            uid: None,
            gid: None,
        }
    }

    /// Applies these permissions to an open file. The chown comes first because it may
    /// clear set-id bits; the mode has the last word.
    pub fn apply(&self, file: &File) -> Result<(), Failed> {
        if self.uid.is_some() || self.gid.is_some() {
            std::os::unix::fs::fchown(file, self.uid, self.gid).map_err(Failed::Chown)?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(self.mode))
            .map_err(Failed::Io)
    }
}

/// Which step of a write failed.
#[derive(Debug)]
pub enum Failed {
    /// Giving the file its owner or group (usually EPERM: no CAP_CHOWN).
    Chown(std::io::Error),
    Io(std::io::Error),
}

impl Failed {
    pub fn into_io(self) -> std::io::Error {
        match self {
            Failed::Chown(e) | Failed::Io(e) => e,
        }
    }
}

/// Replaces `path` with `contents`, with exactly `perms`, atomically and durably.
pub fn write(path: &Path, contents: &[u8], perms: &Perms) -> Result<(), Failed> {
    let mut file = AtomicWriteFile::options()
        .mode(0o600)
        .preserve_mode(false)
        .preserve_owner(false)
        .open(path)
        .map_err(Failed::Io)?;
    perms.apply(file.as_file())?;
    file.write_all(contents).map_err(Failed::Io)?;
    file.commit().map_err(Failed::Io)
}
