//! The board of every credential's health, and the HTTP endpoints that show it (SPEC §9):
//! `/healthz` (the loops are alive), `/readyz` (every credential has an unexpired token
//! written to all its outputs) and `/metrics` (Prometheus).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::credential::Health;
use crate::http_server::{accept_loop, serve_http1};
use crate::metrics::Metrics;

/// What the daemon knows of its credentials, shared with the health server.
#[derive(Default)]
pub struct Board {
    entries: RwLock<BTreeMap<String, watch::Receiver<Health>>>,
    /// Poked whenever a credential's health changes.
    pub changed: Notify,
    pub metrics: Metrics,
}

/// One credential's health as of now; `alive` is false once its loop has ended.
pub struct Entry {
    pub name: String,
    pub health: Health,
    pub alive: bool,
}

impl Board {
    pub fn set(&self, name: &str, health: watch::Receiver<Health>) {
        self.write().insert(name.to_owned(), health);
        self.changed.notify_one();
    }

    pub fn remove(&self, name: &str) {
        self.write().remove(name);
        self.metrics.forget(name);
        self.changed.notify_one();
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, watch::Receiver<Health>>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn entries(&self) -> Vec<Entry> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|(name, rx)| Entry {
                name: name.clone(),
                health: rx.borrow().clone(),
                // The sender lives as long as the credential's loop.
                alive: rx.has_changed().is_ok(),
            })
            .collect()
    }

    /// `Ok` when every credential is ready, else a line per credential that is not.
    pub fn readiness(&self) -> Result<(), String> {
        let reasons: Vec<String> = self
            .entries()
            .into_iter()
            .filter(|e| !e.health.ready)
            .map(|e| {
                format!(
                    "{}: {}",
                    e.name,
                    e.health.reason.as_deref().unwrap_or("not ready")
                )
            })
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("\n"))
        }
    }

    /// A one-line summary for systemd's STATUS=.
    pub fn summary(&self) -> String {
        let entries = self.entries();
        let ready = entries.iter().filter(|e| e.health.ready).count();
        let mut text = format!("{ready}/{} credentials ready", entries.len());
        let blocked: Vec<&str> = entries
            .iter()
            .filter(|e| e.health.blocked)
            .map(|e| e.name.as_str())
            .collect();
        if !blocked.is_empty() {
            text.push_str(&format!("; blocked: {}", blocked.join(", ")));
        }
        text
    }

    fn metrics_text(&self) -> String {
        let now = SystemTime::now();
        for e in self.entries() {
            self.metrics.observe(&e.name, &e.health, now);
        }
        self.metrics.encode()
    }
}

/// Serves the health endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, board: Arc<Board>) {
    accept_loop(listener, move |stream| {
        let board = board.clone();
        let service = hyper::service::service_fn(move |req| {
            let answer = answer(&board, &req);
            async move { Ok::<_, std::convert::Infallible>(answer) }
        });
        serve_http1(stream, service)
    })
    .await
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

fn answer(board: &Board, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match req.uri().path() {
        "/healthz" => {
            let dead: Vec<String> = board
                .entries()
                .into_iter()
                .filter(|e| !e.alive)
                .map(|e| e.name)
                .collect();
            if dead.is_empty() {
                text(StatusCode::OK, PLAIN, "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    format!("loop ended: {}\n", dead.join(", ")),
                )
            }
        }
        "/readyz" => match board.readiness() {
            Ok(()) => text(StatusCode::OK, PLAIN, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{why}\n")),
        },
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            board.metrics_text(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}
