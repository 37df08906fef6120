//! How the emulator's token endpoint knows its client: a secret as the configured
//! `client_auth` carries it, a signed assertion (`private_key_jwt`), or the client id
//! beside a certificate the TLS layer has already verified (`tls_client_auth`).

use std::collections::HashMap;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::ClientAuth;
use crate::emulator::memory::{Shared, lock};
use crate::emulator::model::{EmulatorConfig, TOKEN_PATH};
use crate::oauth::assertion::{ASSERTION_TYPE, Claims, LIFETIME};

/// Whether the request comes from the configured client.
pub fn authenticated(
    shared: &Shared,
    cfg: &EmulatorConfig,
    req_auth: Option<&str>,
    form: &HashMap<String, String>,
) -> bool {
    match cfg.auth {
        ClientAuth::PrivateKeyJwt => {
            let audience = format!("{}{TOKEN_PATH}", shared.base);
            match verified_assertion(cfg, form, &audience) {
                // RFC 7523 §3: a server may refuse a `jti` it has seen.
                Some(jti) => lock(&shared.inner).assertion_ids.insert(jti),
                None => false,
            }
        }
        // The server's TLS configuration requires and verifies the certificate.
        ClientAuth::TlsClientAuth => form.get("client_id") == Some(&cfg.client_id),
        _ => {
            client_secret(cfg.auth, req_auth, form)
                == Some((cfg.client_id.clone(), cfg.client_secret.clone()))
        }
    }
}

/// The id and secret as the configured authentication mode carries them.
pub fn client_secret(
    auth: ClientAuth,
    req_auth: Option<&str>,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    match auth {
        ClientAuth::Post => Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        )),
        ClientAuth::Basic | ClientAuth::BasicUnencoded => {
            let encoded = req_auth?.strip_prefix("Basic ")?;
            let decoded = String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()?,
            )
            .ok()?;
            let (id, secret) = decoded.split_once(':')?;
            if auth == ClientAuth::BasicUnencoded {
                return Some((id.to_owned(), secret.to_owned()));
            }
            // RFC 6749 §2.3.1: each part is application/x-www-form-urlencoded.
            let decode = |s: &str| {
                form_urlencoded::parse(s.as_bytes())
                    .next()
                    .map(|(k, _)| k.into_owned())
                    .unwrap_or_default()
            };
            Some((decode(id), decode(secret)))
        }
        ClientAuth::PrivateKeyJwt | ClientAuth::TlsClientAuth => None,
    }
}

/// The `jti` of a client assertion that RFC 7523 §3 accepts: signed by the client's
/// key, issued by and about the client, for this token endpoint, short-lived.
fn verified_assertion(
    cfg: &EmulatorConfig,
    form: &HashMap<String, String>,
    audience: &str,
) -> Option<String> {
    if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
        return None;
    }
    let jwt = form.get("client_assertion")?;
    let pem = cfg.assertion_key.as_deref()?;
    let alg = jsonwebtoken::decode_header(jwt).ok()?.alg;
    let key = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => return None,
    }
    .ok()?;
    let mut rules = Validation::new(alg);
    rules.set_audience(&[audience]);
    rules.set_issuer(&[&cfg.client_id]);
    rules.sub = Some(cfg.client_id.clone());
    rules.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<Claims>(jwt, &key, &rules)
        .ok()?
        .claims;
    let short = claims.exp.saturating_sub(claims.iat) <= LIFETIME.as_secs().max(300);
    let id_matches = form.get("client_id").is_none_or(|id| *id == cfg.client_id);
    (short && id_matches).then_some(claims.jti)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::endpoint::basic_header;

    #[test]
    fn client_credentials_as_each_mode_carries_them() {
        let none = HashMap::new();
        let secret = "a+b/c:d=e%f";
        let header = |encode| basic_header("id", secret, encode);
        let rfc = header(true);
        let expected = Some(("id".to_owned(), secret.to_owned()));
        assert_eq!(
            client_secret(ClientAuth::Basic, rfc.to_str().ok(), &none),
            expected
        );
        let curl = header(false);
        assert_eq!(
            client_secret(ClientAuth::BasicUnencoded, curl.to_str().ok(), &none),
            expected
        );
        // Sent unencoded to a server that decodes, the secret arrives changed.
        assert_ne!(
            client_secret(ClientAuth::Basic, curl.to_str().ok(), &none),
            expected
        );
        let form = HashMap::from([
            ("client_id".to_owned(), "id".to_owned()),
            ("client_secret".to_owned(), secret.to_owned()),
        ]);
        assert_eq!(client_secret(ClientAuth::Post, None, &form), expected);
        assert_eq!(client_secret(ClientAuth::Post, None, &none), None);
        assert_eq!(
            client_secret(ClientAuth::Basic, Some("Bearer x"), &none),
            None
        );
    }
}
