//! The token endpoint: client authentication, the faults a test queued, and rotation
//! with reuse detection (a rotated token presented again revokes its family, unless
//! it comes back within the grace window).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use rand::Rng;

use crate::emulator::authorize::exchange_code;
use crate::emulator::client::authenticated;
use crate::emulator::memory::{Shared, lock};
use crate::emulator::model::{EmulatorConfig, Fault, Rotation, Sloppiness, TokenRequest};
use crate::emulator::reply::{Answer, Dropped, json, oauth_error, read_body};

/// `POST /oauth/token`.
pub async fn token(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Answer, Dropped> {
    let auth_header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(body) = read_body(req).await else {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body too large or unreadable",
        ));
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let form: HashMap<String, String> = params.iter().cloned().collect();
    let fault = {
        let mut inner = lock(&shared.inner);
        inner.stats.token_requests += 1;
        inner.requests.push(TokenRequest {
            at: Instant::now(),
            params,
        });
        let fault = inner.faults.pop_front().or_else(|| {
            let (p, faults) = inner.chaos.as_ref()?;
            let mut rng = rand::rng();
            rng.random_bool(p.clamp(0.0, 1.0))
                .then(|| faults[rng.random_range(0..faults.len())].clone())
        });
        if fault.is_some() {
            inner.stats.faults_served += 1;
        }
        fault
    };
    if let Some(answer) = fault_answer(fault.as_ref()).await {
        return answer;
    }
    let cfg = lock(&shared.cfg).clone();
    if !authenticated(&shared, &cfg, auth_header.as_deref(), &form) {
        lock(&shared.inner).stats.auth_failures += 1;
        let mut r = oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
        r.headers_mut().insert(
            "www-authenticate",
            "Basic realm=\"oauth\"".parse().expect("static header"),
        );
        return Ok(r);
    }
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {}
        Some("authorization_code") => return Ok(exchange_code(&shared, &cfg, &form)),
        Some("client_credentials") => return Ok(client_token(&shared, &cfg, &fault)),
        _ => {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only refresh_token, authorization_code and client_credentials are supported",
            ));
        }
    }
    let presented = form.get("refresh_token").cloned().unwrap_or_default();
    let answer = rotate(&shared, &cfg, &presented, &fault);
    match fault {
        Some(Fault::RotateThenReset) => return Err(Dropped),
        Some(Fault::SlowAnswer { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        _ => {}
    }
    Ok(answer)
}

/// RFC 6749 §4.4.3: an access token for the client itself, and no refresh token.
fn client_token(shared: &Shared, cfg: &EmulatorConfig, fault: &Option<Fault>) -> Answer {
    let mut inner = lock(&shared.inner);
    let family = inner.new_family();
    let body = inner.issue_access(cfg, family, fault);
    inner.stats.client_tokens += 1;
    json(StatusCode::OK, body)
}

fn rotate(shared: &Shared, cfg: &EmulatorConfig, presented: &str, fault: &Option<Fault>) -> Answer {
    let mut inner = lock(&shared.inner);
    let now = SystemTime::now();
    let Some(record) = inner.refresh.get(presented) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown refresh token",
        );
    };
    let family = record.family;
    if inner.revoked.contains(&family) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "refresh token revoked",
        );
    }
    if let Some((when, answer)) = &record.rotated {
        if when.elapsed() <= cfg.reuse_grace {
            let answer = answer.clone();
            inner.stats.grace_replays += 1;
            return json(StatusCode::OK, answer);
        }
        inner.stats.reuses += 1;
        inner.revoked.insert(family);
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "refresh token reused; family revoked",
        );
    }
    let previous = Rotation {
        at: now,
        previous_issued_at: record.issued_at,
        previous_lifetime: record.lifetime,
        from_bootstrap: record.bootstrap,
    };
    let mut body = inner.issue_access(cfg, family, fault);
    if fault == &Some(Fault::OmitRefreshToken) {
        if let Some(r) = inner.refresh.get_mut(presented) {
            r.issued_at = now;
            r.lifetime = cfg.access_lifetime;
            r.bootstrap = false;
        }
    } else {
        let mut next = inner.new_refresh_token(family, false, cfg.access_lifetime);
        let odd = match fault {
            Some(Fault::Sloppy {
                shape: Sloppiness::SpaceInToken,
            }) => Some(" x"),
            Some(Fault::Sloppy {
                shape: Sloppiness::QuoteInToken,
            }) => Some("\"q"),
            _ => None,
        };
        if let Some(odd) = odd
            && let Some(record) = inner.refresh.remove(&next)
        {
            next.push_str(odd);
            inner.refresh.insert(next.clone(), record);
        }
        body["refresh_token"] = serde_json::json!(next);
        if let Some(r) = inner.refresh.get_mut(presented) {
            r.rotated = Some((Instant::now(), body.clone()));
        }
    }
    inner.stats.refreshes += 1;
    inner.rotations.push(previous);
    match fault {
        Some(Fault::Sloppy { shape }) => sloppy(*shape, &body),
        _ => json(StatusCode::OK, body),
    }
}

/// A `200` whose body is `body` written as a sloppy server writes it.
fn sloppy(shape: Sloppiness, body: &serde_json::Value) -> Answer {
    let text = body.to_string();
    let text = match shape {
        Sloppiness::DuplicateKeys => text.replacen('{', "{\"refresh_token\":\"blnk_rt_stale\",", 1),
        Sloppiness::Bom => format!("\u{feff}{text}"),
        Sloppiness::TrailingNul => format!("{text}\0"),
        Sloppiness::SpaceInToken | Sloppiness::QuoteInToken => text,
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    r
}

/// The answer a queued fault gives instead of the real one, if it gives one (a delay
/// only waits).
async fn fault_answer(fault: Option<&Fault>) -> Option<Result<Answer, Dropped>> {
    match fault {
        Some(Fault::Status {
            status,
            body,
            retry_after,
        }) => {
            let mut r = Response::new(Full::new(Bytes::from(body.clone())));
            *r.status_mut() =
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if body.starts_with('{') {
                r.headers_mut().insert(
                    "content-type",
                    "application/json".parse().expect("static header"),
                );
            }
            if let Some(v) = retry_after.as_ref().and_then(|v| v.parse().ok()) {
                r.headers_mut().insert("retry-after", v);
            }
            return Some(Ok(r));
        }
        Some(Fault::Delay { ms }) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        Some(Fault::Reset) => return Some(Err(Dropped)),
        Some(Fault::Garbage) => {
            return Some(Ok(Response::new(Full::new(Bytes::from_static(
                b"<html>502 Bad Gateway</html>",
            )))));
        }
        Some(Fault::InvalidUtf8) => {
            return Some(Ok(Response::new(Full::new(Bytes::from_static(
                b"{\"access_token\": \"\xff\xfe\", \"token_type\": \"Bearer\"}",
            )))));
        }
        Some(Fault::NestedJson { depth }) => {
            let body = format!("{}{}", "[".repeat(*depth), "]".repeat(*depth));
            return Some(Ok(Response::new(Full::new(Bytes::from(body)))));
        }
        Some(Fault::HugeBody { bytes }) => {
            let mut r = Response::new(Full::new(Bytes::from(vec![b' '; *bytes])));
            r.headers_mut().insert(
                "content-type",
                "application/json".parse().expect("static header"),
            );
            return Some(Ok(r));
        }
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn shared(reuse_grace: Duration) -> Shared {
        let cfg = EmulatorConfig {
            reuse_grace,
            ..EmulatorConfig::default()
        };
        Shared::new(cfg, "http://127.0.0.1:1".into())
    }

    /// Presents `token` and returns the status and body of the answer.
    async fn present(s: &Shared, token: &str, fault: Option<Fault>) -> (u16, serde_json::Value) {
        let cfg = lock(&s.cfg).clone();
        let answer = rotate(s, &cfg, token, &fault);
        let status = answer.status().as_u16();
        let bytes = answer.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_reused_token_revokes_its_whole_family() {
        let s = shared(Duration::ZERO);
        let boot = s.issue_bootstrap();
        let (status, body) = present(&s, &boot, None).await;
        assert_eq!(status, 200);
        let next = body["refresh_token"].as_str().unwrap().to_owned();
        let access = body["access_token"].as_str().unwrap().to_owned();
        assert!(s.accepts(&access));
        assert_eq!(body["expires_in"], 3600);
        // The rotated-away token again: theft, as strict servers see it.
        let (status, body) = present(&s, &boot, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(lock(&s.inner).stats.reuses, 1);
        let (status, _) = present(&s, &next, None).await;
        assert_eq!(status, 400, "the live token of the family is revoked too");
        assert!(!s.accepts(&access));
        let (status, _) = present(&s, "blnk_rt_unknown", None).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn within_the_grace_window_a_replay_gets_the_same_pair() {
        let s = shared(Duration::from_secs(60));
        let boot = s.issue_bootstrap();
        let (_, first) = present(&s, &boot, None).await;
        let (status, again) = present(&s, &boot, None).await;
        assert_eq!((status, &again), (200, &first));
        let stats = lock(&s.inner).stats.clone();
        assert_eq!(
            (stats.refreshes, stats.reuses, stats.grace_replays),
            (1, 0, 1)
        );
    }

    #[tokio::test]
    async fn faults_shape_the_answer() {
        let s = shared(Duration::ZERO);
        let boot = s.issue_bootstrap();
        // Without a refresh token in the answer, the presented one stays live.
        let (_, body) = present(&s, &boot, Some(Fault::OmitRefreshToken)).await;
        assert!(body.get("refresh_token").is_none());
        let (status, body) = present(&s, &boot, Some(Fault::OmitExpiresIn)).await;
        assert_eq!(status, 200);
        assert!(body.get("expires_in").is_none());
        let next = body["refresh_token"].as_str().unwrap().to_owned();
        let value = serde_json::json!("soon");
        let (_, body) = present(&s, &next, Some(Fault::ExpiresIn { value })).await;
        assert_eq!(body["expires_in"], "soon");
    }
}
