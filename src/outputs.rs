//! Outputs: the files applications read the access token from (SPEC §6).
//!
//! A standalone output is replaced atomically and durably with its exact owner, group
//! and mode (see [`crate::atomic`]); the outputs named inside `publish_dir` are written
//! together as one version (see [`crate::publish_dir`]). Every file is rendered before
//! any is written, so a token one format cannot carry is written nowhere. The refresh
//! token never goes here.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use crate::atomic::{self, Perms};
use crate::config::{Account, CredentialConfig, OutputConfig, OutputFormat};
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
    #[error(
        "output {path}: cannot give it owner {owner} and group {group}: {err}; tokend needs CAP_CHOWN for that, or must run as that owner and be a member of that group"
    )]
    Chown {
        path: PathBuf,
        owner: String,
        group: String,
        err: std::io::Error,
    },
}

impl OutputError {
    /// Names what went wrong writing `out` (at `path`).
    pub fn from_write(out: &OutputConfig, path: &Path, failed: atomic::Failed) -> Self {
        let path = path.to_owned();
        let name =
            |a: &Option<Account>| a.as_ref().map_or("(unchanged)".into(), |a| a.given.clone());
        match failed {
            atomic::Failed::Chown(err) => OutputError::Chown {
                path,
                owner: name(&out.owner),
                group: name(&out.group),
                err,
            },
            atomic::Failed::Io(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                OutputError::BindMounted { path }
            }
            atomic::Failed::Io(err) => OutputError::Io { path, err },
        }
    }
}

/// The permissions an output is written with.
pub fn perms(out: &OutputConfig) -> Perms {
    Perms {
        mode: out.mode,
        uid: out.owner.as_ref().map(|a| a.id),
        gid: out.group.as_ref().map(|a| a.id),
    }
}

/// RFC 6750's `b64token`: what a Bearer header carries, and what a shell can `source`
/// unquoted.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The bytes of one output file, or `None` when the token cannot be carried safely.
pub fn render(format: OutputFormat, token: &Published) -> Option<String> {
    let at = token.access_token.expose_secret();
    // Tokens are checked when they arrive (visible ASCII, no quotes); this guards each
    // format again, so that no path writes a line break into a file, or a `$` or `;`
    // into one that a shell sources.
    let visible = !at.is_empty()
        && at
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    let safe = match format {
        OutputFormat::Raw | OutputFormat::Json => visible,
        OutputFormat::Env | OutputFormat::Header => is_b64token(at),
    };
    if !safe {
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

/// Writes every output of a credential; stops at the first failure.
pub fn publish(cred: &CredentialConfig, token: &Published) -> Result<(), OutputError> {
    let mut alone = Vec::new();
    let mut in_dir = Vec::new();
    for out in &cred.outputs {
        let body = render(out.format, token).ok_or(OutputError::Unsafe {
            path: out.path.clone(),
            format: out.format,
        })?;
        if cred.in_publish_dir(out) {
            in_dir.push((out, body));
        } else {
            alone.push((out, body));
        }
    }
    for (out, body) in alone {
        if let Some(dir) = out.path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|err| OutputError::Io {
                path: out.path.clone(),
                err,
            })?;
        }
        atomic::write(&out.path, body.as_bytes(), &perms(out))
            .map_err(|failed| OutputError::from_write(out, &out.path, failed))?;
    }
    if let Some(dir) = &cred.publish_dir
        && !in_dir.is_empty()
    {
        crate::publish_dir::publish(dir, &in_dir)?;
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
        let (_, exp) = token("x");
        let check = |at: &str, format: OutputFormat| {
            let at = SecretString::from(at.to_owned());
            let p = Published {
                access_token: &at,
                token_type: "Bearer",
                expires_at: exp,
                scope: None,
            };
            render(format, &p).is_some()
        };
        for bad in ["a\nb", "a b", "", "a\"b", "a\rb", "a\u{7f}"] {
            for f in [
                OutputFormat::Raw,
                OutputFormat::Json,
                OutputFormat::Env,
                OutputFormat::Header,
            ] {
                assert!(!check(bad, f), "{bad:?} {f:?}");
            }
        }
        // Shell-active characters: fine in a raw file, never in one that is sourced.
        for shell in ["a$b", "a;b", "a`b`", "a=b", "=", "a'b"] {
            assert!(check(shell, OutputFormat::Raw), "{shell:?}");
            assert!(!check(shell, OutputFormat::Env), "{shell:?}");
            assert!(!check(shell, OutputFormat::Header), "{shell:?}");
        }
        assert!(check("eyJ0.eyJ-_~+/x==", OutputFormat::Env));
    }

    fn credential(dir: &Path, outputs: &str) -> CredentialConfig {
        let text = format!(
            r#"
            state_dir = "{d}/state"
            [credentials.c]
            client_id = "id"
            client_secret = "s"
            refresh_token = "r"
            {outputs}
            "#,
            d = dir.display()
        );
        crate::config::load_from_str(&text, "t.toml", [])
            .unwrap()
            .credentials["c"]
            .clone()
    }

    fn published(at: &SecretString) -> Published<'_> {
        Published {
            access_token: at,
            token_type: "Bearer",
            expires_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            scope: None,
        }
    }

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn publish_sets_exact_mode_owner_and_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // Our own ids: a chown any process may do, so the test runs as any user.
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        let cred = credential(
            dir.path(),
            &format!(
                r#"
                [[credentials.c.outputs]]
                path = "{d}/a/raw"
                mode = "0644"
                owner = {uid}
                group = "{gid}"
                [[credentials.c.outputs]]
                path = "{d}/j"
                format = "json"
                mode = "0600"
                "#,
                d = dir.path().display()
            ),
        );
        let at = SecretString::from("t".to_owned());
        // (The umask cases run against the binary, in tests/outputs.rs.)
        publish(&cred, &published(&at)).unwrap();
        let raw = dir.path().join("a/raw");
        assert_eq!(std::fs::read_to_string(&raw).unwrap(), "t");
        assert_eq!(mode_of(&raw), 0o644);
        let meta = std::fs::metadata(&raw).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid.as_raw(), gid.as_raw()));
        assert_eq!(mode_of(&dir.path().join("j")), 0o600);
    }

    #[test]
    fn publish_dir_swaps_one_version_and_removes_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let pd = dir.path().join("pub");
        let cred = credential(
            dir.path(),
            &format!(
                r#"
                publish_dir = "{pd}"
                [[credentials.c.outputs]]
                path = "access_token"
                mode = "0640"
                [[credentials.c.outputs]]
                path = "token.json"
                format = "json"
                [[credentials.c.outputs]]
                path = "{d}/alone"
                "#,
                pd = pd.display(),
                d = dir.path().display()
            ),
        );
        for n in 0..3 {
            let at = SecretString::from(format!("tok{n}"));
            publish(&cred, &published(&at)).unwrap();
            assert_eq!(
                std::fs::read_to_string(pd.join("access_token")).unwrap(),
                format!("tok{n}")
            );
            assert_eq!(
                std::fs::read_to_string(dir.path().join("alone")).unwrap(),
                format!("tok{n}")
            );
            let version = std::fs::read_link(pd.join(crate::publish_dir::DATA)).unwrap();
            let json: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(pd.join(&version).join("token.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(json["access_token"], format!("tok{n}"));
            assert_eq!(mode_of(&pd.join("access_token")), 0o640);
            assert_eq!(
                std::fs::read_link(pd.join("access_token")).unwrap(),
                Path::new("..data/access_token")
            );
        }
        // The current version and the one before; nothing else but the links.
        let mut names: Vec<String> = std::fs::read_dir(&pd)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(
            &names[2..],
            ["..data", "access_token", "token.json"],
            "{names:?}"
        );
        assert!(
            names[0].starts_with("..20") && names[1].starts_with("..20"),
            "{names:?}"
        );
    }

    #[test]
    fn a_token_one_format_cannot_carry_is_written_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let cred = credential(
            dir.path(),
            &format!(
                r#"
                [[credentials.c.outputs]]
                path = "{d}/raw"
                [[credentials.c.outputs]]
                path = "{d}/env"
                format = "env"
                "#,
                d = dir.path().display()
            ),
        );
        let at = SecretString::from("a$(reboot)".to_owned());
        let err = publish(&cred, &published(&at)).unwrap_err();
        assert!(matches!(err, OutputError::Unsafe { .. }), "{err}");
        assert!(!err.to_string().contains("reboot"), "{err}");
        assert!(!dir.path().join("raw").exists());
    }

    #[test]
    fn write_errors_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let cred = credential(
            dir.path(),
            r#"
            [[credentials.c.outputs]]
            path = "/x/out"
            owner = 123
            "#,
        );
        let out = &cred.outputs[0];
        let ebusy = std::io::Error::from_raw_os_error(libc::EBUSY);
        let e = OutputError::from_write(out, &out.path, atomic::Failed::Io(ebusy));
        assert!(matches!(e, OutputError::BindMounted { .. }));
        assert!(e.to_string().contains("mount its directory instead"), "{e}");
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        let e = OutputError::from_write(out, &out.path, atomic::Failed::Chown(eperm));
        assert!(
            e.to_string().contains("owner 123") && e.to_string().contains("CAP_CHOWN"),
            "{e}"
        );
    }
}
