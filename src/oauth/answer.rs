//! What a token endpoint's answer means: design.md §6's outcome table as one pure function,
//! [`classify`], of (status, `Retry-After`, body).

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::oauth::http::{BodyError, MAX_BODY, server_text};
use crate::oauth::outcome::{Failure, FailureKind, Outcome};
use crate::oauth::parse;

/// The longest `Retry-After` we honour; beyond it the answer is taken as hostile.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
struct RawError {
    error: Option<serde_json::Value>,
    error_description: Option<serde_json::Value>,
}

/// design.md §6's table: what an HTTP answer means.
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
            Ok(bytes) => parse::parse_answer(&bytes),
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
                Some("invalid_grant") => Permanent(crate::oauth::outcome::Permanent::Grant),
                Some("invalid_client" | "unauthorized_client") => {
                    Permanent(crate::oauth::outcome::Permanent::Client)
                }
                Some("unsupported_grant_type" | "invalid_scope") => {
                    Permanent(crate::oauth::outcome::Permanent::Configuration)
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
            Permanent(crate::oauth::outcome::Permanent::Grant)
        );
        assert_eq!(
            kind(classify(401, None, e("invalid_grant"))),
            Permanent(crate::oauth::outcome::Permanent::Grant)
        );
        assert_eq!(
            kind(classify(401, None, e("invalid_client"))),
            Permanent(crate::oauth::outcome::Permanent::Client)
        );
        assert_eq!(
            kind(classify(400, None, e("invalid_client"))),
            Permanent(crate::oauth::outcome::Permanent::Client)
        );
        assert_eq!(
            kind(classify(400, None, e("unauthorized_client"))),
            Permanent(crate::oauth::outcome::Permanent::Client)
        );
        assert_eq!(
            kind(classify(400, None, e("invalid_scope"))),
            Permanent(crate::oauth::outcome::Permanent::Configuration)
        );
        assert_eq!(
            kind(classify(400, None, e("unsupported_grant_type"))),
            Permanent(crate::oauth::outcome::Permanent::Configuration)
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
