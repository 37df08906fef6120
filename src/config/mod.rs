//! Configuration: the TOML file plus `TOKEND_` environment overrides, typed and validated.
//!
//! Loading happens in two steps, as in rathole: `serde` turns the merged sources into
//! raw structs (unknown keys are errors), then `validate` turns "parses" into "makes
//! sense". Every error names the key path and the source it came from.
//!
//! - [`model`]: the validated types the rest of tokend reads
//! - [`raw`]: the same keys as serde reads them
//! - [`validate`], [`client`] and [`outputs`]: the checks, by concern; `claims`: no two
//!   credentials write one path, and no output lands on tokend's own files
//! - [`coordination`]: `[coordination]`, for several replicas on one chain
//! - [`secret`]: secrets inline or in files
//! - [`text`]: how durations, modes and signals are written
//! - [`view`]: the redacted form `check` prints
//! - [`error`]: errors that name their key and source
//!
//! A credential has three forms on purpose: raw holds the file's flat keys as written,
//! model groups them by what reads them (login, chain, assertion, outputs resolved to
//! ids), view is the file's keys again with secrets redacted. The sub-tables
//! (`refresh`, `retry`, `http`) and every enumerated word are defined once, in model,
//! and all three use them.

mod claims;
pub mod client;
pub mod coordination;
pub mod error;
pub mod model;
pub mod outputs;
pub mod raw;
pub mod secret;
pub mod text;
pub mod validate;
pub mod view;

use std::path::Path;

pub use error::ConfigError;
pub use model::*;
pub use secret::{MIN_SECRET_LEN, SecretReadError, SecretSource};
pub use validate::check_server_url;

use error::{ENV_PREFIX, Sources};
use raw::RawConfig;

/// Environment variables with the prefix that are not configuration keys.
const ENV_NOT_CONFIG: &[&str] = &["TOKEND_CONFIG"];

/// Reads `path` (TOML) and the `TOKEND_` environment, then validates.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// As [`load`], with the environment given explicitly (tests).
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "; name the configuration with -c FILE or TOKEND_CONFIG (default {DEFAULT_PATH})"
            )
        } else {
            String::new()
        };
        ConfigError::new(&file_name, "(file)", format!("cannot read: {e}{hint}"))
    })?;
    load_from_str(&text, &file_name, env)
}

/// Parses TOML `text` named `file_name`, merges the environment, validates.
pub fn load_from_str(
    text: &str,
    file_name: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let from_file = check_file_types(text, file_name)?;
    let env_map: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_CONFIG.contains(&k.as_str()))
        .collect();
    let sources = Sources {
        env: env_map,
        file: file_name.to_owned(),
        file_text: text,
    };
    if sources.env.is_empty() {
        // Nothing to merge: the file as read. The `config` crate's own tree of the file
        // costs ~9 KiB per credential while it lives, the peak of a start with
        // thousands of credentials.
        return validate::validate(from_file, &sources);
    }
    drop(from_file);
    let merged = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("TOKEND")
                .prefix_separator("_")
                .separator("__")
                .source(Some(sources.env.clone())),
        )
        .build()
        .map_err(|e| ConfigError::new(file_name, "(file)", one_line(&e.to_string())))?;
    let raw: RawConfig = serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = e.path().to_string();
        let message = one_line(&strip_config_suffix(&e.inner().to_string()));
        sources.error(&key, message)
    })?;
    validate::validate(raw, &sources)
}

/// The file alone, read with TOML's own types: a string is not a boolean, a number not
/// a string. (The merged view coerces, since environment variables are all strings.)
/// Without environment overrides, this is the configuration.
fn check_file_types(text: &str, file_name: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let at = e.span().map_or_else(
            || "(syntax)".to_owned(),
            |span| {
                // (`get`: a span off a character boundary must not panic.)
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}")
            },
        );
        ConfigError::new(
            file_name,
            at,
            format!(
                "TOML syntax: {}{}",
                one_line(e.message()),
                syntax_hint(e.message())
            ),
        )
    })?;
    serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
        let message = one_line(e.inner().message());
        ConfigError::new(file_name, e.path().to_string(), message)
    })
}

/// What a TOML syntax error usually means in tokend's configuration.
fn syntax_hint(message: &str) -> &'static str {
    if message.contains("leading zero") {
        // `mode = 0640`: TOML has no octal integers of that form.
        "; a file mode is written as a string, such as mode = \"0640\""
    } else {
        ""
    }
}

/// The `config` crate appends its own location to some messages; we give ours instead.
fn strip_config_suffix(message: &str) -> String {
    match message.find(" for key `") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    const MINIMAL: &str = r#"
        state_dir = "/tmp/x"
        [credentials.blnk]
        client_id = "id"
        client_secret = "s3cret"
        refresh_token = "blnk_rt_1"
    "#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_from_str(
            text,
            "t.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// The file read alone (no `TOKEND_` variable) and merged through `config` (one
    /// variable that repeats the file's own value) are the same configuration.
    #[test]
    fn the_file_alone_and_the_merged_view_agree() {
        for text in [
            MINIMAL,
            include_str!("../../config/tokend.toml"),
            include_str!("../../config/blnk.toml"),
            include_str!("../../config/blnk-systemd.toml"),
            include_str!("../../config/m2m.toml"),
        ] {
            let alone = load(text, &[]).unwrap();
            let dir = alone.state_dir.to_str().unwrap().to_owned();
            let merged = load(text, &[("TOKEND_STATE_DIR", &dir)]).unwrap();
            assert_eq!(alone, merged, "{text}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load(MINIMAL, &[]).unwrap();
        let b = &c.credentials["blnk"];
        assert_eq!(b.token_url.as_ref().unwrap().as_str(), BLNK_TOKEN_URL);
        assert_eq!(
            b.login.authorize_url.as_ref().unwrap().as_str(),
            BLNK_AUTHORIZE_URL
        );
        assert_eq!(b.chain.max_age, Some(BLNK_REFRESH_TOKEN_MAX_AGE));
        assert_eq!(b.state_file, PathBuf::from("/tmp/x/blnk.json"));
        assert_eq!(b.refresh, RefreshPolicy::default());
        assert_eq!(b.client_auth, ClientAuth::Basic);
    }

    #[test]
    fn environment_overrides_file_and_is_named_in_errors() {
        let c = load(
            MINIMAL,
            &[
                ("TOKEND_CREDENTIALS__BLNK__CLIENT_ID", "other"),
                ("TOKEND_CONFIG", "/x"),
            ],
        )
        .unwrap();
        assert_eq!(c.credentials["blnk"].client_id, "other");
        let e = load(MINIMAL, &[("TOKEND_CREDENTIALS__BLNK__REFRESH__AT", "2")]).unwrap_err();
        assert_eq!(e.source_name, "TOKEND_CREDENTIALS__BLNK__REFRESH__AT");
        assert_eq!(e.key, "credentials.blnk.refresh.at");
        let e = load(MINIMAL, &[("TOKEND_CREDENTIALS__BLNK__RETRY__MAX", "soon")]).unwrap_err();
        assert_eq!(e.key, "credentials.blnk.retry.max", "{e}");
        assert_eq!(e.source_name, "TOKEND_CREDENTIALS__BLNK__RETRY__MAX");
    }

    #[test]
    fn a_credential_made_by_variables_alone_is_blamed_on_them() {
        let e = load(MINIMAL, &[("TOKEND_CREDENTIALS__D__CLIENT_ID", "x")]).unwrap_err();
        assert_eq!(
            (e.source_name.as_str(), e.key.as_str()),
            (
                "TOKEND_CREDENTIALS__D__CLIENT_ID",
                "credentials.d.client_secret"
            ),
            "{e}"
        );
        // A key missing from a table of the file is still the file's.
        let e = load(&MINIMAL.replace("client_id = \"id\"", ""), &[]).unwrap_err();
        assert_eq!(e.source_name, "t.toml");
        let e = load(MINIMAL, &[("TOKEND_STATE_DIR", "")]).unwrap_err();
        assert_eq!(
            (e.source_name.as_str(), e.key.as_str()),
            ("TOKEND_STATE_DIR", "state_dir")
        );
    }

    #[test]
    fn errors_name_key_and_file() {
        let e = load(
            &MINIMAL.replace("client_id = \"id\"", "client_idd = \"id\""),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            (e.source_name.as_str(), e.key.as_str()),
            ("t.toml", "credentials.blnk.client_idd"),
            "{e}"
        );
        let e = load(&MINIMAL.replace("client_id = \"id\"", ""), &[]).unwrap_err();
        assert_eq!(e.key, "credentials.blnk.client_id");
        assert!(e.to_string().contains("is required"), "{e}");
    }

    #[test]
    fn token_params_are_extra_parameters_and_never_tokends_own() {
        let with = |extra: &str| load(&format!("{MINIMAL}{extra}\n"), &[]);
        let c = with(
            r#"token_params = { resource = "https://api.example.com/", audience = "ledger" }"#,
        )
        .unwrap();
        let params = &c.credentials["blnk"].token_params;
        assert_eq!(params["resource"], "https://api.example.com/");
        assert_eq!(params["audience"], "ledger");
        // What `check` prints loads again to the same parameters.
        let again = load(&c.redacted_toml(), &[]).unwrap();
        assert_eq!(&again.credentials["blnk"].token_params, params);
        for own in [
            "grant_type",
            "refresh_token",
            "client_id",
            "client_secret",
            "client_assertion",
            "client_assertion_type",
            "scope",
            "code",
        ] {
            let err = with(&format!("token_params = {{ {own} = \"x\" }}")).unwrap_err();
            assert_eq!(err.key, format!("credentials.blnk.token_params.{own}"));
            assert!(err.message.contains("tokend sends itself"), "{err}");
        }
        let err = with("token_params = { resource = \"a\\nb\" }").unwrap_err();
        assert!(err.message.contains("printable"), "{err}");
    }

    #[test]
    fn secrets_are_not_in_check_output() {
        let c = load(MINIMAL, &[]).unwrap();
        let out = c.redacted_toml();
        assert!(
            !out.contains("s3cret") && !out.contains("blnk_rt_1"),
            "{out}"
        );
        assert!(out.contains("[redacted]"));
    }

    // Long because it is a table of cases.
    #[test]
    fn owners_hooks_and_publish_dir_are_checked() {
        let with = |extra: &str| load(&format!("{MINIMAL}{extra}"), &[]);
        let c = with(
            r#"
            publish_dir = "/run/t"
            [credentials.blnk.on_rotate]
            command = ["/bin/true", "x"]
            signal = "hup"
            pid_file = "/run/app.pid"
            [[credentials.blnk.outputs]]
            path = "access_token"
            owner = "root"
            group = 0
            "#,
        )
        .unwrap();
        let b = &c.credentials["blnk"];
        assert_eq!(b.outputs[0].owner.as_ref().unwrap().id, 0);
        assert_eq!(b.outputs[0].group.as_ref().unwrap().given, "0");
        assert!(b.in_publish_dir(&b.outputs[0]));
        let hook = b.on_rotate.as_ref().unwrap();
        assert_eq!(hook.signal, Some(nix::sys::signal::Signal::SIGHUP));
        assert_eq!(hook.timeout, Duration::from_secs(30));
        // What `check` prints loads again to the same configuration.
        assert_eq!(
            load(&c.redacted_toml(), &[]).unwrap().credentials["blnk"].on_rotate,
            b.on_rotate
        );

        let cases = [
            (
                "[[credentials.blnk.outputs]]\npath = \"/o\"\nowner = \"no-such-user-x\"",
                "credentials.blnk.outputs[0].owner",
                "no user named",
            ),
            (
                "[[credentials.blnk.outputs]]\npath = \"/o\"\ngroup = \"no-such-group-x\"",
                "credentials.blnk.outputs[0].group",
                "no group named",
            ),
            (
                "[credentials.blnk.on_rotate]\nsignal = \"SIGHUP\"",
                "credentials.blnk.on_rotate.pid_file",
                "is required",
            ),
            (
                "[credentials.blnk.on_rotate]\nsignal = \"SIGNOPE\"\npid_file = \"/p\"",
                "credentials.blnk.on_rotate.signal",
                "not a signal",
            ),
            (
                "[credentials.blnk.on_rotate]\ntimeout = \"0s\"\ncommand = [\"x\"]",
                "credentials.blnk.on_rotate.timeout",
                "more than",
            ),
            (
                "[credentials.blnk.on_rotate]\ncommand = []",
                "credentials.blnk.on_rotate",
                "set command",
            ),
            (
                "publish_dir = \"rel\"",
                "credentials.blnk.publish_dir",
                "absolute",
            ),
            (
                "publish_dir = \"/tmp/x\"",
                "credentials.blnk.publish_dir",
                "state file",
            ),
            (
                "publish_dir = \"/p\"\n[[credentials.blnk.outputs]]\npath = \"..data\"",
                "credentials.blnk.outputs[0].path",
                "publish_dir's own",
            ),
            (
                "publish_dir = \"/p\"\n[[credentials.blnk.outputs]]\npath = \"/p/t\"",
                "credentials.blnk.outputs[0].path",
                "just the file name",
            ),
        ];
        for (extra, key, message) in cases {
            let e = with(extra).unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.to_string().contains(message), "{extra}: {e}");
        }
    }

    #[test]
    fn login_keys_and_chain_age() {
        let with = |extra: &str| load(&format!("{MINIMAL}{extra}"), &[]);
        // An issuer leaves the token URL to discovery, and no Blnk defaults apply.
        let c =
            with("issuer = \"https://id.example/o\"\nredirect_uri = \"http://127.0.0.1:8976/cb\"")
                .unwrap();
        let b = &c.credentials["blnk"];
        assert_eq!(b.token_url, None);
        assert_eq!(b.login.authorize_url, None);
        assert_eq!(b.chain.max_age, None);
        let again = load(&c.redacted_toml(), &[]).unwrap();
        // No maximum age: nothing to warn before, and check does not print it.
        assert!(!c.redacted_toml().contains("warn_before"));
        assert_eq!(again.credentials["blnk"].login, b.login);
        assert_eq!(again.credentials["blnk"].chain, b.chain);
        // Another server: no maximum age unless set; zero switches Blnk's default off.
        let c = with("token_url = \"https://id.example/token\"\nrefresh_token_max_age = \"10d\"\nwarn_before = \"2d\"").unwrap();
        let chain = &c.credentials["blnk"].chain;
        assert_eq!(chain.max_age, Some(Duration::from_secs(10 * 86_400)));
        assert_eq!(chain.warn_before, Duration::from_secs(2 * 86_400));
        assert_eq!(
            with("refresh_token_max_age = \"0s\"").unwrap().credentials["blnk"]
                .chain
                .max_age,
            None
        );
        // A login may start the chain: no bootstrap token is needed.
        let c = load(&MINIMAL.replace("refresh_token = \"blnk_rt_1\"", ""), &[]).unwrap();
        assert!(
            c.credentials["blnk"]
                .read_bootstrap()
                .unwrap_err()
                .to_string()
                .contains("tokend login blnk")
        );
        let e = with("issuer = \"http://id.example\"").unwrap_err();
        assert_eq!(e.key, "credentials.blnk.issuer");
    }

    #[test]
    fn a_log_level_typo_is_refused_not_silenced() {
        let with = |level: &str| load(&format!("{MINIMAL}\n[log]\nlevel = \"{level}\"\n"), &[]);
        for typo in ["inf", "warnig", "", "info,tokend=verbose", "tokend"] {
            let e = with(typo).unwrap_err();
            assert_eq!(e.key, "log.level", "{typo}: {e}");
            assert!(
                e.message.contains("trace, debug, info, warn, error, off"),
                "{e}"
            );
        }
        for good in [
            "info",
            "WARN",
            "off",
            "info,tokend::credential=debug",
            "warn,hyper=error",
        ] {
            assert!(with(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn an_octal_looking_mode_is_told_to_be_a_string() {
        let text = format!("{MINIMAL}[[credentials.blnk.outputs]]\npath = \"/o\"\nmode = 0640\n");
        let e = load(&text, &[]).unwrap_err();
        assert!(e.message.contains("mode = \"0640\""), "{e}");
        let e = load(&MINIMAL.replace("client_id", "clientid"), &[]).unwrap_err();
        assert!(e.message.contains("did you mean `client_id`?"), "{e}");
        assert!(!e.message.contains("token_url"), "{e}");
    }

    #[test]
    fn a_secret_in_the_wrong_variable_is_not_echoed() {
        let e = load(
            MINIMAL,
            &[(
                "TOKEND_CREDENTIALS__BLNK__REFRESH__AT",
                "blnk_rt_9f8e7d6c5b4a3f2e1d0c",
            )],
        )
        .unwrap_err();
        assert!(!e.message.contains("9f8e7d6c5b4a"), "{e}");
        assert!(e.message.contains("expected a number"), "{e}");
    }

    #[test]
    fn integer_modes_are_refused() {
        // 0o640 would be 416 and 640 would be read digit by digit: neither is what was meant.
        for mode in ["0o640", "640", "0o777", "416"] {
            let text =
                format!("{MINIMAL}[[credentials.blnk.outputs]]\npath = \"/o\"\nmode = {mode}\n");
            let e = load(&text, &[]).unwrap_err();
            assert_eq!(e.key, "credentials.blnk.outputs[0].mode", "{mode}: {e}");
            assert!(e.message.contains("as a string"), "{mode}: {e}");
        }
        let text =
            format!("{MINIMAL}[[credentials.blnk.outputs]]\npath = \"/o\"\nmode = \"0640\"\n");
        assert_eq!(
            load(&text, &[]).unwrap().credentials["blnk"].outputs[0].mode,
            0o640
        );
    }
}
