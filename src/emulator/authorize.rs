//! The authorization endpoint and the code exchange: approval at once (there is no user
//! to ask), PKCE S256 required, a code used once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use sha2::Digest as _;

use crate::emulator::memory::{CodeRecord, Shared, lock};
use crate::emulator::model::{EmulatorConfig, random_text};
use crate::emulator::reply::{Answer, json, oauth_error};

/// How long an authorization code may wait to be exchanged.
const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// `GET /oauth/authorize`: redirects back with a code, or with the configured error.
pub fn authorize(shared: &Shared, req: &Request<Incoming>) -> Answer {
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let cfg = lock(&shared.cfg).clone();
    // Without a valid client and redirect URI there is nowhere safe to send an error.
    let redirect = match (query.get("client_id"), query.get("redirect_uri")) {
        (Some(id), Some(uri)) if *id == cfg.client_id => match url::Url::parse(uri) {
            Ok(u) => u,
            Err(_) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "bad redirect_uri",
                );
            }
        },
        _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unknown client"),
    };
    let mut inner = lock(&shared.inner);
    let challenge = query.get("code_challenge").filter(|c| c.len() >= 43);
    let outcome = if let Some(error) = inner.authorize_error.clone() {
        Err(error)
    } else if query.get("response_type").map(String::as_str) != Some("code") {
        Err("unsupported_response_type".to_owned())
    } else if challenge.is_none()
        || query.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        Err("invalid_request".to_owned())
    } else {
        let code = random_text(24);
        inner.codes.insert(
            code.clone(),
            CodeRecord {
                challenge: challenge.cloned().unwrap_or_default(),
                redirect_uri: redirect.to_string(),
                issued: Instant::now(),
            },
        );
        Ok(code)
    };
    let mut location = redirect;
    {
        let mut q = location.query_pairs_mut();
        match &outcome {
            Ok(code) => q.append_pair("code", code),
            Err(error) => q.append_pair("error", error),
        };
        if let Some(state) = query.get("state") {
            q.append_pair("state", state);
        }
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = location.as_str().parse() {
        r.headers_mut().insert("location", v);
    }
    r
}

/// `grant_type=authorization_code`: a new chain, if the code, redirect URI and PKCE
/// verifier match (RFC 6749 §4.1.3, RFC 7636 §4.6).
pub fn exchange_code(
    shared: &Shared,
    cfg: &EmulatorConfig,
    form: &HashMap<String, String>,
) -> Answer {
    let mut inner = lock(&shared.inner);
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    // A code is used once, whatever happens next.
    let Some(record) = inner.codes.remove(field("code")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used code",
        );
    };
    let digest = sha2::Sha256::digest(field("code_verifier").as_bytes());
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    if record.issued.elapsed() > CODE_LIFETIME
        || record.redirect_uri != field("redirect_uri")
        || record.challenge != expected
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code expired, or redirect_uri or code_verifier does not match",
        );
    }
    let family = inner.new_family();
    let mut body = inner.issue_access(cfg, family, &None);
    let refresh = inner.new_refresh_token(family, false, cfg.access_lifetime);
    body["refresh_token"] = serde_json::json!(refresh);
    json(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn exchange(s: &Shared, code: &str, verifier: &str) -> (u16, serde_json::Value) {
        let cfg = lock(&s.cfg).clone();
        let form = HashMap::from([
            ("code".to_owned(), code.to_owned()),
            ("code_verifier".to_owned(), verifier.to_owned()),
            (
                "redirect_uri".to_owned(),
                "http://127.0.0.1:9/cb".to_owned(),
            ),
        ]);
        let answer = exchange_code(s, &cfg, &form);
        let status = answer.status().as_u16();
        let bytes = answer.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn issue_code(s: &Shared, code: &str, verifier: &str) {
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        lock(&s.inner).codes.insert(
            code.to_owned(),
            CodeRecord {
                challenge,
                redirect_uri: "http://127.0.0.1:9/cb".into(),
                issued: Instant::now(),
            },
        );
    }

    #[tokio::test]
    async fn a_code_is_exchanged_once_and_only_with_its_verifier() {
        let s = Shared::new(EmulatorConfig::default(), "http://127.0.0.1:1".into());
        issue_code(&s, "c1", "verifier-1");
        let (status, body) = exchange(&s, "c1", "verifier-1").await;
        assert_eq!(status, 200);
        assert!(
            body["refresh_token"]
                .as_str()
                .unwrap()
                .starts_with("blnk_rt_")
        );
        let (status, body) = exchange(&s, "c1", "verifier-1").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        issue_code(&s, "c2", "verifier-2");
        let (status, _) = exchange(&s, "c2", "not-the-verifier").await;
        assert_eq!(status, 400);
        let (status, _) = exchange(&s, "c2", "verifier-2").await;
        assert_eq!(status, 400, "a failed exchange uses the code up");
    }
}
