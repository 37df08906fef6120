//! The store the replicas share, either backend: real etcd members, or the Kubernetes API
//! stand-in (`standin/standin.py`) keeping its objects in a real etcd. Each replica's
//! `[coordination]` backend table comes from here, pointed at the store or at a proxy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{Etcd, Proxy, etcd_table};
use crate::common::free_port;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Etcd,
    Kubernetes,
}

/// The shared store of one test.
pub struct Store {
    pub etcd: Etcd,
    pub kube: Option<StandIn>,
}

impl Store {
    pub async fn start(backend: Backend) -> Store {
        let etcd = Etcd::start(1).await;
        let kube = match backend {
            Backend::Etcd => None,
            Backend::Kubernetes => Some(StandIn::start(&etcd, None).await),
        };
        Store { etcd, kube }
    }

    /// Where replicas connect: the stand-in, or etcd's first member.
    pub fn port(&self) -> u16 {
        match &self.kube {
            Some(k) => k.port,
            None => self.etcd.members[0].client_port,
        }
    }

    /// The backend table of a replica that reaches the store at `port`.
    pub fn table(&self, port: u16) -> String {
        match &self.kube {
            Some(k) => k.table(port),
            None => etcd_table(&[format!("http://127.0.0.1:{port}")]),
        }
    }

    /// `n` replicas' tables, each straight to the store.
    pub fn tables(&self, n: usize) -> Vec<String> {
        vec![self.table(self.port()); n]
    }

    /// One proxy per replica to the store, and each replica's table through its proxy.
    pub async fn proxies(&self, n: usize) -> (Vec<Proxy>, Vec<String>) {
        let mut proxies = Vec::new();
        for _ in 0..n {
            proxies.push(Proxy::start(self.port()).await);
        }
        let tables = proxies.iter().map(|p| self.table(p.port)).collect();
        (proxies, tables)
    }

    /// What a replica's lease renewal request holds (for [`Proxy::slow_down`]).
    pub fn renewal_marker(&self) -> &'static str {
        match self.kube {
            Some(_) => "PUT /apis/coordination.k8s.io/",
            None => "/v3/lease/keepalive",
        }
    }

    /// The store's service goes away (etcd's member; the API server, etcd staying up).
    pub fn stop_service(&mut self) {
        match &mut self.kube {
            Some(k) => k.kill(),
            None => self.etcd.members[0].kill(),
        }
    }

    pub async fn restart_service(&mut self) {
        match &mut self.kube {
            Some(k) => k.restart().await,
            None => {
                self.etcd.members[0].restart();
                self.etcd.wait_healthy().await;
            }
        }
    }

    /// With the stand-in: every request tokend sent was valid for its schema,
    /// conditional, authenticated and allowed by the Role.
    pub async fn assert_requests_clean(&self) {
        if let Some(k) = &self.kube {
            k.assert_clean().await;
        }
    }

    /// With the stand-in: the Role grants exactly what tokend used.
    pub async fn assert_role_fits(&self) {
        if let Some(k) = &self.kube {
            k.assert_role_fits().await;
        }
    }
}

/// The Kubernetes API stand-in: a Python process on a loopback port, its objects in
/// etcd, the Role of `config/kubernetes/tokend-replicas-kubernetes.yaml` enforced.
pub struct StandIn {
    pub port: u16,
    etcd: String,
    /// What tokend reads as its service account token.
    pub token_file: PathBuf,
    /// The tokens the stand-in accepts, read again on every request.
    accepted: PathBuf,
    tls: Option<PathBuf>,
    child: Option<Child>,
    log: PathBuf,
    /// Holds the token files; removed with the stand-in.
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

pub const NAMESPACE: &str = "tokend-test";

impl StandIn {
    /// Starts it on `etcd`; with `tls`, a directory of `ca.pem`, `server.pem` and
    /// `server.key`, it serves HTTPS as an API server does.
    pub async fn start(etcd: &Etcd, tls: Option<&Path>) -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("sa-token");
        let accepted = dir.path().join("accepted");
        std::fs::write(&token_file, "sa-token-1\n").unwrap();
        std::fs::write(&accepted, "sa-token-1\n").unwrap();
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(2));
        if let Some(tls) = tls {
            let ca = std::fs::read(tls.join("ca.pem")).unwrap();
            http = http.tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()]);
        }
        let mut s = StandIn {
            port: free_port(),
            etcd: etcd.endpoints()[0].clone(),
            token_file,
            accepted,
            tls: tls.map(Path::to_owned),
            child: None,
            log: dir.path().join("standin.log"),
            _dir: dir,
            http: http.build().unwrap(),
        };
        s.spawn();
        s.wait_listening().await;
        s
    }

    fn scheme(&self) -> &str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn spawn(&mut self) {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/coordination/standin/standin.py"
        );
        let role = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/kubernetes/tokend-replicas-kubernetes.yaml"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--etcd", &self.etcd, "--port", &self.port.to_string()])
            .args(["--tokens", self.accepted.to_str().unwrap()])
            // The manifest's credential is "blnk"; the tests' are "c" (and "d").
            .args(["--role", role, "--rename", "tokend-blnk=tokend-c,tokend-d"]);
        if let Some(tls) = &self.tls {
            cmd.args(["--tls-dir", tls.to_str().unwrap()]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("python3 runs the Kubernetes API stand-in");
        self.child = Some(child);
    }

    /// Waits until it answers; the first start of all installs its venv (PyPI).
    async fn wait_listening(&mut self) {
        let start = Instant::now();
        while self.try_stats().await.is_none() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("the stand-in exited ({status}):\n{}", self.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "the stand-in did not start:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_listening().await;
    }

    async fn try_stats(&self) -> Option<serde_json::Value> {
        let url = format!("{}://127.0.0.1:{}/_standin/stats", self.scheme(), self.port);
        self.http.get(url).send().await.ok()?.json().await.ok()
    }

    /// What it saw: requests, invalid ones, unconditional updates, refusals, verbs used.
    pub async fn stats(&self) -> serde_json::Value {
        self.try_stats().await.expect("the stand-in answers")
    }

    /// Ends every open watch with 410 Gone.
    pub async fn expire_watches(&self) {
        let url = format!(
            "{}://127.0.0.1:{}/_standin/expire-watches",
            self.scheme(),
            self.port
        );
        self.http.get(url).send().await.unwrap();
    }

    /// Rotates the service account token as the kubelet does: a new token in the file,
    /// and from now on the old one is refused.
    pub fn rotate_token(&self, new: &str) {
        std::fs::write(&self.token_file, format!("{new}\n")).unwrap();
        std::fs::write(&self.accepted, format!("{new}\n")).unwrap();
    }

    /// The backend table of a replica that reaches the stand-in at `port`.
    pub fn table(&self, port: u16) -> String {
        let ca = match &self.tls {
            Some(t) => format!("ca_file = \"{}\"\n", t.join("ca.pem").display()),
            None => String::new(),
        };
        format!(
            "backend = \"kubernetes\"\n[coordination.kubernetes]\nserver = \"{}://127.0.0.1:{port}\"\nnamespace = \"{NAMESPACE}\"\ntoken_file = \"{}\"\n{ca}timeout = \"1s\"\n",
            self.scheme(),
            self.token_file.display(),
        )
    }

    /// Every verb on every resource the Role grants was used, and nothing else: the
    /// Role is no wider than the backend needs.
    pub async fn assert_role_fits(&self) {
        let s = self.stats().await;
        let mut used: Vec<&str> = s["used"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        used.sort();
        let granted: Vec<&str> = s["granted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            used, granted,
            "what tokend used against what the Role grants"
        );
    }

    pub async fn assert_clean(&self) {
        let s = self.stats().await;
        assert!(
            s["requests"].as_u64().unwrap() > 0,
            "no request reached the stand-in"
        );
        for key in ["invalid", "unconditional", "unauthorized", "forbidden"] {
            assert_eq!(s[key], 0, "{key} requests: {s}");
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.kill();
    }
}
