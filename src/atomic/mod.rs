//! Durable atomic file replacement, shared by the state store and the outputs.
//!
//! The protocol: the new version is created in the target's directory with mode 0600
//! (an unnamed `O_TMPFILE`; an exclusively created named temporary where the file system
//! lacks it), given its exact owner, group and mode while still invisible (so the target
//! never exists with other permissions, whatever the umask), written, linked under a
//! temporary name, fsync'd, renamed over the target, and its directory fsync'd.
//!
//! Every step works relative to an open [`Dir`], never through a path's last component
//! again: a symlink planted at the target or the temporary name is replaced, never
//! followed, and the directory checked once is the one written to.
//!
//! These are `atomic-write-file`'s steps, written out here for the last one: that crate
//! fsyncs the directory once per file, and with thousands of credentials due at once
//! those syncs were most of the disk's work. Here the writers that renamed into one
//! directory share a sync ([`dir_sync`]), which keeps every one of them durable.
//!
//! - [`dir`]: an open directory, and directories created with exact modes
//! - `temp`: the new version under its temporary name
//! - [`dir_sync`]: directory syncs shared by the writers of one directory

pub mod dir;
mod dir_sync;
mod temp;

pub use dir::{Dir, create_dirs};
pub use dir_sync::sync_dir;

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Failed::Io(std::io::Error::from_raw_os_error(libc::EISDIR)))?;
    write_in(&Dir::open(dir).map_err(Failed::Io)?, name, contents, perms)
}

/// Replaces `name` in `dir` with `contents`, with exactly `perms`, atomically and durably.
pub fn write_in(dir: &Dir, name: &OsStr, contents: &[u8], perms: &Perms) -> Result<(), Failed> {
    let temp = temp::Temp::written(dir, name, contents, perms)?;
    temp.rename_over(name).map_err(Failed::Io)?;
    sync_dir(dir).map_err(Failed::Io)
}
