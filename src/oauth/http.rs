//! Reading HTTP answers carefully: bodies capped before they are read, errors flattened
//! to one line that no server text can break. Shared by token requests and discovery.

/// Token answers larger than this are refused without reading further (design.md §6).
pub const MAX_BODY: usize = 64 * 1024;

/// Why a body could not be read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Interrupted(String),
}

/// The body of `response`, refused as soon as it is known to exceed [`MAX_BODY`].
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(BodyError::Interrupted(error_chain(&e))),
        }
    }
}

/// The error and its causes on one line. reqwest puts the URL in its message; our token
/// URLs carry no credentials (validated), so that is safe.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    sanitize(&text)
}

/// Control characters and bidirectional overrides out, so that server text can neither
/// forge log lines nor make a terminal show them in another order.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || is_bidi_control(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// The Unicode bidirectional controls (embeddings, overrides, isolates, marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// A server's own text (an `error_description`), made safe to log: [`sanitize`]d, and
/// every long run of token characters redacted, since a hostile or careless server may
/// echo a token or a credential, whole or in part, in any encoding (base64's "/" too).
pub fn server_text(s: &str) -> String {
    crate::redact::token_runs(&sanitize(s), "/", "[redacted]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_loses_controls_overrides_and_anything_like_a_token() {
        assert_eq!(sanitize("a\nb\u{202E}c\u{2066}d"), "a b c d");
        assert_eq!(
            server_text("refresh token blnk_rt_8f3kQ2 unknown"),
            "refresh token blnk_rt_8f3kQ2 unknown"
        );
        assert_eq!(
            server_text("Basic dGVzdC1jbGllbnQ6dGVzdC1zZWNyZXQtWHk3 refused"),
            "Basic [redacted] refused"
        );
        assert_eq!(
            server_text("token rt_0a1b2c3d4e5f6a7b8c9d (truncated) unknown_client_authentication"),
            "token [redacted] (truncated) unknown_client_authentication"
        );
    }
}
