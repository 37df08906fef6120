//! etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/*`, `/v3/watch`) over
//! the HTTP client tokend already has; [`super::wire`] holds what its JSON looks like.
//! Chosen over the gRPC client (etcd-client, tonic) because that one cost 1.16 MB of
//! binary and 0.8 MiB of resident memory in every tokend, coordinated or not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::coordination::EtcdConfig;
use crate::coordination::error::{Kind, Op, StoreFailure};
use crate::coordination::etcd::wire::{
    Header, Kv, Listing, Txn, TxnAnswer, WatchBatch, int64, parse_watch, range,
};
use crate::coordination::transport::{self, Attempt, Lines};
use crate::oauth::http::error_chain;

/// One process's way to etcd: endpoints tried in turn, every unary call bounded by
/// `timeout`, authentication when configured.
pub struct Gateway {
    cfg: EtcdConfig,
    http: reqwest::Client,
    /// The endpoint that answered last; the next call starts there.
    current: AtomicUsize,
    token: tokio::sync::Mutex<Option<String>>,
}

impl Gateway {
    pub fn new(cfg: EtcdConfig, lease: Duration) -> Result<Gateway, StoreFailure> {
        let identity = cfg.cert_file.as_deref().zip(cfg.key_file.as_deref());
        let http = transport::client(cfg.timeout, lease, cfg.ca_file.as_deref(), identity)?;
        Ok(Gateway {
            cfg,
            http,
            current: AtomicUsize::new(0),
            token: tokio::sync::Mutex::new(None),
        })
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.cfg
    }

    /// Every key under `prefix`.
    pub async fn list(&self, op: Op, prefix: &str) -> Result<Listing, StoreFailure> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            header: Header,
            #[serde(default)]
            kvs: Vec<Kv>,
        }
        let a: Answer = self.call(op, "/v3/kv/range", range(prefix)).await?;
        Ok(Listing {
            revision: a.header.revision,
            kvs: a.kvs,
        })
    }

    pub async fn txn(&self, op: Op, txn: Txn) -> Result<TxnAnswer, StoreFailure> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            header: Header,
            #[serde(default)]
            succeeded: bool,
            #[serde(default)]
            responses: Vec<Value>,
        }
        let a: Answer = self.call(op, "/v3/kv/txn", txn.body()).await?;
        let mut kvs = Vec::new();
        for r in a.responses {
            if let Some(found) = r.pointer("/response_range/kvs") {
                let found: Vec<Kv> = serde_json::from_value(found.clone()).map_err(|e| {
                    StoreFailure::new(op, Kind::Unreachable, format!("unexpected answer: {e}"))
                })?;
                kvs.extend(found);
            }
        }
        Ok(TxnAnswer {
            revision: a.header.revision,
            succeeded: a.succeeded,
            kvs,
        })
    }

    /// A new lease: its id and the time to live etcd granted.
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), StoreFailure> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "ID", default, with = "int64")]
            id: i64,
            #[serde(rename = "TTL", default, with = "int64")]
            ttl: i64,
        }
        let a: Answer = self
            .call(
                Op::Lease,
                "/v3/lease/grant",
                json!({"TTL": ttl.as_secs().to_string()}),
            )
            .await?;
        Ok((a.id, Duration::from_secs(a.ttl.max(0) as u64)))
    }

    /// One keepalive; false when etcd no longer has the lease.
    pub async fn keep_alive(&self, id: i64) -> Result<bool, StoreFailure> {
        let a: Value = self
            .call(
                Op::Lease,
                "/v3/lease/keepalive",
                json!({"ID": id.to_string()}),
            )
            .await?;
        let ttl = a.pointer("/result/TTL").map(int64::of).unwrap_or(0);
        Ok(ttl > 0)
    }

    pub async fn revoke(&self, id: i64) -> Result<(), StoreFailure> {
        let _: Value = self
            .call(
                Op::Release,
                "/v3/lease/revoke",
                json!({"ID": id.to_string()}),
            )
            .await?;
        Ok(())
    }

    /// Watches every key under `prefix` from revision `from`.
    pub async fn watch(&self, prefix: &str, from: i64) -> Result<Watch, StoreFailure> {
        let mut create = range(prefix);
        create["start_revision"] = json!(from.to_string());
        let body = json!({ "create_request": create });
        // The stream is unbounded; its start is not (a partition must not hang it).
        let answer = tokio::time::timeout(
            self.cfg.timeout,
            self.send(Op::Read, "/v3/watch", &body, false),
        )
        .await
        .map_err(|_| StoreFailure::timeout(Op::Read, self.cfg.timeout))??;
        Ok(Watch {
            lines: Lines::new(answer),
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        op: Op,
        path: &str,
        body: Value,
    ) -> Result<T, StoreFailure> {
        let answer = self.send(op, path, &body, true).await?;
        transport::read_json(op, answer, self.cfg.timeout).await
    }

    /// Sends one request, trying each endpoint once from the one that answered last;
    /// a refused authentication token is renewed once.
    async fn send(
        &self,
        op: Op,
        path: &str,
        body: &Value,
        bounded: bool,
    ) -> Result<reqwest::Response, StoreFailure> {
        let n = self.cfg.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let at = (first + i) % n;
            match self.send_to(op, at, path, body, bounded).await {
                Ok(answer) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(answer);
                }
                // Our credentials or permissions, or the condition: no other member
                // would answer differently.
                Err(f) if f.kind == Kind::AuthRefused => return Err(f),
                Err(f) => last = Some(f),
            }
        }
        Err(last.unwrap_or_else(|| StoreFailure::new(op, Kind::Unreachable, "no endpoint")))
    }

    async fn send_to(
        &self,
        op: Op,
        at: usize,
        path: &str,
        body: &Value,
        bounded: bool,
    ) -> Result<reqwest::Response, StoreFailure> {
        let base = self.cfg.endpoints[at].as_str().trim_end_matches('/');
        transport::renewing(|renew| self.attempt(op, base, path, body, bounded, renew)).await
    }

    async fn attempt(
        &self,
        op: Op,
        base: &str,
        path: &str,
        body: &Value,
        bounded: bool,
        renew: bool,
    ) -> Attempt<reqwest::Response, StoreFailure> {
        let token = match self.token(op, base, renew).await {
            Ok(token) => token,
            Err(f) => return Attempt::Done(Err(f)),
        };
        let mut request = self
            .http
            .post(format!("{base}{path}"))
            // A member cut off from the others must not answer from its stale copy.
            .header("Grpc-Metadata-hasleader", "true")
            .json(body);
        if bounded {
            request = request.timeout(self.cfg.timeout);
        }
        if let Some(t) = token {
            request = request.header("Authorization", t);
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => return Attempt::Done(Err(transport::unanswered(op, self.cfg.timeout, &e))),
        };
        let status = answer.status().as_u16();
        if answer.status().is_success() {
            return Attempt::Done(Ok(answer));
        }
        let error = transport::error_answer(answer, self.cfg.timeout).await;
        let failure =
            |kind| StoreFailure::new(op, kind, format!("HTTP {status}: {}", error.message));
        match (status, error.code.unwrap_or(0)) {
            // An expired or revoked authentication token (gRPC UNAUTHENTICATED).
            (_, 16) | (401, _) if self.cfg.username.is_some() => {
                Attempt::Refused(failure(Kind::AuthRefused))
            }
            (_, 16 | 7) | (401 | 403, _) => Attempt::Done(Err(failure(Kind::AuthRefused))),
            (_, 4) | (408 | 504, _) => Attempt::Done(Err(failure(Kind::Timeout))),
            _ => Attempt::Done(Err(failure(Kind::Unreachable))),
        }
    }

    /// The authentication token, fetched on first use and again when `renew`.
    async fn token(&self, op: Op, base: &str, renew: bool) -> Result<Option<String>, StoreFailure> {
        let (Some(user), Some(password)) = (&self.cfg.username, &self.cfg.password) else {
            return Ok(None);
        };
        let mut token = self.token.lock().await;
        if let Some(t) = token.as_ref().filter(|_| !renew) {
            return Ok(Some(t.clone()));
        }
        let password = password
            .read()
            .map_err(|e| StoreFailure::new(op, Kind::AuthRefused, e.to_string()))?;
        let answer = self
            .http
            .post(format!("{base}/v3/auth/authenticate"))
            .timeout(self.cfg.timeout)
            .json(&json!({"name": user, "password": password.expose_secret()}))
            .send()
            .await
            .map_err(|e| StoreFailure::new(op, Kind::Unreachable, error_chain(&e)))?;
        if !answer.status().is_success() {
            let error = transport::error_answer(answer, self.cfg.timeout).await;
            return Err(StoreFailure::new(
                op,
                Kind::AuthRefused,
                format!("etcd refused user {user}: {}", error.message),
            ));
        }
        let a: Value = transport::read_json(op, answer, self.cfg.timeout).await?;
        let Some(t) = a["token"].as_str() else {
            return Err(StoreFailure::new(
                op,
                Kind::AuthRefused,
                format!("etcd gave user {user} no token"),
            ));
        };
        *token = Some(t.to_owned());
        Ok(Some(t.to_owned()))
    }
}

/// A running watch: newline-delimited JSON messages in one long answer.
pub struct Watch {
    lines: Lines,
}

impl Watch {
    /// The next message; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<WatchBatch>, StoreFailure> {
        match self.lines.next().await? {
            Some(line) => parse_watch(&line).map(Some),
            None => Ok(None),
        }
    }
}
