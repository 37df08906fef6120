//! Secrets given inline or in a file that is read afresh at each use.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::config::error::{ConfigError, Sources};

/// Secrets shorter than this are easy to guess, and too short to be scrubbed from a
/// server's error text without mangling it: `check` and `run` warn about them.
pub const MIN_SECRET_LEN: usize = 8;

/// A secret given inline or read from a file each time it is needed.
#[derive(Debug, Clone)]
pub enum SecretSource {
    Inline(SecretString),
    File(PathBuf),
}

impl PartialEq for SecretSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SecretSource::Inline(a), SecretSource::Inline(b)) => {
                a.expose_secret() == b.expose_secret()
            }
            (SecretSource::File(a), SecretSource::File(b)) => a == b,
            _ => false,
        }
    }
}

/// Errors reading a secret from its source.
#[derive(Debug, thiserror::Error)]
pub enum SecretReadError {
    #[error("cannot read {path}: {err}{}", read_hint(path, err))]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path} is empty")]
    Empty { path: PathBuf },
    #[error("{path} holds characters not allowed in a token or secret")]
    Invalid { path: PathBuf },
    #[error(
        "neither refresh_token nor refresh_token_file is set; get a first token with `tokend login {name}`"
    )]
    NotConfigured { name: String },
}

/// What to do about a file that cannot be read, for the error.
fn read_hint(path: &Path, err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => {
            let uid = nix::unistd::geteuid();
            let user = nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |u| u.name);
            format!(
                "; tokend runs as user {user} (uid {uid}): let it read the file, for example `chown {user} {p}` with mode 0400, or a group of {user}'s with 0440",
                p = path.display()
            )
        }
        std::io::ErrorKind::NotFound => "; write the secret there, or correct the path".into(),
        _ => String::new(),
    }
}

impl SecretSource {
    /// The configuration key of this secret given as `key` (`client_secret`): the key
    /// itself inline, `key_file` from a file.
    pub fn key_of(&self, key: &str) -> String {
        match self {
            SecretSource::Inline(_) => key.to_owned(),
            SecretSource::File(_) => format!("{key}_file"),
        }
    }

    /// The secret's current value; a file is read afresh and trimmed of surrounding whitespace.
    pub fn read(&self) -> Result<SecretString, SecretReadError> {
        match self {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::File(path) => {
                let raw = std::fs::read(path).map_err(|err| SecretReadError::Io {
                    path: path.clone(),
                    err,
                })?;
                let text = String::from_utf8(raw)
                    .map_err(|_| SecretReadError::Invalid { path: path.clone() })?;
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    return Err(SecretReadError::Empty { path: path.clone() });
                }
                if !trimmed.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    return Err(SecretReadError::Invalid { path: path.clone() });
                }
                Ok(SecretString::from(trimmed.to_owned()))
            }
        }
    }

    /// The file behind this secret, if any (watched while a credential is blocked).
    pub fn path(&self) -> Option<&Path> {
        match self {
            SecretSource::File(p) => Some(p),
            SecretSource::Inline(_) => None,
        }
    }
}

/// Like [`exactly_one`], but both absent is fine.
pub(super) fn at_most_one(
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    key: &str,
    src: &Sources,
) -> Result<Option<SecretSource>, ConfigError> {
    if inline.is_none() && file.is_none() {
        return Ok(None);
    }
    exactly_one(inline, file, key, src).map(Some)
}

pub(super) fn exactly_one(
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    key: &str,
    src: &Sources,
) -> Result<SecretSource, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(src.error(
            key,
            format!("set exactly one of {key} and {key}_file, not both"),
        )),
        (None, None) => Err(src.error(key, format!("one of {key} or {key}_file is required"))),
        (Some(s), None) if s.expose_secret().trim().is_empty() => {
            Err(src.error(key, "must not be empty"))
        }
        (Some(s), None) => Ok(SecretSource::Inline(s)),
        (None, Some(p)) => Ok(SecretSource::File(p)),
    }
}
