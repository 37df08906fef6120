//! How the emulator answers: JSON bodies, OAuth errors, and the deliberate hang-up.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

pub type Answer = Response<Full<Bytes>>;

/// An error makes hyper drop the connection without an answer: the "reset" faults.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose")]
pub struct Dropped;

pub fn json(status: StatusCode, body: serde_json::Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    r.headers_mut()
        .insert("cache-control", "no-store".parse().expect("static header"));
    r
}

pub fn oauth_error(status: StatusCode, code: &str, description: &str) -> Answer {
    json(
        status,
        serde_json::json!({"error": code, "error_description": description}),
    )
}

/// The request body, up to 64 KiB.
pub async fn read_body(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}
