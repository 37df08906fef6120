//! Reading HTTP answers carefully: bodies capped before they are read, errors flattened
//! to one line that no server text can break. Shared by token requests and discovery.

/// Token answers larger than this are refused without reading further (SPEC §5).
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

/// Control characters out, so that server text cannot forge log lines.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
