//! Outputs: the files applications read the access token from (SPEC §6).
//!
//! Each is replaced atomically and durably with its exact mode (see [`crate::atomic`]).
//! The refresh token never goes here.

use std::path::PathBuf;
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{OutputConfig, OutputFormat};
use crate::state::rfc3339;

/// The access token as published.
pub struct Published<'a> {
    pub access_token: &'a SecretString,
    pub token_type: &'a str,
    pub expires_at: SystemTime,
    pub scope: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(
        "output {path}: {path} is a bind-mounted single file (rename gives EBUSY); mount its directory instead"
    )]
    BindMounted { path: PathBuf },
    #[error("output {path}: the access token holds characters the {format:?} format cannot carry")]
    Unsafe { path: PathBuf, format: OutputFormat },
}

/// The bytes of one output file.
pub fn render(format: OutputFormat, token: &Published) -> Option<String> {
    let at = token.access_token.expose_secret();
    // Tokens are checked when they arrive (visible ASCII, no quotes); this guards the
    // formats again so that no path can write a line break into an env or header file.
    if at.is_empty()
        || !at
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return None;
    }
    let expires = rfc3339::format(token.expires_at);
    Some(match format {
        OutputFormat::Raw => at.to_owned(),
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "access_token": at,
                "token_type": token.token_type,
                "expires_at": expires,
                "scope": token.scope,
            });
            format!("{doc}\n")
        }
        OutputFormat::Env => format!("ACCESS_TOKEN={at}\nACCESS_TOKEN_EXPIRES_AT={expires}\n"),
        OutputFormat::Header => format!("Authorization: Bearer {at}\n"),
    })
}

/// Writes every output; stops at the first failure.
pub fn publish(outputs: &[OutputConfig], token: &Published) -> Result<(), OutputError> {
    for out in outputs {
        let body = render(out.format, token).ok_or(OutputError::Unsafe {
            path: out.path.clone(),
            format: out.format,
        })?;
        if let Some(dir) = out.path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|err| OutputError::Io {
                path: out.path.clone(),
                err,
            })?;
        }
        crate::atomic::write(&out.path, body.as_bytes(), out.mode).map_err(|err| {
            if err.raw_os_error() == Some(libc::EBUSY) {
                OutputError::BindMounted {
                    path: out.path.clone(),
                }
            } else {
                OutputError::Io {
                    path: out.path.clone(),
                    err,
                }
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(at: &str) -> (SecretString, SystemTime) {
        (
            SecretString::from(at.to_owned()),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        )
    }

    #[test]
    fn formats() {
        let (at, exp) = token("blnk_at_x");
        let p = Published {
            access_token: &at,
            token_type: "Bearer",
            expires_at: exp,
            scope: Some("a b"),
        };
        assert_eq!(render(OutputFormat::Raw, &p).unwrap(), "blnk_at_x");
        assert_eq!(
            render(OutputFormat::Header, &p).unwrap(),
            "Authorization: Bearer blnk_at_x\n"
        );
        assert_eq!(
            render(OutputFormat::Env, &p).unwrap(),
            "ACCESS_TOKEN=blnk_at_x\nACCESS_TOKEN_EXPIRES_AT=2027-01-15T08:00:00.000Z\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(OutputFormat::Json, &p).unwrap()).unwrap();
        assert_eq!(json["access_token"], "blnk_at_x");
        assert_eq!(json["expires_at"], "2027-01-15T08:00:00.000Z");
        assert_eq!(json["scope"], "a b");
    }

    #[test]
    fn unsafe_tokens_are_refused() {
        for bad in ["a\nb", "a b", "", "a\"b"] {
            let (at, exp) = token(bad);
            let p = Published {
                access_token: &at,
                token_type: "Bearer",
                expires_at: exp,
                scope: None,
            };
            assert!(render(OutputFormat::Env, &p).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn publish_sets_exact_mode_under_any_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (at, exp) = token("t");
        let p = Published {
            access_token: &at,
            token_type: "Bearer",
            expires_at: exp,
            scope: None,
        };
        let outs = vec![
            OutputConfig {
                path: dir.path().join("a/raw"),
                format: OutputFormat::Raw,
                mode: 0o644,
            },
            OutputConfig {
                path: dir.path().join("j"),
                format: OutputFormat::Json,
                mode: 0o600,
            },
        ];
        publish(&outs, &p).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a/raw")).unwrap(),
            "t"
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("a/raw"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("j"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
}
