//! The health endpoints (design.md §9): `/healthz` (the loops are alive), `/readyz` (every
//! credential has an unexpired token written to all its outputs) and `/metrics`
//! (Prometheus).

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::http_server::{Limits, accept_loop, serve_http1};
use crate::telemetry::board::Board;

/// Serves the health endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, board: Arc<Board>) {
    accept_loop(listener, Limits::GUARDED, move |stream| {
        let board = board.clone();
        let service = hyper::service::service_fn(move |req| {
            let answer = answer(&board, &req);
            async move { Ok::<_, std::convert::Infallible>(answer) }
        });
        serve_http1(stream, Limits::GUARDED, service)
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
            let dead = board.ended();
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
