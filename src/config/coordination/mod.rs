//! `[coordination]` (design.md §11): several replicas sharing one refresh-token chain through
//! a distributed store. Raw form, validated form and checks live together here, since
//! nothing else in the configuration depends on them; each store's table has its file.
//!
//! - this file: the backend, identity and lease
//! - [`etcd`]: the `coordination.etcd` table
//! - [`kubernetes`]: the `coordination.kubernetes` table

pub mod etcd;
pub mod kubernetes;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::error::{ConfigError, Sources};
use crate::config::text::duration_text;

pub use etcd::EtcdConfig;
pub use kubernetes::KubernetesConfig;

/// The lease when none is configured: long enough for the default token request
/// timeout (15 s) plus [`LEASE_MARGIN`], with room to spare; a crashed leader's
/// credentials are taken over within it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(20);
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
    #[serde(default)]
    pub unfinished_intent: UnfinishedIntent,
    pub etcd: Option<etcd::RawEtcd>,
    pub kubernetes: Option<kubernetes::RawKubernetes>,
}

/// What a leader does about another replica's refresh that never finished: it wrote
/// its intent and may have sent the refresh token, and the rotated one, if the server
/// answered, is that replica's alone (docs/replicas.md weighs the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum UnfinishedIntent {
    /// Never send that token: wait for its author to store what it got, or for a
    /// person (`tokend login`). A strict server never sees a replay from tokend.
    #[default]
    Wait,
    /// Send it at once: for servers whose reuse grace window is longer than the lease
    /// (the replay is answered with the rotated pair). On a strict server, a replay
    /// revokes the chain whenever the author's request had reached it.
    Retry,
    /// Wait while the published access token lasts, then send that token: the chain
    /// goes on if the author's request never reached the server; if it did, a strict
    /// server revokes the chain (which was lost with the author anyway, unless the
    /// author comes back later).
    RetryBeforeExpiry,
}

crate::config::text::spelled!(UnfinishedIntent {
    Wait = "wait",
    Retry = "retry",
    RetryBeforeExpiry = "retry_before_expiry",
});

/// The validated `[coordination]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinationConfig {
    /// `None`: the host's name and the daemon's pid (see [`Self::identity`]).
    pub identity: Option<String>,
    pub lease: Duration,
    pub unfinished_intent: UnfinishedIntent,
    pub store: StoreConfig,
}

/// Where the replicas meet: the backend and its table.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    Etcd(EtcdConfig),
    Kubernetes(KubernetesConfig),
}

impl StoreConfig {
    /// The store's name, for log lines and remedies.
    pub fn name(&self) -> &'static str {
        match self {
            StoreConfig::Etcd(_) => "etcd",
            StoreConfig::Kubernetes(_) => "the Kubernetes API",
        }
    }

    /// The configuration table that sets it up, for errors about that setup.
    pub fn table(&self) -> &'static str {
        match self {
            StoreConfig::Etcd(_) => "coordination.etcd",
            StoreConfig::Kubernetes(_) => "coordination.kubernetes",
        }
    }
}

/// `check` prints the table as it was written: `backend = ...` and the store's table.
impl Serialize for CoordinationConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            backend: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            identity: Option<&'a String>,
            #[serde(with = "duration_text")]
            lease: Duration,
            unfinished_intent: UnfinishedIntent,
            #[serde(skip_serializing_if = "Option::is_none")]
            etcd: Option<&'a EtcdConfig>,
            #[serde(skip_serializing_if = "Option::is_none")]
            kubernetes: Option<&'a KubernetesConfig>,
        }
        let (backend, etcd, kubernetes) = match &self.store {
            StoreConfig::Etcd(e) => ("etcd", Some(e), None),
            StoreConfig::Kubernetes(k) => ("kubernetes", None, Some(k)),
        };
        Shown {
            backend,
            identity: self.identity.as_ref(),
            lease: self.lease,
            unfinished_intent: self.unfinished_intent,
            etcd,
            kubernetes,
        }
        .serialize(s)
    }
}

impl CoordinationConfig {
    /// The identity of the replica whose pid is `pid` on this host: the host's name, the
    /// pid and when the process started (`HOST-PID.START`), after the configured identity
    /// and "@" when there is one. Unique per process, whatever the configuration says:
    /// two replicas given one identity (a shared ConfigMap) must never both take it for
    /// their own, nor a restarted process (pid 1 again, in a container) its
    /// predecessor's; leadership (a Kubernetes Lease's holder) and intents go by it.
    pub fn identity_of(&self, pid: u32) -> String {
        let process = format!("{}-{pid}.{}", crate::host::hostname(), process_start(pid));
        match &self.identity {
            Some(id) => format!("{id}@{process}"),
            None => process,
        }
    }

    /// This process's identity.
    pub fn identity(&self) -> String {
        self.identity_of(std::process::id())
    }
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`, field 22);
/// 0 when it cannot be read.
fn process_start(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count fields after it.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|start| start.parse().ok())
        .unwrap_or(0)
}

pub fn validate_coordination(
    raw: RawCoordination,
    // Each credential's name and token request timeout, which the lease must outlast.
    timeouts: &[(&str, Duration)],
    src: &Sources,
) -> Result<CoordinationConfig, ConfigError> {
    let backend = raw.backend.ok_or_else(|| {
        src.error(
            "coordination.backend",
            "is required: \"etcd\" or \"kubernetes\"",
        )
    })?;
    let (other, table) = match backend.as_str() {
        "etcd" => ("kubernetes", raw.kubernetes.is_some()),
        "kubernetes" => ("etcd", raw.etcd.is_some()),
        _ => {
            return Err(src.error(
                "coordination.backend",
                format!("{backend:?} is not one of etcd, kubernetes"),
            ));
        }
    };
    if table {
        return Err(src.error(
            &format!("coordination.{other}"),
            format!("is only read with backend = \"{other}\""),
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
    let lease = raw.lease.unwrap_or(DEFAULT_LEASE);
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
    let store = if backend == "etcd" {
        StoreConfig::Etcd(etcd::validate_etcd(raw.etcd, src)?)
    } else {
        let names: Vec<&str> = timeouts.iter().map(|(name, _)| *name).collect();
        StoreConfig::Kubernetes(kubernetes::validate_kubernetes(
            raw.kubernetes,
            &names,
            src,
        )?)
    };
    Ok(CoordinationConfig {
        identity,
        lease,
        unfinished_intent: raw.unfinished_intent,
        store,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::{EtcdConfig, StoreConfig};
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

    pub fn load(coordination: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
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

    fn etcd(store: &StoreConfig) -> &EtcdConfig {
        match store {
            StoreConfig::Etcd(e) => e,
            StoreConfig::Kubernetes(_) => panic!("the backend is etcd"),
        }
    }

    #[test]
    fn defaults_and_identity() {
        let c = load(ETCD, &[]).unwrap().coordination.unwrap();
        assert_eq!(c.lease, std::time::Duration::from_secs(20));
        // Every default together: the default lease outlasts the default timeout.
        let defaults = ETCD.replace("[coordination.etcd]", "[coordination.etcd]\n");
        load_from_str(
            &format!("[credentials.c]\nclient_id = \"id\"\nclient_secret = \"s3cret\"\n{defaults}"),
            "t.toml",
            Vec::<(String, String)>::new(),
        )
        .unwrap();
        let e = etcd(&c.store);
        assert_eq!(e.prefix, "/tokend/");
        assert_eq!(e.timeout, std::time::Duration::from_secs(2));
        assert_eq!(e.key("c", "state"), "/tokend/c/state");
        assert!(c.identity_of(std::process::id()).starts_with(&format!(
            "{}-{}.",
            crate::host::hostname(),
            std::process::id()
        )));
        assert_ne!(super::process_start(std::process::id()), 0);
        let named = load(
            &ETCD.replace(
                "backend = \"etcd\"",
                "backend = \"etcd\"\nidentity = \"web-1\"",
            ),
            &[],
        )
        .unwrap();
        let identity = named.coordination.unwrap().identity();
        assert!(
            identity.starts_with(&format!(
                "web-1@{}-{}.",
                crate::host::hostname(),
                std::process::id()
            )),
            "{identity}"
        );
        // Endpoints from a variable, comma-separated.
        let env = [(
            "TOKEND_COORDINATION__ETCD__ENDPOINTS",
            "http://a:2379, http://b:2379",
        )];
        let c = load(ETCD, &env).unwrap().coordination.unwrap();
        assert_eq!(etcd(&c.store).endpoints.len(), 2);
    }

    // A table of cases: each mistake names its key and says what to do.
    #[test]
    fn mistakes_are_explained() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"backend = "zookeeper""#,
                "coordination.backend",
                "is not one of etcd, kubernetes",
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
