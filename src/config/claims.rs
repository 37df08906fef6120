//! The paths each credential writes, and the rule that keeps them apart: no credential
//! writes where another one writes, and nobody's output lands on tokend's own files (a
//! state file, its lock, a login's handover, or the directory that holds them). Two
//! credentials on one output give one credential's readers the other's token; an output
//! over a state file loses that credential's chain.
//!
//! Paths are compared as written (made absolute and cleaned of `.` and `..`): symlinks
//! are not followed, since the files may not exist yet.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::config::error::{ConfigError, Sources};
use crate::config::model::CredentialConfig;
use crate::store::names::{handover_path, lock_path};

/// What a claimed path is to its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A standalone output file (its index in `outputs`).
    Output(usize),
    /// `publish_dir`: the whole directory.
    PublishDir,
    /// tokend's own files: the state file, its lock, a login's handover.
    Own(&'static str),
    /// The directory holding the state file: its temporary files and locks come and go.
    StateDir,
}

impl Kind {
    /// Whether applications read it (an output or `publish_dir`) rather than tokend.
    fn written_for_apps(self) -> bool {
        matches!(self, Kind::Output(_) | Kind::PublishDir)
    }
}

struct Claim<'a> {
    credential: &'a str,
    kind: Kind,
    path: PathBuf,
}

impl Claim<'_> {
    /// The configuration key the claim comes from, for the error.
    fn key(&self) -> String {
        let key = match self.kind {
            Kind::Output(i) => format!("outputs[{i}].path"),
            Kind::PublishDir => "publish_dir".into(),
            Kind::Own(_) | Kind::StateDir => "state_file".into(),
        };
        format!("credentials.{}.{key}", self.credential)
    }

    /// What it is, for the error: "credential a's publish_dir /run/a".
    fn describe(&self) -> String {
        let (c, p) = (self.credential, self.path.display());
        match self.kind {
            Kind::Output(i) => format!("credentials.{c}.outputs[{i}].path"),
            Kind::PublishDir => format!("credential {c}'s publish_dir {p}"),
            Kind::Own(what) => format!("credential {c}'s {what} {p}"),
            Kind::StateDir => format!("{p}, the directory of credential {c}'s state file"),
        }
    }
}

/// Refuses any path two credentials would both write, and any output or `publish_dir`
/// at or inside tokend's own files.
pub(super) fn check_claims(
    credentials: &BTreeMap<String, Arc<CredentialConfig>>,
    src: &Sources,
) -> Result<(), ConfigError> {
    let mut claims: Vec<Claim> = credentials.values().flat_map(|c| claims_of(c)).collect();
    // Thousands of credentials may share one state directory, which conflicts with no
    // other credential's own files: its first claim stands for all.
    let mut state_dirs = HashSet::new();
    claims.retain(|c| c.kind != Kind::StateDir || state_dirs.insert(c.path.clone()));
    // Sorted component by component, the paths inside a path follow it at once. Walking
    // them with the chain of claims that hold the current one compares each claim with
    // those alone: time grows with the count of claims, not with its square.
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by(|&a, &b| claims[a].path.cmp(&claims[b].path).then(a.cmp(&b)));
    let mut holders: Vec<usize> = Vec::new();
    for i in order {
        while let Some(&h) = holders.last()
            && !claims[i].path.starts_with(&claims[h].path)
        {
            holders.pop();
        }
        // The innermost first: an output at a state file is named for that, not for
        // being inside the state directory.
        for &h in holders.iter().rev() {
            let (earlier, later) = (h.min(i), h.max(i));
            if let Some(e) = conflict(&claims[earlier], &claims[later], src) {
                return Err(e);
            }
        }
        holders.push(i);
    }
    Ok(())
}

fn claims_of(c: &CredentialConfig) -> Vec<Claim<'_>> {
    let claim = |kind, path: &Path| Claim {
        credential: &c.name,
        kind,
        path: clean(path),
    };
    let mut claims: Vec<Claim> = c
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| !c.in_publish_dir(o))
        .map(|(i, o)| claim(Kind::Output(i), &o.path))
        .collect();
    if let Some(dir) = &c.publish_dir {
        claims.push(claim(Kind::PublishDir, dir));
    }
    claims.push(claim(Kind::Own("state file"), &c.state_file));
    claims.push(claim(Kind::Own("lock file"), &lock_path(&c.state_file)));
    claims.push(claim(
        Kind::Own("login handover file"),
        &handover_path(&c.state_file),
    ));
    if let Some(dir) = c.state_file.parent() {
        claims.push(claim(Kind::StateDir, dir));
    }
    claims
}

/// The error, if `a` and `b` cannot both be: one at or inside the other, where at least
/// one is written for applications (tokend's own files share their directory), or two
/// credentials' own files on one path.
fn conflict(a: &Claim, b: &Claim, src: &Sources) -> Option<ConfigError> {
    let same_credential = a.credential == b.credential;
    let for_apps = (a.kind.written_for_apps(), b.kind.written_for_apps());
    let nested = a.path.starts_with(&b.path) || b.path.starts_with(&a.path);
    if !nested {
        return None;
    }
    match for_apps {
        // One credential's outputs and publish_dir were checked with its outputs.
        (true, true) if same_credential => return None,
        (false, false) => {
            let files = !matches!(a.kind, Kind::StateDir) && !matches!(b.kind, Kind::StateDir);
            if same_credential || !files {
                return None;
            }
        }
        _ => {}
    }
    // Blame what applications read (the later of two such), named against the other.
    let (blamed, other) = if b.kind.written_for_apps() || !a.kind.written_for_apps() {
        (b, a)
    } else {
        (a, b)
    };
    let relation = if blamed.path == other.path {
        "is also"
    } else if blamed.path.starts_with(&other.path) {
        "is inside"
    } else {
        "holds"
    };
    let why = match (a.kind.written_for_apps(), b.kind.written_for_apps()) {
        (true, true) => {
            "two credentials writing one place give one credential's readers the other's token, or delete it: give each credential its own output paths and publish_dir"
        }
        (false, false) => "each credential needs its own state file",
        _ => {
            "tokend keeps its state there, and an output there would overwrite it: publish elsewhere"
        }
    };
    Some(src.error(
        &blamed.key(),
        format!(
            "{} {relation} {}: {why}",
            blamed.path.display(),
            other.describe()
        ),
    ))
}

/// `path` made absolute (against the working directory) and cleaned of `.` and `..`,
/// without touching the file system.
fn clean(path: &Path) -> PathBuf {
    let absolute = if path.is_relative() {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_owned())
    } else {
        path.to_owned()
    };
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, load_from_str};

    fn load(credentials: &str) -> Result<Config, ConfigError> {
        let text = format!("state_dir = \"/var/lib/tokend\"\n{credentials}");
        load_from_str(&text, "t.toml", Vec::<(String, String)>::new())
    }

    fn credential(name: &str, extra: &str) -> String {
        format!(
            "[credentials.{name}]\nclient_id = \"id\"\nclient_secret = \"s3cret-s3cret\"\nrefresh_token = \"rt\"\n{extra}\n"
        )
    }

    fn output(name: &str, path: &str) -> String {
        format!("[[credentials.{name}.outputs]]\npath = \"{path}\"\n")
    }

    /// Each case: two credentials' keys, the key blamed, and what the message names.
    #[test]
    fn two_credentials_never_write_one_place() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            // One path for both outputs.
            (
                &output("a", "/out/access_token"),
                &output("b", "/out/./access_token"),
                "credentials.b.outputs[0].path",
                &["/out/access_token is also credentials.a.outputs[0].path"],
            ),
            // One publish_dir for both.
            (
                "publish_dir = \"/run/t\"\n[[credentials.a.outputs]]\npath = \"access_token\"",
                "publish_dir = \"/run/t/\"\n[[credentials.b.outputs]]\npath = \"token.json\"",
                "credentials.b.publish_dir",
                &["/run/t is also credential a's publish_dir /run/t"],
            ),
            // A publish_dir inside another's.
            (
                "publish_dir = \"/run/t\"",
                "publish_dir = \"/run/t/b\"",
                "credentials.b.publish_dir",
                &["/run/t/b is inside credential a's publish_dir /run/t"],
            ),
            // An output inside another's publish_dir.
            (
                "publish_dir = \"/run/t\"\n[[credentials.a.outputs]]\npath = \"access_token\"",
                &output("b", "/run/t/token"),
                "credentials.b.outputs[0].path",
                &["/run/t/token is inside credential a's publish_dir /run/t"],
            ),
            // An output at another credential's state file, its lock, its directory.
            (
                "",
                &output("b", "/var/lib/tokend/a.json"),
                "credentials.b.outputs[0].path",
                &["is also credential a's state file /var/lib/tokend/a.json"],
            ),
            (
                "",
                &output("b", "/var/lib/tokend/a.json.lock"),
                "credentials.b.outputs[0].path",
                &["credential a's lock file"],
            ),
            (
                "state_file = \"/srv/a/state.json\"",
                &output("b", "/srv/a/token"),
                "credentials.b.outputs[0].path",
                &["is inside /srv/a, the directory of credential a's state file"],
            ),
            (
                "state_file = \"/srv/a/state.json\"",
                "publish_dir = \"/srv\"",
                "credentials.b.publish_dir",
                &["/srv holds"],
            ),
            // Two state files on one path.
            (
                "state_file = \"/s/x.json\"",
                "state_file = \"/s/x.json\"",
                "credentials.b.state_file",
                &["is also credential a's state file /s/x.json"],
            ),
        ];
        for (a, b, key, says) in cases {
            let text = format!("{}{}", credential("a", a), credential("b", b));
            let e = load(&text).expect_err(&text);
            assert_eq!(e.key, *key, "{text}\n{e}");
            for s in *says {
                assert!(e.message.contains(s), "{text}\n{e}");
            }
        }
    }

    #[test]
    fn separate_paths_and_shared_state_directories_are_fine() {
        let text = format!(
            "{}{}",
            credential(
                "a",
                &format!("publish_dir = \"/run/a\"\n{}", output("a", "access_token"))
            ),
            credential(
                "b",
                &format!(
                    "publish_dir = \"/run/b\"\n{}{}",
                    output("b", "access_token"),
                    output("b", "/run/b.token")
                )
            ),
        );
        load(&text).unwrap();
    }

    #[test]
    fn an_output_in_its_own_state_directory_is_refused() {
        let text = credential("a", &output("a", "/var/lib/tokend/token"));
        let e = load(&text).unwrap_err();
        assert_eq!(e.key, "credentials.a.outputs[0].path", "{e}");
        assert!(e.message.contains("tokend keeps its state there"), "{e}");
    }
}
