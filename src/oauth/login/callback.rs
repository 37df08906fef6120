//! Where the authorization comes back: a loopback listener (RFC 8252 §7.3) or a URL
//! pasted on stdin, and what its query means (RFC 6749 §4.1.2).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use secrecy::SecretString;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use url::Url;

use crate::config::CredentialConfig;
use crate::http_server::{Limits, accept_loop, serve_http1};
use crate::oauth::http::server_text;
use crate::oauth::login::error::LoginError;
use crate::out::errln;

/// The redirect URI, and the loopback listener that receives it (if it can be bound).
pub async fn redirect(
    cfg: &CredentialConfig,
    port: u16,
    no_browser: bool,
) -> Result<(Url, Option<TcpListener>), LoginError> {
    let configured = cfg.login.redirect_uri.clone();
    let addr = match &configured {
        None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Some(uri) => match loopback_addr(uri) {
            Some(addr) => addr,
            // Not ours to listen on (say, a hosted page): only a pasted URL comes back.
            None if no_browser => return Ok((uri.clone(), None)),
            None => {
                return Err(LoginError::Config(format!(
                    "redirect_uri {uri} is not a loopback http:// address tokend can listen on; use --no-browser and paste the URL you are sent to"
                )));
            }
        },
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if no_browser => {
            errln!("tokend: not listening on {addr} ({e}); paste the URL instead");
            let uri = configured.unwrap_or_else(|| default_redirect(addr));
            return Ok((uri, None));
        }
        Err(e) => {
            return Err(LoginError::Other(format!(
                "cannot listen on {addr} for the redirect: {e}; choose another --port, or use --no-browser"
            )));
        }
    };
    let bound = listener
        .local_addr()
        .map_err(|e| LoginError::Other(e.to_string()))?;
    Ok((
        configured.unwrap_or_else(|| default_redirect(bound)),
        Some(listener),
    ))
}

fn default_redirect(addr: SocketAddr) -> Url {
    Url::parse(&format!("http://{addr}/callback")).expect("a socket address makes a valid URL")
}

/// Where to listen for `uri`, if it is a plain-HTTP loopback address.
fn loopback_addr(uri: &Url) -> Option<SocketAddr> {
    if uri.scheme() != "http" {
        return None;
    }
    let ip = match uri.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
        url::Host::Domain(_) => return None,
    };
    ip.is_loopback()
        .then(|| SocketAddr::new(ip, uri.port_or_known_default().unwrap_or(80)))
}

/// Answers the browser's redirect and passes its query on. Only a redirect carrying this
/// login's `state` counts: any local process can reach the port, and one without it is
/// answered 400 and ignored (its text never reaches the terminal).
pub async fn serve_callback(
    listener: TcpListener,
    path: String,
    state: String,
    tx: mpsc::Sender<String>,
) {
    let expected = Arc::new((path, state));
    accept_loop(listener, Limits::GUARDED, move |stream| {
        let (expected, tx) = (expected.clone(), tx.clone());
        async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (expected, tx) = (expected.clone(), tx.clone());
                async move { Ok::<_, Infallible>(callback_page(&req, &expected.0, &expected.1, &tx)) }
            });
            serve_http1(stream, Limits::GUARDED, service).await;
        }
    })
    .await;
}

fn callback_page(
    req: &Request<Incoming>,
    path: &str,
    state: &str,
    tx: &mpsc::Sender<String>,
) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or("");
    let q = query_map(query);
    let (status, text) = if req.uri().path() != path {
        (StatusCode::NOT_FOUND, "Not found.")
    } else if q.get("state").map(String::as_str) != Some(state) {
        (
            StatusCode::BAD_REQUEST,
            "tokend: this redirect does not belong to the login in progress; ignored.",
        )
    } else {
        let failed = q.contains_key("error");
        let _ = tx.try_send(query.to_owned());
        if failed {
            (
                StatusCode::OK,
                "tokend: the authorization failed. See the terminal.",
            )
        } else {
            (
                StatusCode::OK,
                "tokend: authorization received. You can close this window.",
            )
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "text/plain; charset=utf-8".parse().expect("static header"),
    );
    r
}

/// `--no-browser`: the URL the browser was sent to, pasted on stdin.
pub async fn read_pasted(tx: mpsc::Sender<String>) {
    errln!("tokend: after authorizing, paste the full URL your browser was sent to, then Enter:");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let query = line.split_once('?').map_or(line, |(_, q)| q);
        let query = query.split('#').next().unwrap_or("");
        let _ = tx.send(query.to_owned()).await;
        return;
    }
}

fn query_map(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Checks the redirect's `state` and turns it into the code, or into the error it holds.
pub fn check_callback(query: &str, expected_state: &str) -> Result<SecretString, LoginError> {
    let q = query_map(query);
    // Without this login's state, neither a code nor an error (nor its text) is ours.
    if q.get("state").map(String::as_str) != Some(expected_state) {
        return Err(mismatched_state());
    }
    if let Some(error) = q.get("error") {
        return Err(authorization_error(error, q.get("error_description")));
    }
    match q.get("code") {
        Some(code) if !code.is_empty() => Ok(SecretString::from(code.clone())),
        _ => Err(LoginError::Other(
            "the redirect carries neither a code nor an error; nothing was written".into(),
        )),
    }
}

fn mismatched_state() -> LoginError {
    LoginError::Other(
        "the redirect's state does not match this login's: it answers another login attempt, or was forged; nothing was written. Run tokend login again".into(),
    )
}

/// RFC 6749 §4.1.2.1's errors, said plainly.
fn authorization_error(code: &str, description: Option<&String>) -> LoginError {
    let detail = description
        .map(|d| {
            let clean: String = server_text(d).chars().take(200).collect();
            format!(" ({clean})")
        })
        .unwrap_or_default();
    let code_text: String = code
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    let (kind, text) = match code {
        "access_denied" => (
            0,
            "the authorization was denied, by you or by the server's policy",
        ),
        "unauthorized_client" => (
            0,
            "this client may not use the authorization-code flow; allow it in the server's client settings",
        ),
        "unsupported_response_type" => (
            0,
            "the server does not issue authorization codes to this client",
        ),
        "invalid_scope" => (
            0,
            "the requested scope is invalid or not allowed; check scope",
        ),
        "invalid_request" => (
            1,
            "the server found the request malformed: check client_id, redirect_uri (it must be registered exactly) and authorize_url",
        ),
        "server_error" => (2, "the authorization server failed; try again"),
        "temporarily_unavailable" => (
            2,
            "the authorization server is busy or down; try again later",
        ),
        _ => (1, "the authorization server refused"),
    };
    let message = format!("{text}: error={code_text}{detail}; nothing was written");
    match kind {
        0 => LoginError::Refused(message),
        2 => LoginError::Temporary(message),
        _ => LoginError::Other(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn callbacks_are_checked() {
        assert_eq!(
            check_callback("code=abc&state=s1", "s1")
                .unwrap()
                .expose_secret(),
            "abc"
        );
        assert!(
            matches!(check_callback("code=abc&state=s2", "s1"), Err(LoginError::Other(m)) if m.contains("state does not match"))
        );
        assert!(matches!(
            check_callback("code=abc", "s1"),
            Err(LoginError::Other(_))
        ));
        let denied = check_callback(
            "error=access_denied&state=s1&error_description=no%0Athanks",
            "s1",
        )
        .unwrap_err();
        assert!(
            matches!(&denied, LoginError::Refused(m) if m.contains("denied") && m.contains("(no thanks)")),
            "{denied}"
        );
        assert!(matches!(
            check_callback("error=access_denied&state=zz", "s1"),
            Err(LoginError::Other(_))
        ));
        assert!(matches!(
            check_callback("error=temporarily_unavailable&state=s1", "s1"),
            Err(LoginError::Temporary(_))
        ));
        // No state: not this login's, and its text is not repeated.
        let forged = check_callback("error=access_denied&error_description=Run%20rm", "s1");
        assert!(
            matches!(&forged, Err(LoginError::Other(m)) if !m.contains("Run rm")),
            "{forged:?}"
        );
    }

    #[test]
    fn loopback_redirects_only() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            loopback_addr(&u("http://127.0.0.1:8976/cb")),
            Some("127.0.0.1:8976".parse().unwrap())
        );
        assert_eq!(
            loopback_addr(&u("http://localhost/cb")),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            loopback_addr(&u("http://[::1]:9/cb")),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(loopback_addr(&u("https://127.0.0.1/cb")), None);
        assert_eq!(loopback_addr(&u("http://example.com/cb")), None);
    }
}
