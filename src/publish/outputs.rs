//! Writing every output of a credential: each standalone file replaced atomically and
//! durably with its exact owner, group and mode (see [`crate::atomic`]), the ones named
//! inside `publish_dir` together as one version (see [`super::dir`]). Every file is
//! rendered before any is written, so a token one format cannot carry is written
//! nowhere. The refresh token never goes here.

use crate::atomic;
use crate::config::CredentialConfig;
use crate::publish::dir;
use crate::publish::file::{OutputError, perms};
use crate::publish::format::{Published, render};

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
            // Exact modes whatever the umask: readable by all (0755), or by the output's
            // group alone (0750) when it names one.
            let group = out.group.as_ref().map(|g| g.id);
            let mode = if group.is_some() { 0o750 } else { 0o755 };
            atomic::create_dirs(dir, mode, group).map_err(|err| OutputError::Io {
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
        dir::publish(dir, &in_dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use std::path::Path;
    use std::time::SystemTime;

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
            .as_ref()
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
            let version = std::fs::read_link(pd.join(dir::DATA)).unwrap();
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
}
