//! The few calls of the Kubernetes API tokend makes, over the HTTP client it already
//! has: get, list and watch one named object, create it, replace it conditionally.
//! Chosen over kube-rs, which cost 3.04 MB of binary for much that tokend never calls
//! (measured; docs/replicas.md), and has no leader election to offer.
//!
//! The service account token is read from its file at least once a minute and again
//! after a 401: the kubelet rotates it, and a client that keeps the first one is locked
//! out within the hour.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::coordination::kubernetes::ApiTarget;
use crate::coordination::error::{Kind, Op, StoreFailure};
use crate::coordination::transport::{self, Attempt, Lines};

/// How long a token read from its file is used before reading the file again.
pub const TOKEN_REREAD: Duration = Duration::from_secs(60);

/// The two kinds of object tokend keeps per credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Lease,
    Secret,
}

/// What a create or a conditional replace came to.
pub enum Written<T> {
    Done(T),
    /// 409: the object changed since it was read (or, for a create, exists already);
    /// for a replace also 404, deleted since it was read.
    Conflict,
}

/// One event of a watch.
pub enum Event<T> {
    Put(T),
    Deleted(T),
    /// 410 Gone: the version watched from is too old; list again.
    Gone,
}

pub struct Api {
    target: ApiTarget,
    timeout: Duration,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<(SecretString, Instant)>>,
}

impl Api {
    pub fn new(target: ApiTarget, timeout: Duration, lease: Duration) -> Result<Api, StoreFailure> {
        let http = transport::client(timeout, lease, target.ca_file.as_deref(), None)?;
        Ok(Api {
            target,
            timeout,
            http,
            token: tokio::sync::Mutex::new(None),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.target.namespace
    }

    fn collection(&self, r: Resource) -> String {
        let base = self.target.server.as_str().trim_end_matches('/');
        let ns = &self.target.namespace;
        match r {
            Resource::Lease => {
                format!("{base}/apis/coordination.k8s.io/v1/namespaces/{ns}/leases")
            }
            Resource::Secret => format!("{base}/api/v1/namespaces/{ns}/secrets"),
        }
    }

    /// The object named `name`, and the collection's resourceVersion to watch from.
    /// A list (by `fieldSelector`) rather than a get, so that a missing object still
    /// gives a version to watch from.
    pub async fn list<T: DeserializeOwned>(
        &self,
        op: Op,
        r: Resource,
        name: &str,
    ) -> Result<(Option<T>, String), StoreFailure> {
        #[derive(Deserialize)]
        struct ListMeta {
            #[serde(rename = "resourceVersion", default)]
            resource_version: String,
        }
        #[derive(Deserialize)]
        struct List<T> {
            metadata: ListMeta,
            #[serde(default = "Vec::new")]
            items: Vec<T>,
        }
        let url = format!(
            "{}?fieldSelector=metadata.name%3D{name}",
            self.collection(r)
        );
        let answer = self
            .send(op, reqwest::Method::GET, &url, None, true)
            .await
            .map_err(|e| e.into_failure(op))?;
        let list: List<T> = transport::read_json(op, answer, self.timeout).await?;
        Ok((
            list.items.into_iter().next(),
            list.metadata.resource_version,
        ))
    }

    /// The object named `name`; `None` when there is none.
    pub async fn get<T: DeserializeOwned>(
        &self,
        op: Op,
        r: Resource,
        name: &str,
    ) -> Result<Option<T>, StoreFailure> {
        let url = format!("{}/{name}", self.collection(r));
        match self.send(op, reqwest::Method::GET, &url, None, true).await {
            Ok(answer) => transport::read_json(op, answer, self.timeout)
                .await
                .map(Some),
            Err(Refusal::Status(404, _)) => Ok(None),
            Err(e) => Err(e.into_failure(op)),
        }
    }

    /// Creates `object` (a POST); `Conflict` when it exists already.
    pub async fn create<T: serde::Serialize + DeserializeOwned>(
        &self,
        op: Op,
        r: Resource,
        object: &T,
    ) -> Result<Written<T>, StoreFailure> {
        let url = self.collection(r);
        self.write(op, reqwest::Method::POST, &url, object).await
    }

    /// Replaces the object named `name` (a PUT) if its resourceVersion is still the one
    /// in `object`'s metadata.
    pub async fn replace<T: serde::Serialize + DeserializeOwned>(
        &self,
        op: Op,
        r: Resource,
        name: &str,
        object: &T,
    ) -> Result<Written<T>, StoreFailure> {
        let url = format!("{}/{name}", self.collection(r));
        self.write(op, reqwest::Method::PUT, &url, object).await
    }

    async fn write<T: serde::Serialize + DeserializeOwned>(
        &self,
        op: Op,
        method: reqwest::Method,
        url: &str,
        object: &T,
    ) -> Result<Written<T>, StoreFailure> {
        let body = serde_json::to_vec(object).unwrap_or_default();
        match self.send(op, method, url, Some(body), true).await {
            Ok(answer) => transport::read_json(op, answer, self.timeout)
                .await
                .map(Written::Done),
            Err(Refusal::Status(409 | 404, _)) => Ok(Written::Conflict),
            Err(e) => Err(e.into_failure(op)),
        }
    }

    /// Watches the object named `name` from `version` (exclusive).
    pub async fn watch<T: DeserializeOwned>(
        &self,
        r: Resource,
        name: &str,
        version: &str,
    ) -> Result<Watch<T>, StoreFailure> {
        let url = format!(
            "{}?watch=1&fieldSelector=metadata.name%3D{name}&resourceVersion={version}",
            self.collection(r)
        );
        // The stream is unbounded; its start is not (a partition must not hang it).
        let started = tokio::time::timeout(
            self.timeout,
            self.send(Op::Read, reqwest::Method::GET, &url, None, false),
        )
        .await
        .map_err(|_| StoreFailure::timeout(Op::Read, self.timeout))?;
        let lines = match started {
            Ok(answer) => Some(Lines::new(answer)),
            Err(Refusal::Status(410, _)) => None,
            Err(e) => return Err(e.into_failure(Op::Read)),
        };
        Ok(Watch {
            lines,
            _object: std::marker::PhantomData,
        })
    }

    /// One request, bounded by the timeout unless it is a watch; after a 401 the token
    /// file is read again and the request sent once more.
    async fn send(
        &self,
        op: Op,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
        bounded: bool,
    ) -> Result<reqwest::Response, Refusal> {
        transport::renewing(|reread| {
            self.attempt(op, &method, url, body.as_deref(), bounded, reread)
        })
        .await
    }

    async fn attempt(
        &self,
        op: Op,
        method: &reqwest::Method,
        url: &str,
        body: Option<&[u8]>,
        bounded: bool,
        reread: bool,
    ) -> Attempt<reqwest::Response, Refusal> {
        let mut request = self
            .http
            .request(method.clone(), url)
            .header("Accept", "application/json");
        if let Some(b) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(b.to_vec());
        }
        if bounded {
            request = request.timeout(self.timeout);
        }
        match self.token(op, reread).await {
            Ok(Some(token)) => request = request.bearer_auth(token.expose_secret()),
            Ok(None) => {}
            Err(e) => return Attempt::Done(Err(e)),
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => {
                return Attempt::Done(Err(Refusal::Failed(transport::unanswered(
                    op,
                    self.timeout,
                    &e,
                ))));
            }
        };
        let status = answer.status().as_u16();
        if answer.status().is_success() {
            return Attempt::Done(Ok(answer));
        }
        let refusal = Refusal::Status(
            status,
            transport::error_answer(answer, self.timeout).await.message,
        );
        if status == 401 && self.target.token_file.is_some() {
            Attempt::Refused(refusal)
        } else {
            Attempt::Done(Err(refusal))
        }
    }

    /// The bearer token: from its file, read again when older than [`TOKEN_REREAD`] or
    /// when `reread`. Read off the runtime's threads (a slow volume must not stall them).
    async fn token(&self, op: Op, reread: bool) -> Result<Option<SecretString>, Refusal> {
        let Some(file) = &self.target.token_file else {
            return Ok(None);
        };
        let mut cached = self.token.lock().await;
        if let Some((token, at)) = cached.as_ref()
            && !reread
            && at.elapsed() < TOKEN_REREAD
        {
            return Ok(Some(token.clone()));
        }
        let token = read_token(file.clone())
            .await
            .map_err(|why| Refusal::Failed(StoreFailure::new(op, Kind::AuthRefused, why)))?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(Some(token))
    }
}

async fn read_token(file: PathBuf) -> Result<SecretString, String> {
    let read = tokio::task::spawn_blocking(move || {
        std::fs::read_to_string(&file)
            .map(|t| SecretString::from(t.trim().to_owned()))
            .map_err(|e| format!("the service account token {}: {e}", file.display()))
    });
    match read.await {
        Ok(result) => result,
        Err(e) => Err(format!("reading the token failed: {e}")),
    }
}

/// A request the API server did not carry out: an HTTP status the caller may expect
/// (404, 409, 410), or a failure.
enum Refusal {
    Status(u16, String),
    Failed(StoreFailure),
}

impl Refusal {
    fn into_failure(self, op: Op) -> StoreFailure {
        let (status, message) = match self {
            Refusal::Failed(f) => return f,
            Refusal::Status(s, m) => (s, m),
        };
        let kind = match status {
            401 | 403 => Kind::AuthRefused,
            408 | 504 => Kind::Timeout,
            // What tokend sent was refused as invalid, or the object is not tokend's.
            400 | 422 => Kind::Corrupt,
            _ => Kind::Unreachable,
        };
        StoreFailure::new(op, kind, format!("HTTP {status}: {message}"))
    }
}

/// A running watch of one object.
pub struct Watch<T> {
    /// `None`: the API server answered 410 Gone at once.
    lines: Option<Lines>,
    _object: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Watch<T> {
    /// The next event; `None` when the stream ended (the server closes watches now and
    /// then: list again).
    pub async fn next(&mut self) -> Result<Option<Event<T>>, StoreFailure> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "type")]
            kind: String,
            object: Value,
        }
        let Some(lines) = &mut self.lines else {
            return Ok(Some(Event::Gone));
        };
        loop {
            let Some(line) = lines.next().await? else {
                return Ok(None);
            };
            let unexpected = |e: serde_json::Error| {
                StoreFailure::new(
                    Op::Read,
                    Kind::Unreachable,
                    format!("unexpected watch event: {e}"),
                )
            };
            let raw: Raw = serde_json::from_slice(&line).map_err(unexpected)?;
            let object = || serde_json::from_value::<T>(raw.object.clone()).map_err(unexpected);
            return Ok(Some(match raw.kind.as_str() {
                "ADDED" | "MODIFIED" => Event::Put(object()?),
                "DELETED" => Event::Deleted(object()?),
                "ERROR" if raw.object["code"].as_i64() == Some(410) => Event::Gone,
                "ERROR" => {
                    let message = transport::scrubbed(raw.object["message"].as_str().unwrap_or(""));
                    return Err(StoreFailure::new(
                        Op::Read,
                        Kind::Unreachable,
                        format!("the watch failed: {message}"),
                    ));
                }
                // BOOKMARK and what later versions add.
                _ => continue,
            }));
        }
    }
}
