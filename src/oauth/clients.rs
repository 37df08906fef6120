//! HTTP clients for token endpoints, shared by credentials with the same settings, with
//! their trust roots and the process-wide cap on requests in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::HttpConfig;

/// Errors building the HTTP client (bad CA file).
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// One of the `http` table's files (`key`): the message says what is wrong with it,
    /// never what it holds.
    #[error("http.{key} {path}: {message}")]
    File {
        key: &'static str,
        path: String,
        message: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// HTTP clients shared by credentials with the same HTTP settings: one connection pool
/// and one set of trust roots for all of them, instead of one per credential.
pub struct Clients {
    cache: Mutex<HashMap<ClientKey, reqwest::Client>>,
    /// Requests in flight across all credentials: a thousand tokens issued in the same
    /// second become a steady trickle, not a burst of connections (and of memory).
    pub(crate) in_flight: Arc<Semaphore>,
}

/// The most token requests one process has in flight at once; a refresh keeps its slot
/// until its answer is on disk, so this also bounds the rotated refresh tokens held
/// only in memory (what a kill -9 can lose on a server without a reuse grace window).
pub const MAX_IN_FLIGHT: usize = 16;

impl Default for Clients {
    fn default() -> Self {
        Clients {
            cache: Mutex::default(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

/// What makes two clients differ. Not the request timeout: requests are timed by their
/// callers ([`super::endpoint`]), so that an answer already in the socket when a
/// stopped process resumes is read rather than dropped by the client's own timer.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    connect_timeout: Duration,
    /// The CA file's content, so that a changed file gets a new client on reload.
    ca_pem: Option<Vec<u8>>,
    /// The client certificate's key and chain (PEM), likewise.
    identity_pem: Option<Vec<u8>>,
    /// False for `http://` token URLs (loopback only), which need no trust roots.
    tls: bool,
}

impl Clients {
    /// A client for these settings (and for `https://` URLs when `tls`), built on first use.
    pub fn get(&self, http: &HttpConfig, tls: bool) -> Result<reqwest::Client, EndpointError> {
        let ca_pem = http
            .ca_file
            .as_deref()
            .map(|path| read_file("ca_file", path))
            .transpose()?;
        let identity_pem = match (&http.client_key_file, &http.client_cert_file) {
            (Some(key), Some(cert)) => {
                let mut pem = read_file("client_key_file", key)?;
                pem.push(b'\n');
                pem.extend(read_file("client_cert_file", cert)?);
                Some(pem)
            }
            _ => None,
        };
        let key = ClientKey {
            connect_timeout: http.connect_timeout,
            ca_pem,
            identity_pem,
            tls,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = cache.get(&key) {
            return Ok(client.clone());
        }
        let client = build_client(&key, http)?;
        cache.insert(key, client.clone());
        Ok(client)
    }
}

/// One of the `http` table's files (`key`), as read for a new client.
fn read_file(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, EndpointError> {
    std::fs::read(path).map_err(|e| EndpointError::File {
        key,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn build_client(key: &ClientKey, http: &HttpConfig) -> Result<reqwest::Client, EndpointError> {
    crate::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(key.connect_timeout)
        // A token endpoint has no business redirecting a POST that carries secrets.
        .redirect(reqwest::redirect::Policy::none())
        // Every request in flight may go to one host; keeping fewer idle connections
        // than that made a refresh storm reconnect (and, over TLS, handshake) for more
        // than half its requests.
        .pool_max_idle_per_host(MAX_IN_FLIGHT);
    if !key.tls {
        // Loading the system's trust roots is most of tokend's start-up time; a client
        // that only speaks plain HTTP to loopback has no use for them.
        builder = builder.tls_certs_only([]);
    }
    if let (Some(pem), Some(path)) = (&key.ca_pem, &http.ca_file) {
        let ca_err = |message: String| EndpointError::File {
            key: "ca_file",
            path: path.display().to_string(),
            message,
        };
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("holds no PEM certificate".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(pem), Some(cert)) = (&key.identity_pem, &http.client_cert_file) {
        // rustls's parse errors name the PEM section, never its content.
        let identity = reqwest::Identity::from_pem(pem).map_err(|e| EndpointError::File {
            key: "client_cert_file",
            path: cert.display().to_string(),
            message: format!(
                "with http.client_key_file, not a PEM certificate and its private key: {}",
                crate::oauth::http::error_chain(&e)
            ),
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| EndpointError::Client(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_with_the_same_http_settings_share_a_client() {
        let clients = Clients::default();
        let http = HttpConfig::default();
        clients.get(&http, true).unwrap();
        clients.get(&http.clone(), true).unwrap();
        let slower = HttpConfig {
            connect_timeout: Duration::from_secs(30),
            ..HttpConfig::default()
        };
        clients.get(&slower, true).unwrap();
        clients.get(&http, false).unwrap();
        assert_eq!(clients.cache.lock().unwrap().len(), 3);
    }
}
