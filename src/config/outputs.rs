//! The publishing keys of a credential: its outputs (paths, modes, owners), its
//! `publish_dir`, and its rotation hook.

use std::path::Path;

use crate::config::error::{ConfigError, Sources};
use crate::config::model::{Account, HookConfig, OutputConfig, is_bare_name};
use crate::config::raw::{RawAccount, RawHook, RawOutput};

/// Checks the outputs of credential `name`, and the `publish_dir` they may live in.
pub fn validate_outputs(
    name: &str,
    raw: Vec<RawOutput>,
    publish_dir: Option<&Path>,
    src: &Sources,
) -> Result<Vec<OutputConfig>, ConfigError> {
    if let Some(dir) = publish_dir
        && (!dir.is_absolute() || dir.parent().is_none())
    {
        return Err(src.error(
            &format!("credentials.{name}.publish_dir"),
            "must be an absolute path to a directory (not /)",
        ));
    }
    // Exactly as long as it needs: each credential keeps it for the process's life.
    let mut outputs = Vec::with_capacity(raw.len());
    for (i, o) in raw.into_iter().enumerate() {
        let okey = |k: &str| format!("credentials.{name}.outputs[{i}].{k}");
        let mode = parse_mode(&o.mode).map_err(|m| src.error(&okey("mode"), m))?;
        if o.path.as_os_str().is_empty() || o.path.file_name().is_none() {
            return Err(src.error(&okey("path"), "must name a file"));
        }
        if let Some(dir) = publish_dir {
            if is_bare_name(&o.path) && o.path.to_string_lossy().starts_with("..") {
                return Err(src.error(
                    &okey("path"),
                    "names starting with .. are publish_dir's own",
                ));
            }
            if o.path.starts_with(dir) {
                return Err(src.error(
                    &okey("path"),
                    format!(
                        "inside publish_dir: give just the file name, as in path = {:?}",
                        o.path.file_name().unwrap_or_default()
                    ),
                ));
            }
        }
        let owner = o
            .owner
            .map(|a| resolve_account(a, AccountKind::User))
            .transpose()
            .map_err(|m| src.error(&okey("owner"), m))?;
        let group = o
            .group
            .map(|a| resolve_account(a, AccountKind::Group))
            .transpose()
            .map_err(|m| src.error(&okey("group"), m))?;
        if outputs.iter().any(|x: &OutputConfig| x.path == o.path) {
            return Err(src.error(
                &okey("path"),
                format!("{} is already an output", o.path.display()),
            ));
        }
        outputs.push(OutputConfig {
            path: o.path,
            format: o.format,
            mode,
            owner,
            group,
        });
    }
    Ok(outputs)
}

/// Checks a rotation hook: a command, or a signal with its pid file, or both.
pub fn validate_hook(h: RawHook, key: &str, src: &Sources) -> Result<HookConfig, ConfigError> {
    let sub = |k: &str| format!("{key}.{k}");
    if h.command.first().is_some_and(|p| p.is_empty()) {
        return Err(src.error(&sub("command"), "the program must not be empty"));
    }
    if h.timeout.is_zero() {
        return Err(src.error(&sub("timeout"), "must be more than 0s"));
    }
    let signal = h
        .signal
        .map(|text| parse_signal(&text))
        .transpose()
        .map_err(|m| src.error(&sub("signal"), m))?;
    match (&signal, &h.pid_file) {
        (Some(_), None) => {
            return Err(src.error(&sub("pid_file"), "is required with on_rotate.signal"));
        }
        (None, Some(_)) => {
            return Err(src.error(&sub("signal"), "is required with on_rotate.pid_file"));
        }
        _ => {}
    }
    if h.command.is_empty() && signal.is_none() {
        return Err(src.error(key, "set command, or signal and pid_file"));
    }
    Ok(HookConfig {
        command: h.command,
        timeout: h.timeout,
        signal,
        pid_file: h.pid_file,
    })
}

/// `"SIGHUP"` or `"HUP"`.
fn parse_signal(text: &str) -> Result<nix::sys::signal::Signal, String> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse()
        .map_err(|_| format!("{text:?} is not a signal name such as \"SIGHUP\""))
}

#[derive(Clone, Copy)]
enum AccountKind {
    User,
    Group,
}

/// Resolves a user or group name to its id now, so that `check` catches a typo.
fn resolve_account(raw: RawAccount, kind: AccountKind) -> Result<Account, String> {
    let name = match raw {
        RawAccount::Id(id) => {
            return Ok(Account {
                given: id.to_string(),
                id,
            });
        }
        RawAccount::Name(name) => name,
    };
    if let Ok(id) = name.parse::<u32>() {
        return Ok(Account { given: name, id });
    }
    let (what, found) = match kind {
        AccountKind::User => (
            "user",
            nix::unistd::User::from_name(&name).map(|u| u.map(|u| u.uid.as_raw())),
        ),
        AccountKind::Group => (
            "group",
            nix::unistd::Group::from_name(&name).map(|g| g.map(|g| g.gid.as_raw())),
        ),
    };
    match found {
        Ok(Some(id)) => Ok(Account { given: name, id }),
        Ok(None) => Err(format!("no {what} named {name:?} on this system")),
        Err(e) => Err(format!("cannot look up {what} {name:?}: {e}")),
    }
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && m <= 0o777 => Ok(m),
        _ => Err(format!(
            "{text:?} is not an octal file mode such as \"0640\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("01777").is_err());
    }
}
