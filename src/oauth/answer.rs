//! What a token endpoint's answer means: SPEC §5's outcome table as one pure function,
//! [`classify`], of (status, `Retry-After`, body); and the state a usable answer leads to.

use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde::Deserialize;

use crate::oauth::http::{BodyError, MAX_BODY, server_text};
use crate::store::{State, VERSION};

/// The longest `Retry-After` we honour; beyond it the answer is taken as hostile.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// A usable answer to a refresh (RFC 6749 §5.1).
#[derive(Debug)]
pub struct TokenAnswer {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<SecretString>,
    pub scope: Option<String>,
}

/// What went wrong, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing useful happened; retry with backoff.
    Transient,
    /// The request may have reached the server; retry soon with the same refresh token.
    Ambiguous,
    /// The server refused for a reason only a person can fix.
    Permanent(Permanent),
    /// Nothing was sent: something on this host (the client secret's file) is missing
    /// or unreadable. A person fixes it; the server has said nothing.
    Local,
    /// Nothing was sent: the server's certificate is not trusted (`http.ca_file`, the
    /// system's roots). A setup problem, retried with backoff in case it is the
    /// server's to fix; `once` reports it as configuration.
    Untrusted,
    /// An answer the table does not cover; retry at the maximum backoff, loudly.
    Unexpected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permanent {
    /// `invalid_grant`: the refresh token is dead.
    Grant,
    /// `invalid_client` / `unauthorized_client`: the client credentials are refused.
    Client,
    /// `unsupported_grant_type` / `invalid_scope`: the configuration is wrong.
    Configuration,
}

impl Permanent {
    /// What the operator must do, for logs and `status`.
    pub fn remedy(self) -> &'static str {
        match self {
            Permanent::Grant => {
                "the refresh token is dead: authorize again and write the new refresh token to the \
                 bootstrap file (refresh_token_file), or send SIGHUP after changing the configuration"
            }
            Permanent::Client => {
                "the client credentials were refused: check client_id, client_auth and the client's \
                 secret, assertion key or certificate, then update the secret or key file or send SIGHUP"
            }
            Permanent::Configuration => {
                "the server refused the request as configured (grant type or scope): fix the configuration and send SIGHUP"
            }
        }
    }
}

/// A refresh that did not produce a usable token.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// The server's `Retry-After`, already turned into a delay.
    pub retry_after: Option<Duration>,
    /// A short, secret-free description for logs and `status`.
    pub detail: String,
    /// A new refresh token from a 2xx answer whose other parts were unusable: it must be
    /// kept, because the one we sent is probably dead now.
    pub rotated: Option<SecretString>,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            retry_after: None,
            detail: detail.into(),
            rotated: None,
        }
    }
}

pub type Outcome = Result<TokenAnswer, Failure>;

/// Where a new state's refresh-token chain comes from: when the request went out, when
/// the chain began, and the digest of the bootstrap token it began with.
pub struct Origin {
    pub sent_at: SystemTime,
    pub chain_started_at: SystemTime,
    pub bootstrap_sha256: String,
}

impl TokenAnswer {
    /// The state this answer leads to, with RFC 6749's defaults: no new refresh token
    /// means `kept_refresh_token` stays (§6); no `expires_in` means `default_lifetime`;
    /// no scope means `fallback_scope`. The lifetime counts from when the request was sent.
    pub fn into_state(
        self,
        kept_refresh_token: Option<SecretString>,
        origin: Origin,
        default_lifetime: Duration,
        fallback_scope: Option<String>,
    ) -> State {
        let lifetime = self.expires_in.unwrap_or(default_lifetime);
        State {
            version: VERSION,
            generation: 0,
            refresh_token: self.refresh_token.or(kept_refresh_token),
            access_token: Some(self.access_token),
            token_type: self.token_type,
            scope: self.scope.or(fallback_scope),
            obtained_at: Some(origin.sent_at),
            expires_at: Some(origin.sent_at + lifetime),
            chain_started_at: origin.chain_started_at,
            bootstrap_sha256: origin.bootstrap_sha256,
            refused_bootstrap_sha256: None,
            last_error: None,
        }
    }
}

#[derive(Deserialize)]
struct RawAnswer {
    access_token: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<serde_json::Value>,
    scope: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawError {
    error: Option<serde_json::Value>,
    error_description: Option<serde_json::Value>,
}

/// SPEC §5's table: what an HTTP answer means.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: Result<Vec<u8>, BodyError>,
) -> Outcome {
    use FailureKind::*;
    let with_retry = |mut f: Failure| {
        f.retry_after = retry_after;
        f
    };
    match status {
        200..=299 => match body {
            Ok(bytes) => parse_answer(&bytes),
            Err(BodyError::TooLarge) => Err(Failure::new(
                Ambiguous,
                format!("HTTP {status} with a body over {MAX_BODY} bytes"),
            )),
            Err(BodyError::Interrupted(e)) => Err(Failure::new(
                Ambiguous,
                format!("HTTP {status} body cut short: {e}"),
            )),
        },
        408 | 500..=599 => Err(with_retry(Failure::new(
            Transient,
            format!("HTTP {status}{}", error_suffix(&body)),
        ))),
        429 => Err(with_retry(Failure::new(
            Transient,
            format!("HTTP 429 rate limited{}", error_suffix(&body)),
        ))),
        400..=499 => {
            let code = error_code(&body);
            let kind = match code.as_deref() {
                Some("invalid_grant") => Permanent(self::Permanent::Grant),
                Some("invalid_client" | "unauthorized_client") => {
                    Permanent(self::Permanent::Client)
                }
                Some("unsupported_grant_type" | "invalid_scope") => {
                    Permanent(self::Permanent::Configuration)
                }
                _ => Unexpected,
            };
            Err(with_retry(Failure::new(
                kind,
                format!("HTTP {status}{}", error_suffix(&body)),
            )))
        }
        _ => Err(Failure::new(
            Unexpected,
            format!("HTTP {status}{}", error_suffix(&body)),
        )),
    }
}

fn parse_answer(bytes: &[u8]) -> Outcome {
    use FailureKind::*;
    let raw: RawAnswer = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(_) => {
            return Err(Failure::new(
                Ambiguous,
                "2xx answer is not a JSON token response",
            ));
        }
    };
    // The refresh token first: if it is there and well-formed, it must survive whatever
    // else is wrong with the answer.
    let rotated = match &raw.refresh_token {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match token_text(v) {
            Some(t) => Some(SecretString::from(t)),
            None => {
                return Err(Failure::new(
                    Ambiguous,
                    "2xx answer has an unusable refresh_token",
                ));
            }
        },
    };
    let unusable = |detail: &str| Failure {
        kind: if rotated.is_some() {
            Transient
        } else {
            Ambiguous
        },
        retry_after: None,
        detail: format!("2xx answer {detail}"),
        rotated: rotated.clone(),
    };
    let access_token = match raw.access_token.as_ref().map(token_text) {
        Some(Some(t)) => SecretString::from(t),
        Some(None) => return Err(unusable("has an unusable access_token")),
        None => return Err(unusable("lacks access_token")),
    };
    let token_type = match raw.token_type {
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => t,
        Some(serde_json::Value::String(t))
            if t.len() <= 40 && t.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            return Err(unusable(&format!("has token_type {t:?}, not Bearer")));
        }
        Some(_) => return Err(unusable("has an unusable token_type")),
        None => return Err(unusable("lacks token_type")),
    };
    let expires_in = match raw.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match expires_in_seconds(&v) {
            Some(0) | None => return Err(unusable("has an unusable expires_in")),
            // Ten years: far beyond any real lifetime, small enough for time arithmetic.
            Some(s) => Some(Duration::from_secs(s.min(10 * 365 * 86_400))),
        },
    };
    let scope = match raw.scope {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            Some(s)
        }
        Some(_) => return Err(unusable("has an unusable scope")),
    };
    Ok(TokenAnswer {
        access_token,
        token_type,
        expires_in,
        refresh_token: rotated,
        scope,
    })
}

/// A token as RFC 6749 allows it (visible ASCII), refusing anything that could break an
/// output format: spaces, control characters, quotes, backslashes.
fn token_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s)
            if !s.is_empty()
                && s.len() <= 16 * 1024
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') =>
        {
            Some(s.clone())
        }
        _ => None,
    }
}

/// `expires_in` as seconds: a non-negative integer, or a numeric string (seen in the wild).
fn expires_in_seconds(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 1.0)
                .map(|f| f.min(u64::MAX as f64) as u64)
        }),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn error_code(body: &Result<Vec<u8>, BodyError>) -> Option<String> {
    let bytes = body.as_ref().ok()?;
    let raw: RawError = serde_json::from_slice(bytes).ok()?;
    match raw.error? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// `: invalid_grant (the description)` for messages, sanitised and bounded.
fn error_suffix(body: &Result<Vec<u8>, BodyError>) -> String {
    let Ok(bytes) = body else {
        return String::new();
    };
    let Ok(raw) = serde_json::from_slice::<RawError>(bytes) else {
        return String::new();
    };
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(server_text(&s)),
        _ => None,
    };
    match (text(raw.error), text(raw.error_description)) {
        (Some(e), Some(d)) => format!(": {e} ({d})"),
        (Some(e), None) => format!(": {e}"),
        _ => String::new(),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn ok(body: &str) -> Result<Vec<u8>, BodyError> {
        Ok(body.as_bytes().to_vec())
    }

    fn kind(o: Outcome) -> FailureKind {
        o.expect_err("expected a failure").kind
    }

    #[test]
    fn full_answer_is_success() {
        let a = classify(200, None, ok(r#"{"access_token":"at","token_type":"bearer","expires_in":3600,"refresh_token":"rt","scope":"a b","x":1}"#)).unwrap();
        assert_eq!(a.access_token.expose_secret(), "at");
        assert_eq!(a.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(a.refresh_token.unwrap().expose_secret(), "rt");
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let a = classify(
            200,
            None,
            ok(r#"{"access_token":"at","token_type":"Bearer"}"#),
        )
        .unwrap();
        assert!(a.expires_in.is_none() && a.refresh_token.is_none() && a.scope.is_none());
    }

    #[test]
    fn unusable_2xx_keeps_the_rotated_token() {
        let f = classify(
            200,
            None,
            ok(r#"{"refresh_token":"rt2","token_type":"Bearer"}"#),
        )
        .unwrap_err();
        assert_eq!(f.kind, FailureKind::Transient);
        assert_eq!(f.rotated.unwrap().expose_secret(), "rt2");
        let f = classify(
            200,
            None,
            ok(r#"{"access_token":"a\nb","token_type":"Bearer","refresh_token":"rt2"}"#),
        )
        .unwrap_err();
        assert!(f.rotated.is_some());
        let f = classify(200, None, ok(r#"{"access_token":"a","token_type":"Bearer","refresh_token":"rt2","expires_in":-5}"#)).unwrap_err();
        assert!(f.rotated.is_some());
    }

    #[test]
    fn garbage_2xx_is_ambiguous() {
        assert_eq!(
            kind(classify(200, None, ok("<html>"))),
            FailureKind::Ambiguous
        );
        assert_eq!(
            kind(classify(200, None, Err(BodyError::TooLarge))),
            FailureKind::Ambiguous
        );
        assert_eq!(
            kind(classify(
                200,
                None,
                ok(r#"{"access_token":"a","token_type":"Bearer","refresh_token":"bad token"}"#)
            )),
            FailureKind::Ambiguous
        );
    }

    #[test]
    fn the_table() {
        use FailureKind::*;
        let e = |code: &str| {
            ok(&format!(
                r#"{{"error":"{code}","error_description":"why"}}"#
            ))
        };
        assert_eq!(kind(classify(500, None, ok(""))), Transient);
        assert_eq!(kind(classify(408, None, ok(""))), Transient);
        let f = classify(503, Some(Duration::from_secs(7)), ok("")).unwrap_err();
        assert_eq!(
            (f.kind, f.retry_after),
            (Transient, Some(Duration::from_secs(7)))
        );
        assert_eq!(kind(classify(429, None, ok(""))), Transient);
        assert_eq!(
            kind(classify(400, None, e("invalid_grant"))),
            Permanent(self::Permanent::Grant)
        );
        assert_eq!(
            kind(classify(401, None, e("invalid_grant"))),
            Permanent(self::Permanent::Grant)
        );
        assert_eq!(
            kind(classify(401, None, e("invalid_client"))),
            Permanent(self::Permanent::Client)
        );
        assert_eq!(
            kind(classify(400, None, e("invalid_client"))),
            Permanent(self::Permanent::Client)
        );
        assert_eq!(
            kind(classify(400, None, e("unauthorized_client"))),
            Permanent(self::Permanent::Client)
        );
        assert_eq!(
            kind(classify(400, None, e("invalid_scope"))),
            Permanent(self::Permanent::Configuration)
        );
        assert_eq!(
            kind(classify(400, None, e("unsupported_grant_type"))),
            Permanent(self::Permanent::Configuration)
        );
        assert_eq!(kind(classify(400, None, e("invalid_request"))), Unexpected);
        assert_eq!(kind(classify(403, None, ok("forbidden"))), Unexpected);
        assert_eq!(kind(classify(302, None, ok(""))), Unexpected);
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(RETRY_AFTER_CAP)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
