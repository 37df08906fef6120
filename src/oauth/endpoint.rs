//! One credential's token endpoint: which URL (configured or discovered), how the client
//! authenticates (design.md §5's `client_auth`), the request itself, and the failures where
//! no answer came back. No secret reaches a failure's text.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::config::{ClientAuth, CredentialConfig, MIN_SECRET_LEN};
use crate::oauth::answer::{classify, parse_retry_after};
use crate::oauth::assertion;
use crate::oauth::clients::{Clients, EndpointError};
use crate::oauth::discovery;
use crate::oauth::http::{error_chain, read_capped};
use crate::oauth::outcome::{Failure, FailureKind, Outcome};

/// Longest piece of a server's error text that goes into our messages.
const MAX_DETAIL: usize = 200;
/// A request timer that fires this late was not served on time: the process (or its
/// machine) was stopped meanwhile.
const LATE: Duration = Duration::from_millis(500);
/// How long an answer that came in while the process was stopped gets to be read.
const LATE_GRACE: Duration = Duration::from_secs(2);

/// A token endpoint client for one credential.
pub struct Endpoint {
    http: reqwest::Client,
    in_flight: Arc<Semaphore>,
    /// The client, its secret, scope and URLs: read where they are configured, not
    /// copied (each credential holds its endpoint for the process's life).
    cfg: Arc<CredentialConfig>,
    /// Without a configured token URL: the one found in the issuer's metadata (boxed:
    /// most credentials configure theirs).
    discovered: OnceCell<Box<Url>>,
}

/// What a token request asks for.
pub enum Grant<'a> {
    /// RFC 6749 §6.
    Refresh(&'a SecretString),
    /// RFC 6749 §4.4: a token for the client itself.
    ClientCredentials,
    /// RFC 6749 §4.1.3 with RFC 7636's `code_verifier`.
    Code {
        code: &'a SecretString,
        verifier: &'a SecretString,
        redirect_uri: &'a str,
    },
}

impl Endpoint {
    pub fn new(cfg: &Arc<CredentialConfig>, clients: &Clients) -> Result<Self, EndpointError> {
        let server = cfg.token_url.as_ref().or(cfg.login.issuer.as_ref());
        let tls = server.is_none_or(|u| u.scheme() == "https");
        Ok(Endpoint {
            http: clients.get(&cfg.http, tls)?,
            in_flight: clients.in_flight.clone(),
            cfg: Arc::clone(cfg),
            discovered: OnceCell::new(),
        })
    }

    /// Whose roots the server's certificate must chain to, for messages.
    fn trust(&self) -> String {
        match &self.cfg.http.ca_file {
            Some(ca) => format!("http.ca_file ({}) or the system's roots", ca.display()),
            None => "the system's roots (set http.ca_file for a private CA)".into(),
        }
    }

    /// The HTTP client, for discovery at login.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sets the token URL found by a discovery done elsewhere (login), unless one is set.
    pub fn use_discovered_token_url(&self, url: Url) {
        if self.cfg.token_url.is_none() {
            let _ = self.discovered.set(Box::new(url));
        }
    }

    /// The token URL, fetching the issuer's metadata the first time if need be.
    pub async fn token_url(&self) -> Result<&Url, Failure> {
        if let Some(url) = &self.cfg.token_url {
            return Ok(url);
        }
        self.discovered
            .get_or_try_init(|| async {
                let Some(issuer) = &self.cfg.login.issuer else {
                    // Validation sets one of the two; this only guards the invariant.
                    return Err(Failure::new(
                        FailureKind::Unexpected,
                        "no token_url and no issuer",
                    ));
                };
                let http = &self.cfg.http;
                discovery::discover(&self.http, issuer, http.allow_insecure_http, http.timeout)
                    .await
                    .map(|m| Box::new(m.token_endpoint))
                    .map_err(|e| Failure::new(FailureKind::Transient, e.to_string()))
            })
            .await
            .map(|url| &**url)
    }

    /// Sends one `grant_type=refresh_token` request and classifies the answer.
    /// Waits for one of the process's request slots ([`super::clients::MAX_IN_FLIGHT`]).
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed, so acquiring cannot fail; if it did, sending
        // without a slot is the better failure.
        self.in_flight.clone().acquire_owned().await.ok()
    }

    pub async fn refresh(&self, refresh_token: &SecretString) -> Outcome {
        self.request(Grant::Refresh(refresh_token)).await
    }

    /// Sends a refresh in a `slot` the caller waited for, and keeps until the answer is
    /// on disk: so at most as many rotated refresh tokens as there are slots are ever
    /// held only in memory, however fast the server answers and however slow the disk.
    pub async fn refresh_in(
        &self,
        grant: Grant<'_>,
        _slot: &Option<OwnedSemaphorePermit>,
    ) -> Outcome {
        self.send_held(grant).await
    }

    /// Sends one token request and classifies the answer.
    pub async fn request(&self, grant: Grant<'_>) -> Outcome {
        let _slot = self.slot().await;
        self.send_held(grant).await
    }

    /// Sends one token request (the caller holds a slot); no secret reaches the
    /// failure's text.
    async fn send_held(&self, grant: Grant<'_>) -> Outcome {
        let local =
            |what: &str, e: String| Failure::new(FailureKind::Local, format!("{what}: {e}"));
        let secret = match &self.cfg.client_secret {
            Some(source) => Some(
                source
                    .read()
                    .map_err(|e| local(&source.key_of("client_secret"), e.to_string()))?,
            ),
            None => None,
        };
        let url = self.token_url().await?.clone();
        let assertion = match &self.cfg.assertion {
            Some(a) => Some(
                assertion::make(a, &self.cfg.client_id, &url, SystemTime::now())
                    .map_err(|e| local("client assertion", e.to_string()))?,
            ),
            None => None,
        };
        // A server may echo what it was sent in its error text; none of it reaches a log:
        // the secret, the assertion, the tokens, and the Basic header as sent.
        let basic = secret.as_ref().map(|s| {
            let encode = self.cfg.client_auth != ClientAuth::BasicUnencoded;
            basic_value(&self.cfg.client_id, s.expose_secret(), encode)
        });
        let mut secrets: Vec<&str> = [&secret, &assertion]
            .into_iter()
            .flatten()
            .map(|s| s.expose_secret())
            .collect();
        match &grant {
            Grant::Refresh(t) => secrets.push(t.expose_secret()),
            Grant::ClientCredentials => {}
            Grant::Code { code, verifier, .. } => {
                secrets.extend([code.expose_secret(), verifier.expose_secret()])
            }
        }
        secrets.extend(basic.as_deref());
        let proof = Proof {
            secret: secret.as_ref(),
            assertion: assertion.as_ref(),
        };
        within(self.cfg.http.timeout, self.send(url, &grant, proof))
            .await
            .map_err(|mut f| {
                // Scrub before shortening, so that no part of a secret survives the cut.
                f.detail = scrub(&f.detail, &secrets)
                    .chars()
                    .take(MAX_DETAIL)
                    .collect();
                f
            })
    }

    async fn send(&self, url: Url, grant: &Grant<'_>, proof: Proof<'_>) -> Outcome {
        let mut form: Vec<(&str, &str)> = match grant {
            Grant::Refresh(token) => vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token.expose_secret()),
            ],
            Grant::ClientCredentials => vec![("grant_type", "client_credentials")],
            Grant::Code {
                code,
                verifier,
                redirect_uri,
            } => vec![
                ("grant_type", "authorization_code"),
                ("code", code.expose_secret()),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier.expose_secret()),
            ],
        };
        if let (Some(scope), Grant::Refresh(_) | Grant::ClientCredentials) =
            (&self.cfg.scope, grant)
        {
            form.push(("scope", scope));
        }
        // Validation keeps tokend's own names out of these (design.md §12).
        for (name, value) in &self.cfg.token_params {
            form.push((name, value));
        }
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json");
        let id = self.cfg.client_id.as_str();
        match (self.cfg.client_auth, proof.secret, proof.assertion) {
            (ClientAuth::Basic, Some(secret), _) => {
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    basic_header(id, secret.expose_secret(), true),
                )
            }
            (ClientAuth::BasicUnencoded, Some(secret), _) => {
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    basic_header(id, secret.expose_secret(), false),
                )
            }
            (ClientAuth::Post, Some(secret), _) => {
                form.extend([("client_id", id), ("client_secret", secret.expose_secret())]);
            }
            (ClientAuth::PrivateKeyJwt, _, Some(jwt)) => form.extend([
                ("client_id", id),
                ("client_assertion_type", assertion::ASSERTION_TYPE),
                ("client_assertion", jwt.expose_secret()),
            ]),
            // The certificate goes in the TLS handshake (the client was built with it).
            (ClientAuth::TlsClientAuth, ..) => form.push(("client_id", id)),
            _ => {
                // Validation pairs each method with what it needs; this only guards it.
                return Err(Failure::new(
                    FailureKind::Local,
                    format!(
                        "client_auth = \"{}\" lacks what it sends",
                        self.cfg.client_auth.word()
                    ),
                ));
            }
        }
        let response = match request.form(&form).send().await {
            Ok(r) => r,
            Err(e) => return Err(transport_failure(&e, &self.trust())),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = read_capped(response).await;
        classify(status, retry_after, body)
    }
}

/// `request`, ended after `timeout` (the whole request, body included). A timer that
/// fires late means this process was stopped (SIGSTOP, a frozen machine) while the
/// answer may have come in: what is in the socket is read before giving up. A rotated
/// refresh token must not be dropped for a timer that ran while nobody could read it.
async fn within(timeout: Duration, request: impl Future<Output = Outcome>) -> Outcome {
    let deadline = Instant::now() + timeout;
    tokio::pin!(request);
    tokio::select! {
        biased;
        outcome = &mut request => return outcome,
        _ = tokio::time::sleep_until(deadline.into()) => {}
    }
    if Instant::now() > deadline + LATE
        && let Ok(outcome) = tokio::time::timeout(LATE_GRACE, &mut request).await
    {
        return outcome;
    }
    Err(Failure::new(
        FailureKind::Ambiguous,
        format!(
            "timed out after sending: no whole answer within {}",
            humantime::format_duration(timeout)
        ),
    ))
}

/// What the client proves itself with, read for one request.
struct Proof<'a> {
    secret: Option<&'a SecretString>,
    assertion: Option<&'a SecretString>,
}

/// RFC 6749 Appendix B form-encoding, leaving RFC 3986's unreserved characters as they
/// are, so that ordinary ids and secrets produce exactly what `curl -u` sends.
const FORM_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` with every occurrence of each secret (as sent, raw or form-encoded) replaced.
/// Values shorter than [`MIN_SECRET_LEN`] are left alone: replacing every `s` of a
/// message mangles it and spells the secret out by its gaps (`check` warns about them).
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
        let encoded = percent_encoding::utf8_percent_encode(secret, FORM_COMPONENT).to_string();
        for form in [secret.to_string(), encoded] {
            text = text.replace(&form, "[redacted]");
        }
    }
    text
}

/// An `Authorization: Basic` value; `encode` applies RFC 6749 §2.3.1's form-urlencoding.
pub fn basic_header(id: &str, secret: &str, encode: bool) -> reqwest::header::HeaderValue {
    let mut value = reqwest::header::HeaderValue::from_str(&format!(
        "Basic {}",
        basic_value(id, secret, encode)
    ))
    .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// The base64 credentials of a Basic header.
fn basic_value(id: &str, secret: &str, encode: bool) -> String {
    let pair = if encode {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, FORM_COMPONENT).to_string();
        format!("{}:{}", enc(id), enc(secret))
    } else {
        format!("{id}:{secret}")
    };
    base64::engine::general_purpose::STANDARD.encode(pair)
}

/// TLS alerts by which a server refuses the client's certificate (or its absence).
const CLIENT_CERT_ALERTS: [&str; 7] = [
    "CertificateRequired",
    "BadCertificate",
    "UnknownCA",
    "UnsupportedCertificate",
    "CertificateRevoked",
    "CertificateExpired",
    "CertificateUnknown",
];

/// Failures where no status line came back.
fn transport_failure(e: &reqwest::Error, trust: &str) -> Failure {
    let detail = error_chain(e);
    if e.is_connect() && detail.contains("invalid peer certificate") {
        // A setup problem, not the network's: said plainly, once.
        let reason = detail
            .rsplit("invalid peer certificate: ")
            .next()
            .unwrap_or("");
        Failure::new(
            FailureKind::Untrusted,
            format!("the server's certificate is not trusted by {trust}: {reason}"),
        )
    } else if CLIENT_CERT_ALERTS
        .iter()
        .any(|alert| detail.contains(&format!("received fatal alert: {alert}")))
    {
        // TLS 1.3 reports a refused client certificate after the handshake, on the
        // first read: a setup problem, whichever way it surfaces.
        Failure::new(
            FailureKind::Untrusted,
            format!(
                "the server refused the connection for want of an accepted TLS client certificate (http.client_cert_file and http.client_key_file): {detail}"
            ),
        )
    } else if e.is_connect() {
        // DNS, refused, unreachable, TLS handshake: the request never left.
        Failure::new(
            FailureKind::Transient,
            format!("could not connect: {detail}"),
        )
    } else if e.is_timeout() {
        Failure::new(
            FailureKind::Ambiguous,
            format!("timed out after sending: {detail}"),
        )
    } else {
        Failure::new(
            FailureKind::Ambiguous,
            format!("connection failed after sending: {detail}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process is stopped while its request is in flight, and the answer comes in
    /// meanwhile: on waking, the timer has long run out, yet the answer is read.
    #[tokio::test]
    async fn an_answer_that_came_in_while_the_process_was_stopped_is_read() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let request = async move {
            let _ = rx.await;
            // Reading it takes another turn of the runtime, as a body does.
            tokio::task::yield_now().await;
            Err(Failure::new(FailureKind::Transient, "the answer"))
        };
        let run = within(Duration::from_millis(100), request);
        tokio::pin!(run);
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(run.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        // Stopped: nothing runs for a second; the answer arrives meanwhile.
        std::thread::sleep(Duration::from_secs(1));
        tx.send(()).unwrap();
        assert_eq!(run.await.unwrap_err().detail, "the answer");
        // On time, no answer: a timeout, ambiguous (the request went out).
        let never = std::future::pending::<Outcome>();
        let f = within(Duration::from_millis(50), never).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::Ambiguous);
    }

    #[test]
    fn only_values_long_enough_to_be_secrets_are_scrubbed() {
        let text = "error sending request: s3cret-value%2B echoed, s3cret-value+ too";
        let out = scrub(text, &["s", "s3cret-value+"]);
        assert_eq!(
            out,
            "error sending request: [redacted] echoed, [redacted] too"
        );
    }

    #[test]
    fn rfc_basic_encoding_differs_from_curl_only_for_special_characters() {
        assert_eq!(
            basic_header("id", "a-b._~1", true),
            basic_header("id", "a-b._~1", false)
        );
        let v = basic_header("id", "a+b/c:d=e%f", true);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&v.to_str().unwrap()[6..])
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "id:a%2Bb%2Fc%3Ad%3De%25f"
        );
    }
}
