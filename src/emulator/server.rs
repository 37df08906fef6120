//! The emulator's HTTP server: TLS when asked, and which handler answers which path.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use tokio::net::TcpListener;

use crate::emulator::authorize::authorize;
use crate::emulator::memory::{Shared, lock};
use crate::emulator::model::{
    AUTHORIZE_PATH, Fault, METADATA_PATH, RESOURCE_PATH, TOKEN_PATH, TlsIdentity,
};
use crate::emulator::reply::{Answer, Dropped, json, read_body};
use crate::emulator::token::token;
use crate::http_server::{Limits, accept_loop, serve_http1};

pub fn tls_acceptor(identity: TlsIdentity) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    };
    crate::tls::install_crypto_provider();
    let certs = CertificateDer::pem_slice_iter(&identity.cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(|e| invalid(&e))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &identity.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| invalid(&e))?)
                    .map_err(|e| invalid(&e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| invalid(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    accept_loop(listener, Limits::EMULATOR, move |stream| {
        let (shared, tls) = (shared.clone(), tls.clone());
        async move {
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            match tls {
                None => serve_http1(stream, Limits::EMULATOR, service).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_http1(stream, Limits::EMULATOR, service).await;
                    }
                }
            }
        }
    })
    .await
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Answer, Dropped> {
    let path = req.uri().path().to_owned();
    Ok(match (req.method(), path.as_str()) {
        (&Method::POST, TOKEN_PATH) => return token(shared, req).await,
        (&Method::GET, RESOURCE_PATH) => resource(&shared, &req),
        (&Method::GET, AUTHORIZE_PATH) => authorize(&shared, &req),
        (&Method::GET, METADATA_PATH) => json(
            StatusCode::OK,
            serde_json::json!({
                "issuer": shared.base,
                "authorization_endpoint": format!("{}{AUTHORIZE_PATH}", shared.base),
                "token_endpoint": format!("{}{TOKEN_PATH}", shared.base),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"],
            }),
        ),
        (&Method::GET, "/_emulator/stats") => {
            json(StatusCode::OK, serde_json::json!(lock(&shared.inner).stats))
        }
        // `?count=N`: N new chains at once (benchmarks with tens of thousands).
        (&Method::POST, "/_emulator/bootstrap") => match bootstrap_count(&req) {
            None => json(
                StatusCode::OK,
                serde_json::json!({"refresh_token": shared.issue_bootstrap()}),
            ),
            Some(n) => json(
                StatusCode::OK,
                serde_json::json!({
                    "refresh_tokens": (0..n).map(|_| shared.issue_bootstrap()).collect::<Vec<_>>()
                }),
            ),
        },
        (&Method::POST, "/_emulator/faults") => match read_body(req)
            .await
            .and_then(|b| serde_json::from_slice::<Vec<Fault>>(&b).ok())
        {
            Some(faults) => {
                lock(&shared.inner).faults.extend(faults);
                json(StatusCode::OK, serde_json::json!({"queued": true}))
            }
            None => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "expected a JSON list of faults"}),
            ),
        },
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        ),
    })
}

/// The `count` of a bootstrap request, if it asks for more than one chain.
fn bootstrap_count(req: &Request<Incoming>) -> Option<usize> {
    form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(k, _)| k == "count")
        .and_then(|(_, v)| v.parse().ok())
}

fn resource(shared: &Shared, req: &Request<Incoming>) -> Answer {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if shared.accepts(token) {
        json(StatusCode::OK, serde_json::json!({"ok": true}))
    } else {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_token"}),
        );
        r.headers_mut().insert(
            "www-authenticate",
            "Bearer error=\"invalid_token\""
                .parse()
                .expect("static header"),
        );
        r
    }
}
