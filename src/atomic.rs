//! Durable atomic file replacement, shared by the state store and the outputs.
//!
//! `atomic-write-file` creates the new version as an unnamed `O_TMPFILE` in the target's
//! directory (a named, exclusively created temporary where the file system lacks it),
//! fsyncs it, links it in, renames it over the target and fsyncs the directory. We set
//! the exact mode on the still-invisible file, so the target never exists with other
//! permissions, whatever the umask.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt};
use std::path::Path;

use atomic_write_file::AtomicWriteFile;
use atomic_write_file::unix::OpenOptionsExt as _;

/// Replaces `path` with `contents`, mode exactly `mode`, atomically and durably.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = AtomicWriteFile::options()
        .mode(0o600)
        .preserve_mode(false)
        .preserve_owner(false)
        .open(path)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.commit()
}
