//! `[coordination]` (SPEC §11): several replicas sharing one refresh-token chain through
//! a distributed store. Raw form, validated form and checks live together here, since
//! nothing else in the configuration depends on them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::error::{ConfigError, Sources};
use crate::config::secret::SecretSource;
use crate::config::text::{duration_text, one_of};

/// etcd refuses leases shorter than this.
pub const MIN_LEASE: Duration = Duration::from_secs(2);
/// What a leader keeps in hand beyond the token request's timeout before it sends one:
/// the request must be over, answered or abandoned, while the lease is still its own.
pub const LEASE_MARGIN: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCoordination {
    pub backend: Option<String>,
    pub identity: Option<String>,
    #[serde(default, with = "duration_text::option")]
    pub lease: Option<Duration>,
    pub etcd: Option<RawEtcd>,
    /// Refused until the backend exists (issue 14); its content is not read.
    pub kubernetes: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    #[serde(default, deserialize_with = "endpoint_list")]
    pub endpoints: Vec<String>,
    pub prefix: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default, with = "duration_text::option")]
    pub timeout: Option<Duration>,
}

/// A TOML array, or (from an environment variable) a comma-separated string.
fn endpoint_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of URLs, or URLs separated by commas")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<String>, E> {
            Ok(text.split(',').map(|s| s.trim().to_owned()).collect())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut list = Vec::new();
            while let Some(url) = seq.next_element::<String>()? {
                list.push(url);
            }
            Ok(list)
        }
    }
    d.deserialize_any(V)
}

/// The validated `[coordination]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoordinationConfig {
    pub backend: Backend,
    /// `None`: the host's name and the daemon's pid (see [`Self::identity`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(with = "duration_text")]
    pub lease: Duration,
    pub etcd: EtcdConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Etcd,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtcdConfig {
    pub endpoints: Vec<Url>,
    pub prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(
        rename = "password_file",
        skip_serializing_if = "Option::is_none",
        serialize_with = "password_path"
    )]
    pub password: Option<SecretSource>,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

fn password_path<S: serde::Serializer>(p: &Option<SecretSource>, s: S) -> Result<S::Ok, S::Error> {
    // Only ever a file: the password itself is never printed.
    s.serialize_str(
        &p.as_ref()
            .and_then(SecretSource::path)
            .map_or_else(|| "[redacted]".to_owned(), |p| p.display().to_string()),
    )
}

impl EtcdConfig {
    /// The key of one credential's `what` (`leader` or `state`).
    pub fn key(&self, credential: &str, what: &str) -> String {
        format!("{}{credential}/{what}", self.prefix)
    }
}

impl CoordinationConfig {
    /// The identity of the replica whose pid is `pid`: the configured one, or the
    /// host's name, "-" and the pid.
    pub fn identity_of(&self, pid: u32) -> String {
        match &self.identity {
            Some(id) => id.clone(),
            None => format!("{}-{pid}", crate::store::file::hostname()),
        }
    }

    /// This process's identity.
    pub fn identity(&self) -> String {
        self.identity_of(std::process::id())
    }
}

pub fn validate_coordination(
    raw: RawCoordination,
    // Each credential's name and token request timeout, which the lease must outlast.
    timeouts: &[(&str, Duration)],
    src: &Sources,
) -> Result<CoordinationConfig, ConfigError> {
    let backend_word = raw
        .backend
        .ok_or_else(|| src.error("coordination.backend", "is required: \"etcd\""))?;
    if backend_word == "kubernetes" {
        return Err(src.error(
            "coordination.backend",
            "\"kubernetes\" (Lease and Secret) is not available in this version; use \"etcd\"",
        ));
    }
    let backend = one_of(&backend_word, &[("etcd", Backend::Etcd)])
        .map_err(|m| src.error("coordination.backend", m))?;
    if raw.kubernetes.is_some() {
        return Err(src.error(
            "coordination.kubernetes",
            "is only read with backend = \"kubernetes\"",
        ));
    }
    let identity = match raw.identity {
        Some(id) => {
            if id.is_empty()
                || id.len() > 253
                || id.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(src.error(
                    "coordination.identity",
                    "must be 1 to 253 printable characters without spaces",
                ));
            }
            Some(id)
        }
        None => None,
    };
    let lease = raw.lease.unwrap_or(Duration::from_secs(15));
    if lease < MIN_LEASE {
        return Err(src.error(
            "coordination.lease",
            format!(
                "must be at least {} (etcd's shortest lease)",
                humantime::format_duration(MIN_LEASE)
            ),
        ));
    }
    for (name, timeout) in timeouts {
        if lease <= *timeout + LEASE_MARGIN {
            return Err(src.error(
                "coordination.lease",
                format!(
                    "{} is too short for credentials.{}.http.timeout = {:?}: a leader sends a refresh only with the request's timeout plus {} of its lease left. Lower http.timeout or lengthen the lease",
                    humantime::format_duration(lease),
                    name,
                    humantime::format_duration(*timeout).to_string(),
                    humantime::format_duration(LEASE_MARGIN),
                ),
            ));
        }
    }
    let etcd = validate_etcd(raw.etcd, src)?;
    Ok(CoordinationConfig {
        backend,
        identity,
        lease,
        etcd,
    })
}

fn validate_etcd(raw: Option<RawEtcd>, src: &Sources) -> Result<EtcdConfig, ConfigError> {
    let key = |k: &str| format!("coordination.etcd.{k}");
    let raw = raw.ok_or_else(|| {
        src.error(
            "coordination.etcd",
            "is required with backend = \"etcd\": at least endpoints = [\"https://HOST:2379\"]",
        )
    })?;
    if raw.endpoints.is_empty() {
        return Err(src.error(&key("endpoints"), "needs at least one URL"));
    }
    let mut endpoints = Vec::new();
    for text in &raw.endpoints {
        let url = Url::parse(text)
            .map_err(|e| src.error(&key("endpoints"), format!("{text:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(src.error(
                &key("endpoints"),
                format!("{text:?}: use http://HOST:PORT or https://HOST:PORT"),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(src.error(
                &key("endpoints"),
                "must not carry credentials; use username and password_file",
            ));
        }
        endpoints.push(url);
    }
    let tls = endpoints.iter().any(|u| u.scheme() == "https");
    if tls && endpoints.iter().any(|u| u.scheme() == "http") {
        return Err(src.error(
            &key("endpoints"),
            "mixes http:// and https://; every member is reached the same way",
        ));
    }
    if tls && raw.ca_file.is_none() {
        return Err(src.error(
            &key("ca_file"),
            "https:// endpoints need ca_file: etcd serves certificates of its own CA",
        ));
    }
    if !tls && (raw.ca_file.is_some() || raw.cert_file.is_some()) {
        return Err(src.error(
            &key("ca_file"),
            "TLS files are given but every endpoint is http://; use https://",
        ));
    }
    if raw.cert_file.is_some() != raw.key_file.is_some() {
        return Err(src.error(
            &key("cert_file"),
            "cert_file and key_file go together: a client certificate needs its key",
        ));
    }
    if raw.username.is_some() != raw.password_file.is_some() {
        return Err(src.error(&key("username"), "username and password_file go together"));
    }
    let prefix = raw.prefix.unwrap_or_else(|| "/tokend/".into());
    if prefix.is_empty() || prefix.chars().any(char::is_control) {
        return Err(src.error(
            &key("prefix"),
            "must be non-empty printable text, such as \"/tokend/\"",
        ));
    }
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(2));
    if timeout.is_zero() {
        return Err(src.error(&key("timeout"), "must be more than zero"));
    }
    Ok(EtcdConfig {
        endpoints,
        prefix,
        ca_file: raw.ca_file,
        cert_file: raw.cert_file,
        key_file: raw.key_file,
        username: raw.username,
        password: raw.password_file.map(SecretSource::File),
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, load_from_str};

    const BASE: &str = r#"
        state_dir = "/tmp/x"
        [credentials.c]
        client_id = "id"
        client_secret = "s3cret"
        refresh_token = "blnk_rt_1"
        [credentials.c.http]
        timeout = "5s"
    "#;

    fn load(coordination: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let text = format!("{BASE}\n{coordination}");
        load_from_str(
            &text,
            "t.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    const ETCD: &str = r#"
        [coordination]
        backend = "etcd"
        [coordination.etcd]
        endpoints = ["http://127.0.0.1:2379"]
    "#;

    #[test]
    fn defaults_and_identity() {
        let c = load(ETCD, &[]).unwrap().coordination.unwrap();
        assert_eq!(c.lease, std::time::Duration::from_secs(15));
        assert_eq!(c.etcd.prefix, "/tokend/");
        assert_eq!(c.etcd.timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.etcd.key("c", "state"), "/tokend/c/state");
        assert_eq!(
            c.identity_of(42),
            format!("{}-42", crate::store::file::hostname())
        );
        let named = load(
            &ETCD.replace(
                "backend = \"etcd\"",
                "backend = \"etcd\"\nidentity = \"web-1\"",
            ),
            &[],
        )
        .unwrap();
        assert_eq!(named.coordination.unwrap().identity(), "web-1");
        // Endpoints from a variable, comma-separated.
        let env = [(
            "TOKEND_COORDINATION__ETCD__ENDPOINTS",
            "http://a:2379, http://b:2379",
        )];
        let c = load(ETCD, &env).unwrap().coordination.unwrap();
        assert_eq!(c.etcd.endpoints.len(), 2);
    }

    // A table of cases: each mistake names its key and says what to do.
    #[test]
    fn mistakes_are_explained() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"backend = "kubernetes""#,
                "coordination.backend",
                "not available",
            ),
            (
                r#"backend = "zookeeper""#,
                "coordination.backend",
                "is not one of etcd",
            ),
            (r#"lease = "1s""#, "coordination.lease", "at least 2s"),
            (
                r#"lease = "5s""#,
                "coordination.lease",
                "Lower http.timeout or lengthen the lease",
            ),
            (
                r#"identity = "two words""#,
                "coordination.identity",
                "without spaces",
            ),
            (
                "[coordination.etcd]\nendpoints = []",
                "coordination.etcd.endpoints",
                "at least one",
            ),
            (
                "[coordination.etcd]\nendpoints = [\"etcd:2379\"]",
                "coordination.etcd.endpoints",
                "http://HOST:PORT",
            ),
            (
                "[coordination.etcd]\nendpoints = [\"http://a:1\", \"https://b:1\"]",
                "coordination.etcd.endpoints",
                "mixes",
            ),
            (
                "[coordination.etcd]\nendpoints = [\"https://a:1\"]",
                "coordination.etcd.ca_file",
                "its own CA",
            ),
            (
                "[coordination.etcd]\nendpoints = [\"https://a:1\"]\nca_file = \"/ca\"\ncert_file = \"/c\"",
                "coordination.etcd.cert_file",
                "needs its key",
            ),
            (
                "[coordination.etcd]\nendpoints = [\"http://a:1\"]\nusername = \"u\"",
                "coordination.etcd.username",
                "go together",
            ),
            (
                "[coordination.etcd]\nendpoints = [\"http://u:p@a:1\"]",
                "coordination.etcd.endpoints",
                "must not carry credentials",
            ),
        ];
        for (change, key, says) in cases {
            let text = if change.starts_with("[coordination.etcd]") {
                format!("[coordination]\nbackend = \"etcd\"\n{change}")
            } else {
                ETCD.replace(
                    "backend = \"etcd\"",
                    &format!("backend = \"etcd\"\n{change}"),
                )
                .replacen(
                    "backend = \"etcd\"\n",
                    "",
                    usize::from(change.starts_with("backend")),
                )
            };
            let e = load(&text, &[]).expect_err(change);
            assert_eq!(e.key, *key, "{change}: {e}");
            assert!(e.message.contains(says), "{change}: {e}");
        }
    }

    #[test]
    fn check_shows_the_password_file_never_a_password() {
        let text = ETCD.replace(
            "endpoints = [\"http://127.0.0.1:2379\"]",
            "endpoints = [\"http://127.0.0.1:2379\"]\nusername = \"tokend\"\npassword_file = \"/run/secrets/etcd\"",
        );
        let out = load(&text, &[]).unwrap().redacted_toml();
        assert!(out.contains("[coordination.etcd]"), "{out}");
        assert!(
            out.contains("password_file = \"/run/secrets/etcd\""),
            "{out}"
        );
        // What check prints loads again.
        load_from_str(&out, "check.toml", Vec::<(String, String)>::new()).unwrap();
    }
}
