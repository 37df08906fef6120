//! `[coordination.kubernetes]`: where the API server is, the namespace, and the names of
//! each credential's Lease and Secret. Inside a pod every key has a default taken from
//! the pod's service account; outside one, `server` (with `token_file`, `ca_file`) says
//! where to go, as a kubeconfig would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::error::{ConfigError, Sources};
use crate::config::text::duration_text;

/// What the kubelet mounts into every pod with a service account token.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The placeholder of `name`.
const CREDENTIAL: &str = "{credential}";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    pub server: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    #[serde(default, with = "duration_text::option")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubernetesConfig {
    /// `None`: inside the cluster, from `KUBERNETES_SERVICE_HOST` and `_PORT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Url>,
    /// `None`: the pod's own namespace, from its service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name of each credential's Lease and Secret, with `{credential}` in it.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

/// Where requests go and with what, once the defaults are filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiTarget {
    pub server: Url,
    pub namespace: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

impl KubernetesConfig {
    /// The name of `credential`'s Lease and Secret. Credential names may hold '_',
    /// which object names may not: it becomes '-' (which credential names never hold).
    pub fn object_name(&self, credential: &str) -> String {
        object_name(&self.name, credential)
    }

    /// The server, namespace and files, defaults taken from the pod (its environment
    /// `env` and the service account directory `sa`). The error says which key to set.
    pub fn target(
        &self,
        env: impl Fn(&str) -> Option<String>,
        sa: &Path,
    ) -> Result<ApiTarget, String> {
        let (server, token_file, ca_file) = match &self.server {
            Some(url) => (url.clone(), self.token_file.clone(), self.ca_file.clone()),
            None => {
                let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty()).ok_or(
                    "coordination.kubernetes.server: not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set); set server, and token_file and ca_file as your kubeconfig has them",
                )?;
                let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                let url = Url::parse(&format!("https://{host}:{port}")).map_err(|e| {
                    format!("coordination.kubernetes.server: KUBERNETES_SERVICE_HOST and _PORT do not make a URL: {e}")
                })?;
                (
                    url,
                    Some(self.token_file.clone().unwrap_or_else(|| sa.join("token"))),
                    Some(self.ca_file.clone().unwrap_or_else(|| sa.join("ca.crt"))),
                )
            }
        };
        let namespace = match &self.namespace {
            Some(ns) => ns.clone(),
            None => {
                let file = sa.join("namespace");
                let ns = std::fs::read_to_string(&file).map_err(|e| {
                    format!(
                        "coordination.kubernetes.namespace: not set, and the pod's namespace cannot be read from {}: {e}",
                        file.display()
                    )
                })?;
                let ns = ns.trim().to_owned();
                if !dns_label(&ns) {
                    return Err(format!(
                        "coordination.kubernetes.namespace: {} does not hold a namespace name",
                        file.display()
                    ));
                }
                ns
            }
        };
        Ok(ApiTarget {
            server,
            namespace,
            token_file,
            ca_file,
        })
    }

    /// [`Self::target`] inside this process's pod.
    pub fn in_this_pod(&self) -> Result<ApiTarget, String> {
        self.target(|k| std::env::var(k).ok(), Path::new(SERVICE_ACCOUNT_DIR))
    }
}

pub(super) fn validate_kubernetes(
    raw: Option<RawKubernetes>,
    credentials: &[&str],
    src: &Sources,
) -> Result<KubernetesConfig, ConfigError> {
    let key = |k: &str| format!("coordination.kubernetes.{k}");
    let raw = raw.unwrap_or(RawKubernetes {
        server: None,
        namespace: None,
        name: None,
        token_file: None,
        ca_file: None,
        timeout: None,
    });
    let server = match &raw.server {
        None => None,
        Some(text) => {
            let url = Url::parse(text)
                .map_err(|e| src.error(&key("server"), format!("{text:?} is not a URL: {e}")))?;
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            match url.scheme() {
                "https" if raw.ca_file.is_none() => {
                    return Err(src.error(
                        &key("ca_file"),
                        "an https:// server needs ca_file: the cluster's CA (certificate-authority in a kubeconfig)",
                    ));
                }
                "https" => {}
                // `kubectl proxy` serves plain HTTP on loopback, and adds the credentials.
                "http" if loopback => {}
                _ => {
                    return Err(src.error(
                        &key("server"),
                        format!("{text:?}: use https://HOST:PORT (plain http:// only on loopback, as kubectl proxy serves)"),
                    ));
                }
            }
            Some(url)
        }
    };
    if server.as_ref().is_some_and(|u| u.scheme() == "http") && raw.ca_file.is_some() {
        return Err(src.error(&key("ca_file"), "is for https:// servers"));
    }
    if let Some(ns) = &raw.namespace
        && !dns_label(ns)
    {
        return Err(src.error(
            &key("namespace"),
            format!(
                "{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
            ),
        ));
    }
    let name = raw.name.unwrap_or_else(|| format!("tokend-{CREDENTIAL}"));
    if !name.contains(CREDENTIAL) {
        return Err(src.error(
            &key("name"),
            format!("must contain {CREDENTIAL}: each credential has its own Lease and Secret"),
        ));
    }
    for credential in credentials {
        let object = object_name(&name, credential);
        if !dns_subdomain(&object) {
            return Err(src.error(
                &key("name"),
                format!(
                    "gives {object:?} for credential {credential:?}, which is not a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253); rename the credential or change name"
                ),
            ));
        }
    }
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(2));
    if timeout.is_zero() {
        return Err(src.error(&key("timeout"), "must be more than zero"));
    }
    Ok(KubernetesConfig {
        server,
        namespace: raw.namespace,
        name,
        token_file: raw.token_file,
        ca_file: raw.ca_file,
        timeout,
    })
}

fn object_name(template: &str, credential: &str) -> String {
    template.replace(CREDENTIAL, &credential.replace('_', "-"))
}

/// An RFC 1123 label: what a namespace is named.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: what a Lease or a Secret is named.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::coordination::StoreConfig;
    use crate::config::coordination::tests::load;

    const KUBE: &str = "[coordination]\nbackend = \"kubernetes\"\n";

    fn kube(table: &str) -> Result<KubernetesConfig, ConfigError> {
        let c = load(&format!("{KUBE}[coordination.kubernetes]\n{table}"), &[])?;
        match c.coordination.unwrap().store {
            StoreConfig::Kubernetes(k) => Ok(k),
            StoreConfig::Etcd(_) => unreachable!("backend is kubernetes"),
        }
    }

    #[test]
    fn in_a_pod_everything_comes_from_the_service_account() {
        let c = load(KUBE, &[]).unwrap().coordination.unwrap();
        let StoreConfig::Kubernetes(k) = c.store else {
            unreachable!()
        };
        assert_eq!(k.object_name("blnk"), "tokend-blnk");
        let sa = tempfile::tempdir().unwrap();
        std::fs::write(sa.path().join("namespace"), "payments\n").unwrap();
        let env = |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_owned()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_owned()),
            _ => None,
        };
        let t = k.target(env, sa.path()).unwrap();
        assert_eq!(t.server.as_str(), "https://10.96.0.1/");
        assert_eq!(t.namespace, "payments");
        assert_eq!(t.token_file.unwrap(), sa.path().join("token"));
        assert_eq!(t.ca_file.unwrap(), sa.path().join("ca.crt"));
        // IPv6 service addresses are bracketed.
        let v6 = |k: &str| (k == "KUBERNETES_SERVICE_HOST").then(|| "fd00::1".to_owned());
        let t = k.target(v6, sa.path()).unwrap();
        assert_eq!(t.server.as_str(), "https://[fd00::1]/");
        // Outside a pod, the error names the key to set.
        let e = k.target(|_| None, sa.path()).unwrap_err();
        assert!(e.contains("coordination.kubernetes.server"), "{e}");
        let e = k.target(env, Path::new("/nonexistent")).unwrap_err();
        assert!(e.contains("coordination.kubernetes.namespace"), "{e}");
    }

    #[test]
    fn outside_a_pod_the_table_says_where() {
        let k = kube(
            "server = \"https://api.example:6443\"\nca_file = \"/ca\"\ntoken_file = \"/t\"\nnamespace = \"ops\"\nname = \"sidecar-{credential}-chain\"",
        )
        .unwrap();
        let t = k.target(|_| None, Path::new("/nonexistent")).unwrap();
        assert_eq!(t.namespace, "ops");
        assert_eq!(t.token_file.as_deref(), Some(Path::new("/t")));
        assert_eq!(k.object_name("c"), "sidecar-c-chain");
        // kubectl proxy: plain HTTP on loopback, no token.
        let k = kube("server = \"http://127.0.0.1:8001\"\nnamespace = \"ops\"").unwrap();
        assert_eq!(
            k.target(|_| None, Path::new("/x")).unwrap().token_file,
            None
        );
    }

    #[test]
    fn what_check_prints_loads_again() {
        let text = format!(
            "{KUBE}[coordination.kubernetes]\nserver = \"https://api:6443\"\nca_file = \"/ca\"\ntoken_file = \"/t\""
        );
        let out = load(&text, &[]).unwrap().redacted_toml();
        assert!(out.contains("backend = \"kubernetes\""), "{out}");
        assert!(out.contains("name = \"tokend-{credential}\""), "{out}");
        let again =
            crate::config::load_from_str(&out, "check.toml", Vec::<(String, String)>::new());
        assert_eq!(
            again.unwrap().coordination,
            load(&text, &[]).unwrap().coordination
        );
    }

    #[test]
    fn mistakes_are_explained() {
        let cases: &[(&str, &str, &str)] = &[
            ("server = \"https://api:6443\"", "ca_file", "needs ca_file"),
            ("server = \"http://api:8080\"", "server", "only on loopback"),
            ("server = \"api:6443\"", "server", "use https://"),
            ("namespace = \"Ops\"", "namespace", "not a namespace name"),
            ("name = \"tokend\"", "name", "must contain {credential}"),
            (
                "name = \"Tokend-{credential}\"",
                "name",
                "not a Kubernetes object name",
            ),
            ("timeout = \"0s\"", "timeout", "more than zero"),
            (
                "name = \"{credential}-\"",
                "name",
                "not a Kubernetes object name",
            ),
        ];
        for (line, key, says) in cases {
            let e = kube(line).expect_err(line);
            assert_eq!(
                e.key,
                format!("coordination.kubernetes.{key}"),
                "{line}: {e}"
            );
            assert!(e.message.contains(says), "{line}: {e}");
        }
        // Credential names hold '_', object names cannot: it becomes '-' (credential
        // names hold no '-', so two credentials never share an object).
        let k = kube("").unwrap();
        assert_eq!(k.object_name("my_api"), "tokend-my-api");
        // The other backend's table is refused, not ignored.
        let e = load(
            &format!("{KUBE}[coordination.etcd]\nendpoints = [\"http://a:1\"]"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "coordination.etcd");
    }
}
