//! Reading a 2xx token answer (RFC 6749 §5.1): leniently where a rotation is at stake
//! (design.md §6), strictly where a value goes to an output.

use std::time::Duration;

use secrecy::SecretString;

use crate::oauth::outcome::{Failure, FailureKind, Outcome, TokenAnswer};

pub(super) fn parse_answer(bytes: &[u8]) -> Outcome {
    use FailureKind::*;
    let Some(mut raw) = lenient_object(bytes) else {
        // Not a JSON object: the server answered, and may have rotated; a refresh token
        // that can still be read from the bytes is the chain's next link.
        return Err(match scan_refresh_token(bytes) {
            Some(rotated) => Failure {
                kind: Transient,
                retry_after: None,
                detail: "2xx answer is not a JSON token response; the refresh token in it was kept"
                    .into(),
                rotated: Some(SecretString::from(rotated)),
            },
            None => Failure::new(Ambiguous, "2xx answer is not a JSON token response"),
        });
    };
    // The refresh token first: if it is there and well-formed, it must survive whatever
    // else is wrong with the answer.
    let rotated = match raw.remove("refresh_token") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match refresh_token_text(&v) {
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
    let access_token = match raw.get("access_token").map(token_text) {
        Some(Some(t)) => SecretString::from(t),
        Some(None) => return Err(unusable("has an unusable access_token")),
        None => return Err(unusable("lacks access_token")),
    };
    let token_type = match raw.remove("token_type") {
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => t,
        Some(serde_json::Value::String(t))
            if t.len() <= 40 && t.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            return Err(unusable(&format!("has token_type {t:?}, not Bearer")));
        }
        Some(serde_json::Value::Null) | None => return Err(unusable("lacks token_type")),
        Some(_) => return Err(unusable("has an unusable token_type")),
    };
    let expires_in = match raw.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match expires_in_seconds(v) {
            Some(0) | None => return Err(unusable("has an unusable expires_in")),
            // Ten years: far beyond any real lifetime, small enough for time arithmetic.
            Some(s) => Some(Duration::from_secs(s.min(10 * 365 * 86_400))),
        },
    };
    let scope = match raw.remove("scope") {
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

/// The answer's object, read leniently, since a rotated refresh token must not be lost
/// to a server's sloppiness: a UTF-8 byte order mark is skipped, bytes after the first
/// JSON value are ignored, and of duplicate keys the last one counts.
fn lenient_object(bytes: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = serde_json::Deserializer::from_slice(bytes)
        .into_iter::<serde_json::Value>()
        .next()?;
    match first {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// The last `"refresh_token": "..."` in bytes that are not a JSON object as a whole (a
/// body that stops after the token, say), when what follows the key is a whole JSON
/// string holding a valid refresh token.
fn scan_refresh_token(bytes: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"refresh_token\"";
    let mut found = None;
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(KEY.len()).position(|w| w == KEY) {
        at += i + KEY.len();
        let Some(value) = bytes[at..].trim_ascii_start().strip_prefix(b":") else {
            continue;
        };
        let value = serde_json::Deserializer::from_slice(value.trim_ascii_start())
            .into_iter::<serde_json::Value>()
            .next();
        if let Some(Ok(v)) = value
            && let Some(t) = refresh_token_text(&v)
        {
            found = Some(t);
        }
    }
    found
}

/// A refresh token as RFC 6749 (A.17) allows it: one or more VSCHAR (0x20 to 0x7E),
/// spaces, quotes and backslashes included. It never goes to an output, only back to
/// the server and into the state, where any of them is safe.
fn refresh_token_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s)
            if !s.is_empty() && s.bytes().all(|b| (0x20..=0x7e).contains(&b)) =>
        {
            Some(s.clone())
        }
        _ => None,
    }
}

/// An access token as RFC 6749 allows it (visible ASCII), refusing anything that could
/// break an output format: spaces, control characters, quotes, backslashes.
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

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn answer(body: &str) -> Outcome {
        parse_answer(body.as_bytes())
    }

    /// RFC 6749 allows any VSCHAR in a refresh token, and a 2xx answer that carries one
    /// is a rotation however sloppy the rest: the token is kept, never dropped for a
    /// replay of the old one.
    #[test]
    fn a_rotated_refresh_token_is_read_from_any_2xx_answer_that_carries_one() {
        let full = |rt: &str| {
            format!(
                r#"{{"access_token":"at","token_type":"Bearer","expires_in":60,"refresh_token":{rt}}}"#
            )
        };
        for (body, want) in [
            (full(r#""with space""#), "with space"),
            (
                full(r#""with \"quote\" and \\ backslash""#),
                r#"with "quote" and \ backslash"#,
            ),
            // Duplicate keys: the last one counts.
            (
                r#"{"refresh_token":"first","access_token":"at","token_type":"Bearer","refresh_token":"last"}"#
                    .into(),
                "last",
            ),
            // A byte order mark before, a NUL or anything after.
            (format!("\u{feff}{}", full(r#""bom""#)), "bom"),
            (format!("{}\0", full(r#""nul""#)), "nul"),
            (format!("{}garbage", full(r#""trailing""#)), "trailing"),
        ] {
            let a = answer(&body)
                .unwrap_or_else(|f| panic!("{body}: {}", f.detail));
            assert_eq!(a.refresh_token.unwrap().expose_secret(), want, "{body}");
        }
        // A poor rest: the rotation is kept, with nothing to publish.
        let f = answer(r#"{"access_token":"a b","token_type":"Bearer","refresh_token":"rt 2"}"#)
            .unwrap_err();
        assert_eq!(f.kind, FailureKind::Transient);
        assert_eq!(f.rotated.unwrap().expose_secret(), "rt 2");
        // Not an object as a whole, but the token can be read: kept.
        let f = answer(r#"{"refresh_token": "rt-3", "access_token": "at", "#).unwrap_err();
        assert_eq!(f.rotated.unwrap().expose_secret(), "rt-3");
        // Not a refresh token RFC 6749 allows: no rotation can be read.
        let f = answer(&full(r#""a\nb""#)).unwrap_err();
        assert_eq!(f.kind, FailureKind::Ambiguous);
        assert!(f.rotated.is_none());
    }
}
