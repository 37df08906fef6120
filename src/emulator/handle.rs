//! The running emulator as a test or `demo` holds it: where it listens, and the switches
//! and counters of its control API.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::emulator::memory::{Shared, lock};
use crate::emulator::model::{
    AUTHORIZE_PATH, EmulatorConfig, Fault, RESOURCE_PATH, RefreshTokenStatus, Rotation, Stats,
    TOKEN_PATH, TlsIdentity, TokenRequest,
};
use crate::emulator::server::{serve, tls_acceptor};

/// A running emulator; dropping it stops the listener.
pub struct Emulator {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Emulator {
    /// Binds `addr` (use port 0 for any) and serves plain HTTP until dropped.
    pub async fn start(cfg: EmulatorConfig, addr: SocketAddr) -> std::io::Result<Emulator> {
        Emulator::start_with(cfg, addr, None).await
    }

    /// As [`Emulator::start`], serving HTTPS with `tls` when given.
    pub async fn start_with(
        cfg: EmulatorConfig,
        addr: SocketAddr,
        tls: Option<TlsIdentity>,
    ) -> std::io::Result<Emulator> {
        let acceptor = tls.map(tls_acceptor).transpose()?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg, format!("{scheme}://{addr}")));
        let task = tokio::spawn(serve(listener, acceptor, shared.clone()));
        Ok(Emulator {
            addr,
            scheme,
            shared,
            task,
        })
    }

    /// Stops serving (and drops open connections), as if the server went away.
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token_url(&self) -> String {
        format!("{}://{}{TOKEN_PATH}", self.scheme, self.addr)
    }

    pub fn resource_url(&self) -> String {
        format!("{}://{}{RESOURCE_PATH}", self.scheme, self.addr)
    }

    pub fn config(&self) -> EmulatorConfig {
        lock(&self.shared.cfg).clone()
    }

    /// Replaces the client secret (a rotated secret in the dashboard).
    pub fn set_client_secret(&self, secret: &str) {
        lock(&self.shared.cfg).client_secret = secret.to_owned();
    }

    /// A refresh token starting a new family, as an authorization would give.
    pub fn issue_refresh_token(&self) -> String {
        self.shared.issue_bootstrap()
    }

    /// The issuer identifier, for `issuer = ...` (RFC 8414 metadata is served).
    pub fn issuer(&self) -> String {
        self.shared.base.clone()
    }

    pub fn authorize_url(&self) -> String {
        format!("{}{AUTHORIZE_PATH}", self.shared.base)
    }

    /// From now on, each token request without a queued fault gets a random one of
    /// `faults` with probability `p` (`p = 0` stops it).
    pub fn set_chaos(&self, p: f64, faults: Vec<Fault>) {
        lock(&self.shared.inner).chaos = (p > 0.0 && !faults.is_empty()).then_some((p, faults));
    }

    /// Makes the authorization endpoint answer `error=<code>` (e.g. `access_denied`), or
    /// approve again with `None`.
    pub fn set_authorize_error(&self, code: Option<&str>) {
        lock(&self.shared.inner).authorize_error = code.map(str::to_owned);
    }

    /// Queues a fault for the next token request.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.inner).faults.push_back(fault);
    }

    /// Revokes every family, as "Revoke Key" in the dashboard would.
    pub fn revoke_all(&self) {
        let mut inner = lock(&self.shared.inner);
        let families: Vec<u64> = inner.refresh.values().map(|r| r.family).collect();
        inner.revoked.extend(families);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.inner).stats.clone()
    }

    pub fn rotations(&self) -> Vec<Rotation> {
        lock(&self.shared.inner).rotations.clone()
    }

    /// Every token request received, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.inner).requests.clone()
    }

    /// Every access and refresh token it ever issued (for secret scans).
    pub fn issued_tokens(&self) -> Vec<String> {
        let inner = lock(&self.shared.inner);
        inner
            .refresh
            .keys()
            .chain(inner.access.keys())
            .cloned()
            .collect()
    }

    /// What the server knows of a refresh token.
    pub fn refresh_token_status(&self, token: &str) -> RefreshTokenStatus {
        let inner = lock(&self.shared.inner);
        match inner.refresh.get(token) {
            None => RefreshTokenStatus::Unknown,
            Some(r) if inner.revoked.contains(&r.family) => RefreshTokenStatus::Revoked,
            Some(r) => match &r.rotated {
                Some((at, _)) => RefreshTokenStatus::Rotated { ago: at.elapsed() },
                None => RefreshTokenStatus::Live,
            },
        }
    }

    /// Whether `access_token` is currently accepted.
    pub fn accepts(&self, access_token: &str) -> bool {
        self.shared.accepts(access_token)
    }
}
