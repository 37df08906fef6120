//! Authorization-server discovery: RFC 8414 metadata, with OpenID Connect Discovery's
//! location as the fallback that most providers (Okta, Auth0, Keycloak,
//! django-oauth-toolkit) serve.

use serde::Deserialize;
use url::Url;

use crate::config::check_server_url;
use crate::oauth::http::{error_chain, read_capped};

/// The parts of the metadata tokend uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub authorization_endpoint: Option<Url>,
    pub token_endpoint: Url,
    pub code_challenge_methods: Vec<String>,
}

#[derive(Deserialize)]
struct RawMetadata {
    issuer: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("discovery at {issuer}: {message}")]
pub struct DiscoveryError {
    issuer: String,
    message: String,
}

/// Where the metadata of `issuer` may be: RFC 8414 §3.1 inserts the well-known name
/// between host and path; OpenID Connect Discovery appends it.
pub fn metadata_urls(issuer: &Url) -> [Url; 2] {
    let path = issuer.path().trim_end_matches('/');
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    [rfc8414, oidc]
}

/// Fetches and checks the metadata of `issuer`.
pub async fn discover(
    http: &reqwest::Client,
    issuer: &Url,
    allow_insecure_http: bool,
    timeout: std::time::Duration,
) -> Result<Metadata, DiscoveryError> {
    let fail = |message: String| DiscoveryError {
        issuer: issuer.to_string(),
        message,
    };
    let mut tried = Vec::new();
    for url in metadata_urls(issuer) {
        let get = async {
            let response = http
                .get(url.clone())
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| fail(error_chain(&e)))?;
            let status = response.status();
            if !status.is_success() {
                return Ok(Err(status.as_u16()));
            }
            read_capped(response)
                .await
                .map(Ok)
                .map_err(|e| fail(format!("{url}: cannot read the metadata: {e:?}")))
        };
        let body = match tokio::time::timeout(timeout, get).await {
            Ok(Ok(Ok(body))) => body,
            Ok(Ok(Err(status))) => {
                tried.push(format!("{url}: HTTP {status}"));
                continue;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(fail(format!(
                    "{url}: no answer within {}",
                    humantime::format_duration(timeout)
                )));
            }
        };
        let raw: RawMetadata = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("{url}: not metadata JSON: {e}")))?;
        return check(raw, issuer, allow_insecure_http).map_err(fail);
    }
    Err(fail(format!("no metadata ({})", tried.join("; "))))
}

fn check(raw: RawMetadata, issuer: &Url, allow_insecure_http: bool) -> Result<Metadata, String> {
    // RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
    if raw.issuer.trim_end_matches('/') != issuer.as_str().trim_end_matches('/') {
        return Err(format!(
            "the metadata names issuer {:?}, not this one",
            raw.issuer
        ));
    }
    let endpoint = |name: &str, text: Option<String>| -> Result<Option<Url>, String> {
        let Some(text) = text else { return Ok(None) };
        let url = Url::parse(&text).map_err(|e| format!("{name} {text:?}: {e}"))?;
        check_server_url(&url, allow_insecure_http).map_err(|e| format!("{name}: {e}"))?;
        Ok(Some(url))
    };
    Ok(Metadata {
        authorization_endpoint: endpoint("authorization_endpoint", raw.authorization_endpoint)?,
        token_endpoint: endpoint("token_endpoint", raw.token_endpoint)?
            .ok_or("the metadata has no token_endpoint")?,
        code_challenge_methods: raw.code_challenge_methods_supported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_locations() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            metadata_urls(&u("https://a.example")).map(|u| u.to_string()),
            [
                "https://a.example/.well-known/oauth-authorization-server",
                "https://a.example/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            metadata_urls(&u("https://a.example/tenant/o/")).map(|u| u.to_string()),
            [
                "https://a.example/.well-known/oauth-authorization-server/tenant/o",
                "https://a.example/tenant/o/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn metadata_is_checked() {
        let issuer = Url::parse("https://a.example").unwrap();
        let raw = |iss: &str, token: Option<&str>| RawMetadata {
            issuer: iss.into(),
            authorization_endpoint: Some("https://a.example/authorize".into()),
            token_endpoint: token.map(Into::into),
            code_challenge_methods_supported: vec!["S256".into()],
        };
        let m = check(
            raw("https://a.example/", Some("https://a.example/token")),
            &issuer,
            false,
        )
        .unwrap();
        assert_eq!(m.token_endpoint.as_str(), "https://a.example/token");
        assert!(
            check(
                raw("https://evil.example", Some("https://a.example/t")),
                &issuer,
                false
            )
            .unwrap_err()
            .contains("names issuer")
        );
        assert!(check(raw("https://a.example", None), &issuer, false).is_err());
        assert!(
            check(
                raw("https://a.example", Some("http://a.example/t")),
                &issuer,
                false
            )
            .unwrap_err()
            .contains("token_endpoint")
        );
    }
}
