//! What each output format holds (design.md §7), and which tokens each may carry.

use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use crate::config::OutputFormat;
use crate::rfc3339;

/// The access token as published.
pub struct Published<'a> {
    pub access_token: &'a SecretString,
    pub token_type: &'a str,
    pub expires_at: SystemTime,
    pub scope: Option<&'a str>,
}

/// RFC 6750's `b64token`: what a Bearer header carries, and what a shell can `source`
/// unquoted.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The bytes of one output file, or `None` when the token cannot be carried safely.
pub fn render(format: OutputFormat, token: &Published) -> Option<String> {
    let at = token.access_token.expose_secret();
    // Tokens are checked when they arrive (visible ASCII, no quotes); this guards each
    // format again, so that no path writes a line break into a file, or a `$` or `;`
    // into one that a shell sources.
    let visible = !at.is_empty()
        && at
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    let safe = match format {
        OutputFormat::Raw | OutputFormat::Json => visible,
        OutputFormat::Env | OutputFormat::Header => is_b64token(at),
    };
    if !safe {
        return None;
    }
    let expires = rfc3339::format(token.expires_at);
    Some(match format {
        OutputFormat::Raw => at.to_owned(),
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "access_token": at,
                "token_type": token.token_type,
                "expires_at": expires,
                "scope": token.scope,
            });
            format!("{doc}\n")
        }
        OutputFormat::Env => format!("ACCESS_TOKEN={at}\nACCESS_TOKEN_EXPIRES_AT={expires}\n"),
        OutputFormat::Header => format!("Authorization: Bearer {at}\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(at: &str) -> (SecretString, SystemTime) {
        (
            SecretString::from(at.to_owned()),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        )
    }

    #[test]
    fn formats() {
        let (at, exp) = token("blnk_at_x");
        let p = Published {
            access_token: &at,
            token_type: "Bearer",
            expires_at: exp,
            scope: Some("a b"),
        };
        assert_eq!(render(OutputFormat::Raw, &p).unwrap(), "blnk_at_x");
        assert_eq!(
            render(OutputFormat::Header, &p).unwrap(),
            "Authorization: Bearer blnk_at_x\n"
        );
        assert_eq!(
            render(OutputFormat::Env, &p).unwrap(),
            "ACCESS_TOKEN=blnk_at_x\nACCESS_TOKEN_EXPIRES_AT=2027-01-15T08:00:00.000Z\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(OutputFormat::Json, &p).unwrap()).unwrap();
        assert_eq!(json["access_token"], "blnk_at_x");
        assert_eq!(json["expires_at"], "2027-01-15T08:00:00.000Z");
        assert_eq!(json["scope"], "a b");
    }

    #[test]
    fn unsafe_tokens_are_refused() {
        let (_, exp) = token("x");
        let check = |at: &str, format: OutputFormat| {
            let at = SecretString::from(at.to_owned());
            let p = Published {
                access_token: &at,
                token_type: "Bearer",
                expires_at: exp,
                scope: None,
            };
            render(format, &p).is_some()
        };
        for bad in ["a\nb", "a b", "", "a\"b", "a\rb", "a\u{7f}"] {
            for f in [
                OutputFormat::Raw,
                OutputFormat::Json,
                OutputFormat::Env,
                OutputFormat::Header,
            ] {
                assert!(!check(bad, f), "{bad:?} {f:?}");
            }
        }
        // Shell-active characters: fine in a raw file, never in one that is sourced.
        for shell in ["a$b", "a;b", "a`b`", "a=b", "=", "a'b"] {
            assert!(check(shell, OutputFormat::Raw), "{shell:?}");
            assert!(!check(shell, OutputFormat::Env), "{shell:?}");
            assert!(!check(shell, OutputFormat::Header), "{shell:?}");
        }
        assert!(check("eyJ0.eyJ-_~+/x==", OutputFormat::Env));
    }
}
