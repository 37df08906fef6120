//! `publish_dir`: several outputs published as one consistent version, the way kubelet
//! writes Secret and ConfigMap volumes.
//!
//! ```text
//! publish_dir/
//!   ..2026_11_26_06_10_03.1a2b3c4d/access_token   one hidden directory per version
//!   ..2026_11_26_06_10_03.1a2b3c4d/token.json
//!   ..data -> ..2026_11_26_06_10_03.1a2b3c4d      swapped with one rename(2)
//!   access_token -> ..data/access_token           the names applications open
//!   token.json -> ..data/token.json
//! ```
//!
//! A new version's files are written, given their permissions and fsync'd inside a fresh
//! directory that no name points at yet; then `..data` is replaced by a rename, which is
//! atomic, so every path through it sees either the whole old version or the whole new
//! one. The version before is kept until the next swap, so that a reader who resolved
//! `..data` just before a swap still finds its files; older ones are removed. A reader
//! that needs two files from one version resolves `..data` once and reads both through
//! what it points at.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::atomic::{Dir, sync_dir};
use crate::config::OutputConfig;
use crate::publish::file::{OutputError, perms};

/// Pinned log target: operators filter on it, whatever the module is called.
const LOG: &str = "tokend::publish_dir";

/// The link that names the current version.
pub const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";
const LINK_TMP: &str = "..link_tmp";

/// Publishes `files` (bare names inside `dir`, with their contents) as one version.
pub fn publish(dir: &Path, files: &[(&OutputConfig, String)]) -> Result<(), OutputError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |err| OutputError::Io { path, err }
    };
    if !dir.exists() {
        crate::atomic::create_dirs(dir, 0o755, None).map_err(io(dir))?;
    }
    let previous = fs::read_link(dir.join(DATA)).ok();
    let version = new_version_dir(dir).map_err(io(dir))?;
    let version_name = version.file_name().unwrap_or_default().to_owned();
    let result = (|| {
        for (out, body) in files {
            let path = version.join(&out.path);
            write_new(&path, body.as_bytes(), out)?;
        }
        Dir::open(&version)
            .and_then(|d| sync_dir(&d))
            .map_err(io(&version))?;
        // The swap: after this rename every name resolves into the new version.
        let data_tmp = dir.join(DATA_TMP);
        remove_if_present(&data_tmp).map_err(io(&data_tmp))?;
        std::os::unix::fs::symlink(&version_name, &data_tmp).map_err(io(&data_tmp))?;
        fs::rename(&data_tmp, dir.join(DATA)).map_err(io(&dir.join(DATA)))?;
        for (out, _) in files {
            link_name(dir, &out.path)?;
        }
        Dir::open(dir).and_then(|d| sync_dir(&d)).map_err(io(dir))
    })();
    if result.is_err() {
        // Nothing points at the new version unless the swap happened; leave it then.
        if fs::read_link(dir.join(DATA)).ok().as_deref() != Some(Path::new(&version_name)) {
            let _ = fs::remove_dir_all(&version);
        }
        return result;
    }
    let keep = [
        Some(version_name.as_os_str()),
        previous.as_deref().map(Path::as_os_str),
    ];
    remove_stale(dir, &keep, files);
    Ok(())
}

/// A fresh, empty `..<UTC time>.<random>` directory, mode 0755 whatever the umask.
fn new_version_dir(dir: &Path) -> std::io::Result<PathBuf> {
    let stamp = crate::rfc3339::format(std::time::SystemTime::now());
    // 2026-11-26T06:10:03.123Z -> 2026_11_26_06_10_03
    let stamp: String = stamp
        .chars()
        .take(19)
        .map(|c| if c.is_ascii_digit() { c } else { '_' })
        .collect();
    loop {
        let path = dir.join(format!("..{stamp}.{:08x}", rand::random::<u32>()));
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Creates `path` (in a directory no reader can reach yet) with its exact permissions.
fn write_new(path: &Path, body: &[u8], out: &OutputConfig) -> Result<(), OutputError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| OutputError::Io {
            path: path.to_owned(),
            err,
        })?;
    perms(out)
        .apply(&file)
        .map_err(|failed| OutputError::from_write(out, path, failed))?;
    file.write_all(body)
        .and_then(|()| file.sync_all())
        .map_err(|err| OutputError::Io {
            path: path.to_owned(),
            err,
        })
}

/// Makes `dir/name` a link to `..data/name`, replacing whatever was there atomically.
fn link_name(dir: &Path, name: &Path) -> Result<(), OutputError> {
    let visible = dir.join(name);
    let target = Path::new(DATA).join(name);
    if fs::read_link(&visible).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    let tmp = dir.join(LINK_TMP);
    let result = remove_if_present(&tmp)
        .and_then(|()| std::os::unix::fs::symlink(&target, &tmp))
        .and_then(|()| fs::rename(&tmp, &visible));
    result.map_err(|err| {
        if err.raw_os_error() == Some(libc::EBUSY) {
            OutputError::BindMounted { path: visible }
        } else {
            OutputError::Io { path: visible, err }
        }
    })
}

/// Removes versions other than `keep`, and links of names no longer published. A failure
/// here leaves only litter, never a wrong token, so it is a warning.
fn remove_stale(dir: &Path, keep: &[Option<&OsStr>], files: &[(&OutputConfig, String)]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        let stale = if kind.is_dir() {
            name.as_encoded_bytes().starts_with(b"..") && !keep.contains(&Some(name.as_os_str()))
        } else if kind.is_symlink() {
            // A link into ..data for a file this version does not have.
            fs::read_link(&path).is_ok_and(|t| t.starts_with(DATA))
                && !files.iter().any(|(o, _)| o.path.as_os_str() == name)
        } else {
            false
        };
        if stale {
            let removed = if kind.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(e) = removed {
                warn!(target: LOG, path = %path.display(), error = %e, "cannot remove an old published version");
            }
        }
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
