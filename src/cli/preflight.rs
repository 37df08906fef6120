//! What a valid configuration can still get wrong on this host, found before anything
//! runs: files that cannot be read, a CA file that holds no certificate, a state
//! directory that cannot be written; and what deserves a warning: short secrets,
//! paths that depend on the working directory. `check` reports all of it (errors exit
//! 78); `run` and `once` log the warnings.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use secrecy::ExposeSecret;

use crate::config::coordination::{EtcdConfig, KubernetesConfig, StoreConfig};
use crate::config::{Config, CredentialConfig, MIN_SECRET_LEN, SecretReadError, SecretSource};
use crate::oauth::assertion::SigningKey;
use crate::oauth::{Clients, EndpointError};

/// What the preflight found.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Looks at every credential's files and settings as this process would use them.
pub fn preflight(config: &Config) -> Findings {
    look(config, true)
}

/// What `run` and `once` log: the warnings alone. The rest they find where it bites
/// (the daemon builds its own HTTP clients, and says if it cannot), so start-up does
/// not load trust roots twice.
pub fn warnings(config: &Config) -> Vec<String> {
    look(config, false).warnings
}

fn look(config: &Config, full: bool) -> Findings {
    let mut f = Findings::default();
    let clients = Clients::default();
    for c in config.credentials.values() {
        let key = |k: &str| format!("credentials.{}.{k}", c.name);
        match c.client_secret.as_ref().map(SecretSource::read) {
            Some(Ok(secret)) => short(&mut f, &key("client_secret"), secret.expose_secret()),
            Some(Err(e)) => f.errors.push(format!("{}: {e}", key("client_secret"))),
            None => {}
        }
        // The key is tried on a sample (by `check` only: a signature costs up to 2 ms,
        // and `run` meets a bad key at the first request anyway); the error names the
        // file and what is wrong, never what it holds.
        if full && let Some(Err(e)) = c.assertion.as_deref().map(SigningKey::load) {
            f.errors.push(format!("credentials.{}.{e}", c.name));
        }
        match c.read_bootstrap() {
            // Without a chain there is nothing to start.
            _ if !c.has_chain() => {}
            Ok(token) => short(&mut f, &key("refresh_token"), token.expose_secret()),
            // Optional: a login may start the chain, or the state holds it already.
            Err(SecretReadError::NotConfigured { .. }) => {}
            Err(e) => f.warnings.push(format!("{}: {e}", key("refresh_token"))),
        }
        if full
            && (c.http.ca_file.is_some() || c.http.client_cert_file.is_some())
            && let Err(e) = clients.get(&c.http, true)
        {
            f.errors.push(match e {
                EndpointError::File {
                    key: k,
                    path,
                    message,
                } => format!("{}: {path}: {message}", key(&format!("http.{k}"))),
                other => format!("{}: {other}", key("http")),
            });
        }
        if let Some(dir) = c.state_file.parent()
            && full
            && let Err(e) = writable_dir(dir).and_then(|()| own_dir(dir))
        {
            f.errors.push(format!("{}: {e}", key("state_file")));
        }
        relative_paths(&mut f, c);
        shared_output_dirs(&mut f, c);
        state_file_mode(&mut f, c);
    }
    if full && let Some(coordination) = &config.coordination {
        match &coordination.store {
            StoreConfig::Etcd(etcd) => etcd_files(&mut f, etcd),
            StoreConfig::Kubernetes(k) => kubernetes_files(&mut f, k),
        }
    }
    f
}

/// The files etcd's connection reads when it first connects: readable now, or said so.
fn etcd_files(f: &mut Findings, etcd: &EtcdConfig) {
    let files = [
        ("ca_file", etcd.ca_file.as_deref()),
        ("cert_file", etcd.cert_file.as_deref()),
        ("key_file", etcd.key_file.as_deref()),
    ];
    for (key, path) in files {
        if let Some(path) = path
            && let Err(e) = std::fs::read(path)
        {
            f.errors
                .push(format!("coordination.etcd.{key}: {}: {e}", path.display()));
        }
    }
    if let Some(Err(e)) = etcd.password.as_ref().map(SecretSource::read) {
        f.errors
            .push(format!("coordination.etcd.password_file: {e}"));
    }
}

/// Where the Kubernetes API is and the files it needs, as the daemon would find them
/// in this pod (or as the table says outside one).
fn kubernetes_files(f: &mut Findings, k: &KubernetesConfig) {
    let target = match k.in_this_pod() {
        Ok(t) => t,
        Err(e) => return f.errors.push(e),
    };
    let files = [
        ("token_file", target.token_file),
        ("ca_file", target.ca_file),
    ];
    for (key, path) in files {
        if let Some(path) = path
            && let Err(e) = std::fs::read(&path)
        {
            f.errors.push(format!(
                "coordination.kubernetes.{key}: {}: {e}",
                path.display()
            ));
        }
    }
}

/// A secret shorter than [`MIN_SECRET_LEN`] is easy to guess, and not scrubbed from a
/// server's error text (that would mangle every message).
fn short(f: &mut Findings, key: &str, value: &str) {
    if value.len() < MIN_SECRET_LEN {
        f.warnings.push(format!(
            "{key}: shorter than {MIN_SECRET_LEN} characters: easy to guess, and not scrubbed from a server's error text"
        ));
    }
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
    use std::os::unix::fs::MetadataExt;
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
    for (key, dir) in dirs {
        if let Ok(meta) = std::fs::metadata(dir)
            && crate::atomic::dir::writable_by_others(&meta)
        {
            f.warnings.push(format!(
                "credentials.{}.{key}: {} is writable by other users (mode {:04o}): any of them could replace what tokend writes there with a token of their own; use a directory only tokend can write",
                c.name,
                dir.display(),
                std::os::unix::fs::MetadataExt::mode(&meta) & 0o7777
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
    // SAFETY: a valid NUL-terminated path; access(2) only reads it.
    let rc = unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) };
    if rc != 0 {
        return Err(format!(
            "{} is not writable by this user: {}",
            existing.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
