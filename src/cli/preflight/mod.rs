//! What a valid configuration can still get wrong on this host, found before anything
//! runs: files that cannot be read, a CA file that holds no certificate, a state
//! directory or an output that can never be written; and what deserves a warning: short
//! secrets, paths that depend on the working directory, directories others may write.
//! `check` reports all of it (errors exit 78); `run` and `once` log the warnings and
//! refuse (78) the paths that could never be written, before anything is sent.
//!
//! - this file: secrets, keys, certificates, the stores' files
//! - [`paths`]: the state directory and the outputs

use std::collections::BTreeSet;
use std::path::Path;

use secrecy::ExposeSecret;

use crate::config::coordination::{EtcdConfig, KubernetesConfig, StoreConfig};
use crate::config::{Config, MIN_SECRET_LEN, SecretReadError, SecretSource};
use crate::oauth::assertion::SigningKey;
use crate::oauth::{Clients, EndpointError};

pub mod paths;

/// What the preflight found.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Which command looks, and so how far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// `check`: everything, keys and certificates tried.
    Check,
    /// `once`: what `run` looks at, and the secrets it cannot wait for.
    Once,
    /// `run`: the warnings, and the paths that could never be written. The rest it
    /// finds where it bites (the daemon builds its own HTTP clients and says if it
    /// cannot; it waits for a secret file to become readable), so that start-up does
    /// not load trust roots twice.
    Run,
}

/// What this host would refuse of `config` (errors stop the command, exit 78), and what
/// deserves a warning. `source` is the configuration file, named in what it finds.
pub fn preflight(config: &Config, source: &Path, pass: Pass) -> Findings {
    look(config, source, pass)
}

fn look(config: &Config, source: &Path, pass: Pass) -> Findings {
    let full = pass == Pass::Check;
    let mut f = Findings::default();
    let clients = Clients::default();
    let mut dirs = BTreeSet::new();
    for c in config.credentials.values() {
        let key = |k: &str| format!("credentials.{}.{k}", c.name);
        match c.client_secret.as_ref().map(|s| (s, s.read())) {
            Some((s, Ok(secret))) => short(
                &mut f,
                &key(&s.key_of("client_secret")),
                secret.expose_secret(),
            ),
            // (The daemon blocks on it, and resumes once the file can be read.)
            Some((s, Err(e))) if pass != Pass::Run => f.errors.push(format!(
                "{} ({}): {e}",
                key(&s.key_of("client_secret")),
                origin(source, &key(&s.key_of("client_secret")))
            )),
            Some(_) => {}
            None => {}
        }
        // The key is tried on a sample (by `check` only: a signature costs up to 2 ms,
        // and `run` meets a bad key at the first request anyway); the error names the
        // file and what is wrong, never what it holds.
        if full && let Some(Err(e)) = c.assertion.as_deref().map(SigningKey::load) {
            f.errors.push(format!("credentials.{}.{e}", c.name));
        }
        let bootstrap_key = c
            .refresh_token
            .as_ref()
            .map_or_else(|| "refresh_token".into(), |s| s.key_of("refresh_token"));
        match c.read_bootstrap() {
            // Without a chain there is nothing to start.
            _ if !c.has_chain() => {}
            Ok(token) => short(&mut f, &key(&bootstrap_key), token.expose_secret()),
            // Optional: a login may start the chain, or the state holds it already.
            Err(SecretReadError::NotConfigured { .. }) => {}
            Err(e) => f.warnings.push(format!(
                "{} ({}): {e}",
                key(&bootstrap_key),
                origin(source, &key(&bootstrap_key))
            )),
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
        paths::unwritable(&mut f, c, &mut dirs);
        paths::warnings(&mut f, c);
    }
    if full && let Some(coordination) = &config.coordination {
        match &coordination.store {
            StoreConfig::Etcd(etcd) => etcd_files(&mut f, etcd),
            StoreConfig::Kubernetes(k) => kubernetes_files(&mut f, k),
        }
    }
    f
}

/// Where `key` was set: the variable that overrides it, or the configuration file.
fn origin(source: &Path, key: &str) -> String {
    let var = crate::config::error::env_var_for(key);
    if std::env::var_os(&var).is_some() {
        format!("set by {var}")
    } else {
        format!("set in {}", source.display())
    }
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
