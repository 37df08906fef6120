//! What both stores' connections share: the HTTP client, built for long watches and
//! the store's own CA; a request sent once more with renewed credentials; an error
//! answer read capped and scrubbed; and newline-delimited JSON in one long answer (a
//! watch).

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::coordination::error::{Kind, Op, StoreFailure};
use crate::oauth::http::{BodyError, MAX_BODY, error_chain, read_capped, server_text};

/// A client for one store: no redirects, connections bounded by `timeout`, TLS trusting
/// only `ca` (never the system's roots), and `identity` (a certificate, then its key)
/// when the store asks for one.
pub fn client(
    timeout: Duration,
    lease: Duration,
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<reqwest::Client, StoreFailure> {
    crate::tls::install_crypto_provider();
    let broken = |what: String| StoreFailure::new(Op::Read, Kind::Unreachable, what);
    let read =
        |path: &Path| std::fs::read(path).map_err(|e| broken(format!("{}: {e}", path.display())));
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        // A watch is one long answer: a connection that died silently (a partition)
        // is noticed by TCP keepalive within about a third of the lease.
        .tcp_keepalive((lease / 3).max(Duration::from_secs(1)))
        .tcp_keepalive_interval(Duration::from_secs(1))
        .tcp_keepalive_retries(2u32);
    builder = match ca {
        Some(ca) => builder.tls_certs_only(
            reqwest::Certificate::from_pem_bundle(&read(ca)?)
                .map_err(|e| broken(format!("{}: {e}", ca.display())))?,
        ),
        None => builder.tls_certs_only([]),
    };
    if let Some((cert, key)) = identity {
        let mut pem = read(cert)?;
        pem.extend(read(key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| broken(format!("{}: {e}", cert.display())))?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| broken(format!("cannot build the HTTP client: {e}")))
}

/// A request that got no answer, classified: too slow, or not reached.
pub fn unanswered(op: Op, timeout: Duration, e: &reqwest::Error) -> StoreFailure {
    if e.is_timeout() {
        StoreFailure::timeout(op, timeout)
    } else {
        StoreFailure::new(op, Kind::Unreachable, error_chain(e))
    }
}

/// What one attempt of a store request came to.
pub enum Attempt<T, E> {
    Done(Result<T, E>),
    /// The store refused the credentials this attempt used.
    Refused(E),
}

/// Sends a request (`attempt(renew)`) and, when the store refuses the credentials it
/// used, once more with renewed ones (`renew` true: etcd's authentication token fetched
/// again, Kubernetes' token file read again): a rotated credential costs one request,
/// and one still refused is the store's answer.
pub async fn renewing<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = Attempt<T, E>>,
{
    match attempt(false).await {
        Attempt::Done(result) => result,
        Attempt::Refused(_) => match attempt(true).await {
            Attempt::Done(result) => result,
            Attempt::Refused(e) => Err(e),
        },
    }
}

/// What a store said in an error answer: both put a `message` (and etcd a gRPC `code`)
/// in a JSON object.
pub struct ErrorAnswer {
    pub code: Option<i64>,
    /// Safe to log: a store may quote the value it refused, and a record holds a
    /// refresh token, so every token-like run is cut out, and so are control characters.
    pub message: String,
}

/// The longest message kept from an error answer.
const MAX_MESSAGE: usize = 300;

/// An error answer, read within `timeout` and no larger than [`MAX_BODY`] (a store, or
/// something in front of it, may answer an error with anything).
pub async fn error_answer(answer: reqwest::Response, timeout: Duration) -> ErrorAnswer {
    let bytes = tokio::time::timeout(timeout, read_capped(answer))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let message = match json["message"].as_str() {
        Some(m) => m.to_owned(),
        None => String::from_utf8_lossy(&bytes).into_owned(),
    };
    ErrorAnswer {
        code: json["code"].as_i64(),
        message: scrubbed(&message),
    }
}

/// A store's text, fit for a log line (see [`ErrorAnswer::message`]).
pub fn scrubbed(message: &str) -> String {
    server_text(message).chars().take(MAX_MESSAGE).collect()
}

/// A whole answer's JSON, read within `timeout` and no larger than [`MAX_BODY`].
pub async fn read_json<T: DeserializeOwned>(
    op: Op,
    answer: reqwest::Response,
    timeout: Duration,
) -> Result<T, StoreFailure> {
    let bytes = tokio::time::timeout(timeout, read_capped(answer))
        .await
        .map_err(|_| StoreFailure::timeout(op, timeout))?
        .map_err(|e| {
            let why = match e {
                BodyError::TooLarge => "an answer larger than 64 KiB".to_owned(),
                BodyError::Interrupted(why) => why,
            };
            StoreFailure::new(op, Kind::Unreachable, why)
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| StoreFailure::new(op, Kind::Unreachable, format!("unexpected answer: {e}")))
}

/// The lines of a streamed answer, one at a time.
pub struct Lines {
    answer: reqwest::Response,
    pending: Vec<u8>,
}

impl Lines {
    pub fn new(answer: reqwest::Response) -> Lines {
        Lines {
            answer,
            pending: Vec::new(),
        }
    }

    /// The next non-blank line; `None` when the stream ended. A line may be no longer
    /// than any answer read whole ([`MAX_BODY`]): a record is a few hundred bytes.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, StoreFailure> {
        let broken = |why: String| StoreFailure::new(Op::Read, Kind::Unreachable, why);
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.pending.len() > MAX_BODY {
                return Err(broken("a watch message too large".into()));
            }
            // Cancel-safe: a chunk is either returned whole or not taken at all.
            match self.answer.chunk().await {
                Ok(Some(chunk)) => self.pending.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(e) => return Err(broken(error_chain(&e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusal_never_quotes_a_long_value() {
        let m = super::scrubbed(
            "Secret \"tokend-c\" is invalid: data[state.json]: Invalid value: \"eyJzdGF0ZSI6eyJyZWZyZXNoX3Rva2VuIjoiYmxua19ydF8xMjM0NTY3ODkwIn19\"\n",
        );
        assert_eq!(
            m,
            "Secret \"tokend-c\" is invalid: data[state.json]: Invalid value: \"[redacted]\" "
        );
        assert_eq!(super::scrubbed(&"x".repeat(1000)).len(), super::MAX_MESSAGE);
    }
}
