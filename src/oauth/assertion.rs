//! `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9; design.md §12): a JWT signed
//! with the client's private key, made afresh for every token request. The key file
//! is read at each use, like secret files, so a rotated key is picked up by itself.
//! No error here holds anything read from the key.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde::Serialize;

use crate::config::{AssertionAlg, AssertionConfig};

/// The `client_assertion_type` of a JWT assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long an assertion is good for: long enough for a slow request, well inside the
/// five minutes servers accept (design.md §12).
pub const LIFETIME: Duration = Duration::from_secs(60);

/// The claims RFC 7523 §3 asks of a client assertion.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    /// Unique per assertion: servers refuse a replayed one.
    pub jti: String,
}

/// Why the client-assertion key cannot sign: its file, and what is wrong with it (never
/// what it holds).
#[derive(Debug, thiserror::Error)]
#[error("client_assertion_key_file: {}: {why}", .path.display())]
pub struct KeyError {
    pub path: PathBuf,
    pub why: String,
}

impl KeyError {
    fn at(path: &Path, why: impl Into<String>) -> Self {
        KeyError {
            path: path.to_owned(),
            why: why.into(),
        }
    }
}

/// A private key ready to sign, and the algorithm it signs with.
pub struct SigningKey {
    key: EncodingKey,
    alg: AssertionAlg,
}

impl SigningKey {
    /// Reads the configured key file now and tries it (for `check`).
    pub fn load(cfg: &AssertionConfig) -> Result<Self, KeyError> {
        Self::read(cfg)?
            .tried()
            .map_err(|why| KeyError::at(&cfg.key_file, why))
    }

    /// The configured key file as it is now, not tried: a request signs anyway.
    fn read(cfg: &AssertionConfig) -> Result<Self, KeyError> {
        let pem =
            std::fs::read(&cfg.key_file).map_err(|e| KeyError::at(&cfg.key_file, e.to_string()))?;
        Self::parse(&pem, cfg.alg).map_err(|why| KeyError::at(&cfg.key_file, why))
    }

    /// The key, once it has signed a sample: a key of the right family can still be
    /// unusable (an EC key on another curve, a short RSA key), and `check` says so.
    fn tried(self) -> Result<Self, String> {
        match self.sign(&Claims::example(), None) {
            Ok(_) => Ok(self),
            Err(_) => Err(self.unusable()),
        }
    }

    /// A PKCS#8 PEM private key, of a family `alg` (when configured) fits; not tried.
    fn parse(pem: &[u8], alg: Option<AssertionAlg>) -> Result<Self, String> {
        let text = String::from_utf8_lossy(pem);
        match pem_label(&text) {
            Some("PRIVATE KEY") => {}
            Some(label @ ("RSA PRIVATE KEY" | "EC PRIVATE KEY")) => {
                return Err(format!(
                    "holds an {label}, not a PKCS#8 key: convert it with `openssl pkcs8 -topk8 -nocrypt -in FILE`"
                ));
            }
            Some("ENCRYPTED PRIVATE KEY") => {
                return Err(
                    "holds an encrypted key: tokend needs an unencrypted PKCS#8 key (protect the file by its mode instead)"
                        .into(),
                );
            }
            Some(label) => return Err(format!("holds a {label}, not a PKCS#8 private key")),
            None => return Err("holds no PEM private key".into()),
        }
        let (key, natural) = if let Ok(k) = EncodingKey::from_ec_pem(pem) {
            (k, AssertionAlg::ES256)
        } else if let Ok(k) = EncodingKey::from_ed_pem(pem) {
            (k, AssertionAlg::EdDSA)
        } else if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
            (k, AssertionAlg::RS256)
        } else {
            return Err("is not an RSA, EC (P-256) or Ed25519 private key".into());
        };
        let alg = alg.unwrap_or(natural);
        if alg != natural {
            return Err(format!(
                "holds {}, which cannot sign {alg:?}: set client_assertion_alg = \"{natural:?}\" or leave it out",
                kind(natural)
            ));
        }
        Ok(SigningKey { key, alg })
    }

    /// Why a key of the right family failed to sign.
    fn unusable(&self) -> String {
        format!(
            "holds {} that cannot sign {:?} ({})",
            kind(self.alg),
            self.alg,
            match self.alg {
                AssertionAlg::ES256 => "ES256 needs a P-256 key",
                AssertionAlg::RS256 => "RS256 needs an RSA key of 2048 bits or more",
                AssertionAlg::EdDSA => "EdDSA needs an Ed25519 key",
            }
        )
    }

    pub fn alg(&self) -> AssertionAlg {
        self.alg
    }

    /// The compact JWS of `claims`.
    pub fn sign(
        &self,
        claims: &Claims,
        kid: Option<&str>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(match self.alg {
            AssertionAlg::RS256 => Algorithm::RS256,
            AssertionAlg::ES256 => Algorithm::ES256,
            AssertionAlg::EdDSA => Algorithm::EdDSA,
        });
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

impl Claims {
    /// A new assertion's claims: `iss` and `sub` are the client, `aud` the server.
    pub fn new(client_id: &str, audience: &str, now: SystemTime) -> Self {
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Claims {
            iss: client_id.to_owned(),
            sub: client_id.to_owned(),
            aud: audience.to_owned(),
            iat,
            exp: iat + LIFETIME.as_secs(),
            jti: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(rand::random::<[u8; 16]>()),
        }
    }

    /// What a key is tried on before it is used.
    fn example() -> Self {
        Claims::new("tokend", "https://tokend.invalid/token", SystemTime::now())
    }
}

/// A fresh assertion for one request to `token_url`, signed with the key as it is now.
pub fn make(
    cfg: &AssertionConfig,
    client_id: &str,
    token_url: &url::Url,
    now: SystemTime,
) -> Result<SecretString, KeyError> {
    // Signed once: no sample first (that is `check`'s), and a failure explained as there.
    let key = SigningKey::read(cfg)?;
    let audience = cfg.audience.as_deref().unwrap_or(token_url.as_str());
    key.sign(&Claims::new(client_id, audience, now), cfg.kid.as_deref())
        .map(SecretString::from)
        .map_err(|_| KeyError::at(&cfg.key_file, key.unusable()))
}

/// The label of the first PEM section in `text`.
fn pem_label(text: &str) -> Option<&str> {
    let rest = text.split_once("-----BEGIN ")?.1;
    Some(rest.split_once("-----")?.0)
}

fn kind(alg: AssertionAlg) -> &'static str {
    match alg {
        AssertionAlg::RS256 => "an RSA key",
        AssertionAlg::ES256 => "an EC key",
        AssertionAlg::EdDSA => "an Ed25519 key",
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use jsonwebtoken::{DecodingKey, Validation};
    use secrecy::ExposeSecret;

    use super::*;

    /// A PKCS#8 private key and its public key (SPKI), both PEM.
    fn key_pair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let pair = rcgen::KeyPair::generate_for(alg).unwrap();
        (pair.serialize_pem(), pair.public_key_pem())
    }

    /// ring cannot make RSA keys: openssl can.
    fn rsa_pair(bits: u32) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let bits = format!("rsa_keygen_bits:{bits}");
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &bits,
            "-out",
            key.to_str().unwrap(),
        ]);
        let public = run(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
        (
            std::fs::read_to_string(&key).unwrap(),
            String::from_utf8(public).unwrap(),
        )
    }

    fn config(dir: &Path, pem: &str, alg: Option<AssertionAlg>) -> AssertionConfig {
        let key_file = dir.join("client.key");
        std::fs::write(&key_file, pem).unwrap();
        AssertionConfig {
            key_file,
            alg,
            kid: Some("key-1".into()),
            audience: None,
        }
    }

    fn decode(jwt: &str, public: &str, alg: Algorithm) -> (Header, Claims) {
        let key = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(public.as_bytes()),
            Algorithm::ES256 => DecodingKey::from_ec_pem(public.as_bytes()),
            _ => DecodingKey::from_ed_pem(public.as_bytes()),
        }
        .unwrap();
        let mut rules = Validation::new(alg);
        rules.set_audience(&["https://id.example/token"]);
        let data = jsonwebtoken::decode::<Claims>(jwt, &key, &rules).unwrap();
        (data.header, data.claims)
    }

    #[test]
    fn each_key_type_signs_with_its_algorithm_and_the_claims_rfc_7523_asks() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::parse("https://id.example/token").unwrap();
        let cases = [
            (
                key_pair(&rcgen::PKCS_ECDSA_P256_SHA256),
                AssertionAlg::ES256,
                Algorithm::ES256,
            ),
            (
                key_pair(&rcgen::PKCS_ED25519),
                AssertionAlg::EdDSA,
                Algorithm::EdDSA,
            ),
            (rsa_pair(2048), AssertionAlg::RS256, Algorithm::RS256),
        ];
        let now = SystemTime::now();
        for ((private, public), alg, jws) in cases {
            let cfg = config(dir.path(), &private, None);
            assert_eq!(SigningKey::load(&cfg).unwrap().alg(), alg);
            let first = make(&cfg, "m2m", &url, now).unwrap();
            let second = make(&cfg, "m2m", &url, now).unwrap();
            let (header, claims) = decode(first.expose_secret(), &public, jws);
            assert_eq!(header.alg, jws);
            assert_eq!(header.kid.as_deref(), Some("key-1"));
            assert_eq!((claims.iss.as_str(), claims.sub.as_str()), ("m2m", "m2m"));
            assert_eq!(
                claims.aud,
                url.as_str(),
                "the audience defaults to the token URL"
            );
            let iat = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert_eq!(claims.iat, iat);
            assert_eq!(claims.exp, iat + LIFETIME.as_secs());
            assert!(LIFETIME <= Duration::from_secs(300));
            let (_, again) = decode(second.expose_secret(), &public, jws);
            assert_ne!(claims.jti, again.jti, "a new jti for every assertion");
            assert!(claims.jti.len() >= 22);
            // The configured algorithm, when it fits, changes nothing.
            let named = config(dir.path(), &private, Some(alg));
            assert_eq!(SigningKey::load(&named).unwrap().alg(), alg);
        }
    }

    #[test]
    fn a_configured_audience_replaces_the_token_url() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = key_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut cfg = config(dir.path(), &private, None);
        cfg.audience = Some("https://id.example/token".into());
        let other = url::Url::parse("https://mtls.id.example/token").unwrap();
        let jwt = make(&cfg, "m2m", &other, SystemTime::now()).unwrap();
        let (_, claims) = decode(jwt.expose_secret(), &public, Algorithm::ES256);
        assert_eq!(claims.aud, "https://id.example/token");
    }

    #[test]
    fn keys_that_cannot_sign_are_refused_with_a_reason_and_nothing_of_the_key() {
        let (ec, _) = key_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (p384, _) = key_pair(&rcgen::PKCS_ECDSA_P384_SHA384);
        let (ed, _) = key_pair(&rcgen::PKCS_ED25519);
        let cert = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        let refused = |pem: &str, alg| {
            SigningKey::parse(pem.as_bytes(), alg)
                .and_then(SigningKey::tried)
                .err()
                .unwrap()
        };
        let cases = [
            (refused(&ec, Some(AssertionAlg::RS256)), "cannot sign RS256"),
            (refused(&ed, Some(AssertionAlg::ES256)), "cannot sign ES256"),
            (refused(&p384, None), "ES256 needs a P-256 key"),
            (refused(&cert.cert.pem(), None), "holds a CERTIFICATE"),
            (refused("not a key", None), "holds no PEM private key"),
            (
                refused(&ec.replace("PRIVATE KEY", "EC PRIVATE KEY"), None),
                "not a PKCS#8 key",
            ),
            (
                refused(&ec.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"), None),
                "encrypted",
            ),
        ];
        for (message, expected) in cases {
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            assert!(
                !message.contains("MII") && !message.contains("-----"),
                "{message}"
            );
        }
        let (short_rsa, _) = rsa_pair(1024);
        let message = refused(&short_rsa, None);
        assert!(message.contains("2048 bits"), "{message}");
    }
}
