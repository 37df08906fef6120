//! The paths a credential writes, as this host has them: the state directory tokend's
//! own and writable, every output's directory one it can make or write (else nothing
//! would ever be published, whatever the server says), none writable by others, and no
//! path that depends on the working directory.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::cli::preflight::Findings;
use crate::config::{CredentialConfig, SecretSource};

/// What stops a credential before anything is sent: a state directory that is not
/// tokend's own, or a state directory or output that can never be written. `seen`
/// holds the directories looked at already (thousands of credentials share a few).
pub fn unwritable(f: &mut Findings, c: &CredentialConfig, seen: &mut BTreeSet<std::path::PathBuf>) {
    let key = |k: &str| format!("credentials.{}.{k}", c.name);
    if let Some(dir) = c.state_file.parent()
        && seen.insert(dir.to_owned())
        && let Err(e) = own_dir(dir).and_then(|()| writable_dir(dir))
    {
        f.errors.push(format!("{}: {e}", key("state_file")));
    }
    for (k, dir) in written_dirs(c) {
        if seen.insert(dir.to_owned())
            && let Err(e) = writable_dir(dir)
        {
            f.errors.push(format!(
                "{}: {e}: nothing could ever be published there",
                key(&k)
            ));
        }
    }
}

/// What deserves a warning: relative paths, outputs where others could put a token of
/// their own, a state file readable by others.
pub fn warnings(f: &mut Findings, c: &CredentialConfig) {
    relative_paths(f, c);
    shared_output_dirs(f, c);
    state_file_mode(f, c);
}

/// The directories a credential's outputs are written into (the key naming each):
/// each standalone output's, and publish_dir itself.
fn written_dirs(c: &CredentialConfig) -> Vec<(String, &Path)> {
    let mut dirs: Vec<(String, &Path)> = c
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| !c.in_publish_dir(o))
        .filter_map(|(i, o)| Some((format!("outputs[{i}].path"), o.path.parent()?)))
        .collect();
    if let Some(p) = &c.publish_dir {
        dirs.push(("publish_dir".into(), p));
    }
    dirs
}

fn relative_paths(f: &mut Findings, c: &CredentialConfig) {
    let mut paths = vec![("state_file", c.state_file.as_path())];
    if let Some(SecretSource::File(p)) = &c.client_secret {
        paths.push(("client_secret_file", p));
    }
    if let Some(a) = &c.assertion {
        paths.push(("client_assertion_key_file", &a.key_file));
    }
    if let Some(SecretSource::File(p)) = &c.refresh_token {
        paths.push(("refresh_token_file", p));
    }
    if let Some(p) = &c.publish_dir {
        paths.push(("publish_dir", p));
    }
    for out in c.outputs.iter().filter(|o| !c.in_publish_dir(o)) {
        paths.push(("outputs", &out.path));
    }
    for (what, path) in paths {
        if path.is_relative() {
            f.warnings.push(format!(
                "credentials.{}.{what}: {} is relative: it depends on the directory tokend is started in",
                c.name,
                path.display()
            ));
        }
    }
}

/// The state directory, if it exists, is tokend's own (see [`crate::store::dir`]).
fn own_dir(dir: &Path) -> Result<(), String> {
    let Ok(opened) = crate::atomic::Dir::open(dir) else {
        return Ok(());
    };
    let meta = opened
        .metadata()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::store::dir::check(&meta, nix::unistd::geteuid().as_raw())
        .map_err(|why| format!("the state directory {} {why}", dir.display()))
}

/// A state file someone made readable by others: tokend makes it 0600 again at its
/// next save, but the token in it has been exposed meanwhile.
fn state_file_mode(f: &mut Findings, c: &CredentialConfig) {
    if let Ok(meta) = std::fs::symlink_metadata(&c.state_file)
        && meta.is_file()
        && meta.mode() & 0o7777 != 0o600
    {
        f.warnings.push(format!(
            "credentials.{}.state_file: {} has mode {:04o}, not 0600: tokend makes it 0600 again at its next save; whoever could read it meanwhile may hold the refresh token",
            c.name,
            c.state_file.display(),
            meta.mode() & 0o7777
        ));
    }
}

/// An output in a directory that other users may write can be replaced by one of them
/// with a token of their choosing, which the app then reads.
fn shared_output_dirs(f: &mut Findings, c: &CredentialConfig) {
    for (key, dir) in written_dirs(c) {
        if let Ok(meta) = std::fs::metadata(dir)
            && crate::atomic::dir::writable_by_others(&meta)
        {
            f.warnings.push(format!(
                "credentials.{}.{key}: {} is writable by other users (mode {:04o}): any of them could replace what tokend writes there with a token of their own; use a directory only tokend can write",
                c.name,
                dir.display(),
                meta.mode() & 0o7777
            ));
        }
    }
}

/// `dir` is a directory this process can create files in, or can be created (its
/// nearest existing ancestor is such a directory).
fn writable_dir(dir: &Path) -> Result<(), String> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    let c_path = CString::new(existing.as_os_str().as_bytes())
        .map_err(|_| format!("{} holds a NUL byte", existing.display()))?;
    // SAFETY: a valid NUL-terminated path; faccessat(2) only reads it. AT_EACCESS: as
    // the effective user, who writes there.
    let rc = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if rc != 0 {
        return Err(format!(
            "{} is not writable by this user: {}",
            existing.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
