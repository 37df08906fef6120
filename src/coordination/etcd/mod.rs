//! The etcd backend (SPEC §11): one connection per process, every call bounded by
//! `coordination.etcd.timeout` and its failure classified.
//!
//! - this file: connecting, calls, and the reads and writes outside a running daemon
//!   (`status`, `login`)
//! - [`session`]: this replica's lease, kept alive
//! - [`member`]: one credential's leadership and its watch on the record

pub mod member;
pub mod session;

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp,
};
use secrecy::ExposeSecret;

use crate::config::coordination::EtcdConfig;
use crate::coordination::error::{Kind, Op, StoreFailure};
use crate::coordination::record::{Record, Stored};
use crate::store::State;

/// One process's way to etcd. It connects at the first call, and again after a
/// failure to connect, so that tokend starts (and serves its outputs) while etcd is down.
pub struct Etcd {
    cfg: EtcdConfig,
    /// How often the connection is probed, so that a dead one is noticed.
    keepalive: Duration,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Etcd {
    pub fn new(cfg: EtcdConfig, lease: Duration) -> Self {
        Etcd {
            cfg,
            keepalive: (lease / 3).max(Duration::from_secs(1)),
            client: tokio::sync::Mutex::new(None),
        }
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.cfg
    }

    async fn client(&self, op: Op) -> Result<Client, StoreFailure> {
        let mut slot = self.client.lock().await;
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let options = self.options(op)?;
        let endpoints: Vec<String> = self
            .cfg
            .endpoints
            .iter()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
            .collect();
        let client =
            tokio::time::timeout(self.cfg.timeout, Client::connect(endpoints, Some(options)))
                .await
                .map_err(|_| StoreFailure::timeout(op, self.cfg.timeout))?
                .map_err(|e| StoreFailure::from_etcd(op, &e))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    fn options(&self, op: Op) -> Result<ConnectOptions, StoreFailure> {
        let cfg = &self.cfg;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(cfg.timeout)
            .with_keep_alive(self.keepalive, cfg.timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the others must not answer from its stale copy.
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                StoreFailure::new(op, Kind::Unreachable, format!("{}: {e}", path.display()))
            })
        };
        if cfg.endpoints.iter().any(|u| u.scheme() == "https") {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &cfg.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
        }
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            let password = password
                .read()
                .map_err(|e| StoreFailure::new(op, Kind::AuthRefused, e.to_string()))?;
            options = options.with_user(user.clone(), password.expose_secret().to_owned());
        }
        Ok(options)
    }

    /// Runs one call on the connection, within the timeout; a failure to connect is
    /// forgotten so that the next call connects again.
    pub async fn call<T, F, Fut>(&self, op: Op, f: F) -> Result<T, StoreFailure>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client(op).await?;
        match tokio::time::timeout(self.cfg.timeout, f(client)).await {
            Err(_) => Err(StoreFailure::timeout(op, self.cfg.timeout)),
            Ok(Err(e)) => Err(StoreFailure::from_etcd(op, &e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// The credential's leader identity and record, read once (for `status`).
    pub async fn describe(
        &self,
        credential: &str,
    ) -> Result<(Option<String>, Stored), StoreFailure> {
        let prefix = self.cfg.key(credential, "");
        let kvs = self
            .call(Op::Read, |mut c| async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        let (leader_key, state_key) = (
            self.cfg.key(credential, "leader"),
            self.cfg.key(credential, "state"),
        );
        let mut leader = None;
        let mut stored = Stored::default();
        for kv in kvs.kvs() {
            if kv.key() == leader_key.as_bytes() {
                leader = Some(String::from_utf8_lossy(kv.value()).into_owned());
            } else if kv.key() == state_key.as_bytes() {
                stored = Stored::read(Some(kv.value()), kv.mod_revision());
            }
        }
        Ok((leader, stored))
    }

    /// `tokend login`: makes `state` the credential's record, as the newest generation,
    /// whoever leads. Conditional like every write: a record that moved meanwhile is
    /// read again and the write retried. Returns the generation written.
    pub async fn seed(&self, credential: &str, state: &State) -> Result<u64, StoreFailure> {
        let key = self.cfg.key(credential, "state");
        for _ in 0..5 {
            let (_, stored) = self.describe(credential).await?;
            let mut state = state.clone();
            state.generation = stored.generation() + 1;
            let record = Record {
                state: Some(state),
                intent: None,
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    stored.revision,
                )])
                .and_then([TxnOp::put(key.clone(), record.to_bytes(), None)]);
            let done = self
                .call(Op::Write, |mut c| async move { c.txn(txn).await })
                .await?;
            if done.succeeded() {
                return Ok(record.generation());
            }
        }
        Err(StoreFailure::condition(Op::Write))
    }
}
