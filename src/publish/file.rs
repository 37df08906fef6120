//! One output file's permissions, and how a failed write of it is named for the operator.

use std::path::{Path, PathBuf};

use crate::atomic::{self, Perms};
use crate::config::{Account, OutputConfig, OutputFormat};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(outputs: &str) -> crate::config::CredentialConfig {
        let text = format!(
            r#"
            state_dir = "/tmp/x/state"
            [credentials.c]
            client_id = "id"
            client_secret = "s"
            refresh_token = "r"
            {outputs}
            "#
        );
        crate::config::load_from_str(&text, "t.toml", [])
            .unwrap()
            .credentials["c"]
            .as_ref()
            .clone()
    }

    #[test]
    fn write_errors_say_what_to_do() {
        let cred = credential(
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
