//! The small HTTP/1 server under the emulator, the health endpoints and login's
//! callback: an accept loop whose connections end with it, and hyper serving one
//! connection, both within [`Limits`] so that clients cannot take the descriptors or the
//! memory the rest of the process needs.

use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use tokio::net::{TcpListener, TcpStream};

/// What a server's clients may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub connections: usize,
    /// Time to send a request's head, and to start the next one on a kept-alive
    /// connection: a slow or idle client is cut off after it.
    pub head_timeout: Duration,
    /// The most a connection may buffer (a request's head cannot be larger).
    pub buffer: usize,
}

impl Limits {
    /// For servers that any local process, or the pod network, can reach: the health
    /// endpoints and login's callback. A few dozen connections of a few KiB each.
    pub const GUARDED: Limits = Limits {
        connections: 64,
        head_timeout: Duration::from_secs(5),
        buffer: 16 * 1024,
    };

    /// The emulator: a test double for the tests, which open many connections at once.
    pub const EMULATOR: Limits = Limits {
        connections: 4096,
        head_timeout: Duration::from_secs(30),
        buffer: 64 * 1024,
    };
}

/// Accepts connections until the task is dropped; `serve` handles each one. Connections
/// live in a set owned here, so dropping the server also closes kept-alive ones. Beyond
/// `limits.connections`, a connection is closed as it is accepted (it waited in the
/// kernel's backlog until then, holding none of this process's descriptors).
pub async fn accept_loop<F, Fut>(listener: TcpListener, limits: Limits, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((stream, _)) if connections.len() < limits.connections => {
                connections.spawn(serve(stream));
            }
            Ok((stream, _)) => drop(stream),
            // Out of descriptors or similar: pause rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Serves HTTP/1 requests on one connection with `service` until it closes, or until a
/// client is slower than `limits` allow.
pub async fn serve_http1<I, S, B>(io: I, limits: Limits, service: S)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.buffer)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}
