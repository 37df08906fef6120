//! What the emulator remembers: every token it issued, the families revoked, the queued
//! faults and the counters; behind one lock, shared by the handle and the server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::emulator::model::{EmulatorConfig, Fault, Rotation, Stats, TokenRequest, random_text};

pub struct RefreshRecord {
    pub family: u64,
    pub bootstrap: bool,
    pub issued_at: SystemTime,
    pub lifetime: Duration,
    /// Set once rotated: when, and the answer given, for the grace window.
    pub rotated: Option<(Instant, serde_json::Value)>,
}

pub struct AccessRecord {
    pub family: u64,
    pub expires_at: SystemTime,
}

#[derive(Default)]
pub struct Inner {
    pub refresh: HashMap<String, RefreshRecord>,
    pub access: HashMap<String, AccessRecord>,
    pub revoked: HashSet<u64>,
    pub next_family: u64,
    pub faults: VecDeque<Fault>,
    pub stats: Stats,
    pub rotations: Vec<Rotation>,
    pub requests: Vec<TokenRequest>,
    pub codes: HashMap<String, CodeRecord>,
    /// Chaos: when no fault is queued, each request gets one of these with probability p.
    pub chaos: Option<(f64, Vec<Fault>)>,
    /// The error the authorization endpoint answers with, instead of a code.
    pub authorize_error: Option<String>,
    /// The `jti` of every client assertion accepted: one presented twice is refused.
    pub assertion_ids: HashSet<String>,
}

impl Inner {
    pub fn new_family(&mut self) -> u64 {
        self.next_family += 1;
        self.next_family
    }

    /// A new live refresh token of `family`.
    pub fn new_refresh_token(
        &mut self,
        family: u64,
        bootstrap: bool,
        lifetime: Duration,
    ) -> String {
        let token = format!("blnk_rt_{}", random_text(32));
        self.refresh.insert(
            token.clone(),
            RefreshRecord {
                family,
                bootstrap,
                issued_at: SystemTime::now(),
                lifetime,
                rotated: None,
            },
        );
        token
    }

    /// A new access token of `family`, as the body of a token answer.
    pub fn issue_access(
        &mut self,
        cfg: &EmulatorConfig,
        family: u64,
        fault: &Option<Fault>,
    ) -> serde_json::Value {
        let access = format!("blnk_at_{}", random_text(32));
        self.access.insert(
            access.clone(),
            AccessRecord {
                family,
                expires_at: SystemTime::now() + cfg.access_lifetime,
            },
        );
        let mut body = serde_json::json!({
            "access_token": access,
            "token_type": "Bearer",
            "scope": "data:read data:write",
        });
        if fault != &Some(Fault::OmitExpiresIn) {
            body["expires_in"] = serde_json::json!(cfg.access_lifetime.as_secs().max(1));
        }
        match fault {
            Some(Fault::ExpiresIn { value }) => body["expires_in"] = value.clone(),
            Some(Fault::AccessToken { value }) => body["access_token"] = serde_json::json!(value),
            _ => {}
        }
        body
    }
}

/// An authorization code waiting for its exchange.
pub struct CodeRecord {
    pub challenge: String,
    pub redirect_uri: String,
    pub issued: Instant,
}

pub struct Shared {
    pub cfg: Mutex<EmulatorConfig>,
    pub inner: Mutex<Inner>,
    /// `<scheme>://<addr>`: the issuer, and the base of every endpoint.
    pub base: String,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind: still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// A fresh memory for a server whose endpoints start with `base`.
    pub fn new(cfg: EmulatorConfig, base: String) -> Shared {
        Shared {
            cfg: Mutex::new(cfg),
            inner: Mutex::new(Inner::default()),
            base,
        }
    }

    pub fn issue_bootstrap(&self) -> String {
        let lifetime = lock(&self.cfg).access_lifetime;
        let mut inner = lock(&self.inner);
        let family = inner.new_family();
        inner.new_refresh_token(family, true, lifetime)
    }

    pub fn accepts(&self, access_token: &str) -> bool {
        let inner = lock(&self.inner);
        inner
            .access
            .get(access_token)
            .is_some_and(|a| a.expires_at > SystemTime::now() && !inner.revoked.contains(&a.family))
    }
}
