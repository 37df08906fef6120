//! How a credential's client proves who it is (design.md §5 and §12), and which keys each
//! grant takes: a secret, a signing key or a certificate, each only with the
//! `client_auth` that uses it, and no chain settings for a grant without a chain.

use crate::config::error::{ConfigError, Sources};
use crate::config::model::{AssertionConfig, ClientAuth, GrantType};
use crate::config::raw::RawCredential;
use crate::config::secret::{SecretSource, exactly_one};

/// The client's secret and assertion settings, as its `client_auth` calls for.
pub struct Client {
    pub secret: Option<SecretSource>,
    pub assertion: Option<Box<AssertionConfig>>,
}

/// Takes the client's keys out of `rc`, checking that each fits its `client_auth`.
pub fn validate_client(
    name: &str,
    rc: &mut RawCredential,
    src: &Sources,
) -> Result<Client, ConfigError> {
    let key = |k: &str| format!("credentials.{name}.{k}");
    let auth = rc.client_auth;
    let with = |k: &str| {
        src.error(
            &key(k),
            format!(
                "is not used with client_auth = \"{}\"; remove it",
                auth.word()
            ),
        )
    };
    let secret = if auth.uses_secret() {
        Some(exactly_one(
            rc.client_secret.take(),
            rc.client_secret_file.take(),
            &key("client_secret"),
            src,
        )?)
    } else if rc.client_secret.is_some() {
        return Err(with("client_secret"));
    } else if rc.client_secret_file.is_some() {
        return Err(with("client_secret_file"));
    } else {
        None
    };
    let assertion = if auth == ClientAuth::PrivateKeyJwt {
        let Some(key_file) = rc.client_assertion_key_file.take() else {
            return Err(src.error(
                &key("client_assertion_key_file"),
                "is required with client_auth = \"private_key_jwt\": the client's PKCS#8 PEM private key",
            ));
        };
        for (k, value) in [
            ("client_assertion_kid", &rc.client_assertion_kid),
            ("client_assertion_audience", &rc.client_assertion_audience),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.is_empty() || v.chars().any(char::is_control))
            {
                return Err(src.error(&key(k), "must be non-empty printable text"));
            }
        }
        Some(Box::new(AssertionConfig {
            key_file,
            alg: rc.client_assertion_alg,
            kid: rc.client_assertion_kid.take(),
            audience: rc.client_assertion_audience.take(),
        }))
    } else {
        let set = [
            (
                "client_assertion_key_file",
                rc.client_assertion_key_file.is_some(),
            ),
            ("client_assertion_alg", rc.client_assertion_alg.is_some()),
            ("client_assertion_kid", rc.client_assertion_kid.is_some()),
            (
                "client_assertion_audience",
                rc.client_assertion_audience.is_some(),
            ),
        ];
        if let Some((k, _)) = set.iter().find(|(_, set)| *set) {
            return Err(src.error(
                &key(k),
                "is used only with client_auth = \"private_key_jwt\"",
            ));
        }
        None
    };
    if auth == ClientAuth::TlsClientAuth && rc.http.client_cert_file.is_none() {
        return Err(src.error(
            &key("http.client_cert_file"),
            "is required with client_auth = \"tls_client_auth\": the client's TLS certificate, with http.client_key_file",
        ));
    }
    Ok(Client { secret, assertion })
}

/// With the client-credentials grant there is no refresh-token chain: the keys that
/// start, log in to or age one are mistakes (design.md §12).
pub fn check_grant_keys(name: &str, rc: &RawCredential, src: &Sources) -> Result<(), ConfigError> {
    if rc.grant != GrantType::ClientCredentials {
        return Ok(());
    }
    let chain_keys = [
        ("refresh_token", rc.refresh_token.is_some()),
        ("refresh_token_file", rc.refresh_token_file.is_some()),
        ("refresh_token_max_age", rc.refresh_token_max_age.is_some()),
        ("warn_before", rc.warn_before.is_some()),
        ("authorize_url", rc.authorize_url.is_some()),
        ("redirect_uri", rc.redirect_uri.is_some()),
        ("authorize_params", !rc.authorize_params.is_empty()),
    ];
    match chain_keys.iter().find(|(_, set)| *set) {
        Some((k, _)) => Err(src.error(
            &format!("credentials.{name}.{k}"),
            "has no meaning with grant = \"client_credentials\", which has no refresh token, no chain and no login; remove it",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AssertionAlg, ClientAuth, Config, ConfigError, GrantType, load_from_str};

    const M2M: &str = r#"
        state_dir = "/tmp/x"
        [credentials.m2m]
        grant = "client_credentials"
        token_url = "https://id.example/token"
        client_id = "m2m"
    "#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        load_from_str(text, "t.toml", std::iter::empty())
    }

    fn with(auth: &str, extra: &str) -> Result<Config, ConfigError> {
        load(&format!("{M2M}client_auth = \"{auth}\"\n{extra}\n"))
    }

    #[test]
    fn each_client_auth_takes_what_it_uses_and_nothing_else() {
        let c = with("basic", "client_secret = \"s3cret-value\"").unwrap();
        let m2m = &c.credentials["m2m"];
        assert_eq!(m2m.grant, GrantType::ClientCredentials);
        assert!(!m2m.has_chain() && m2m.chain.max_age.is_none());

        let c = with(
            "private_key_jwt",
            "client_assertion_key_file = \"/etc/tokend/m2m.key\"\nclient_assertion_alg = \"EdDSA\"\nclient_assertion_kid = \"k1\"",
        )
        .unwrap();
        let m2m = &c.credentials["m2m"];
        let a = m2m.assertion.as_deref().unwrap();
        assert_eq!(
            (a.alg, a.kid.as_deref()),
            (Some(AssertionAlg::EdDSA), Some("k1"))
        );
        assert!(m2m.client_secret.is_none());
        assert_eq!(
            m2m.client_file().unwrap().to_str(),
            Some("/etc/tokend/m2m.key")
        );
        // What `check` prints loads again to the same configuration.
        assert_eq!(&load(&c.redacted_toml()).unwrap(), &c);

        let tls =
            "[credentials.m2m.http]\nclient_cert_file = \"/c.pem\"\nclient_key_file = \"/k.pem\"";
        let c = with("tls_client_auth", tls).unwrap();
        assert_eq!(c.credentials["m2m"].client_auth, ClientAuth::TlsClientAuth);
        assert_eq!(&load(&c.redacted_toml()).unwrap(), &c);

        let refused = [
            ("basic", "", "client_secret", "is required"),
            ("private_key_jwt", "", "client_assertion_key_file", "PKCS#8"),
            (
                "private_key_jwt",
                "client_assertion_key_file = \"/k\"\nclient_secret = \"s3cret-value\"",
                "client_secret",
                "not used with client_auth = \"private_key_jwt\"",
            ),
            (
                "basic",
                "client_secret = \"s3cret-value\"\nclient_assertion_kid = \"k\"",
                "client_assertion_kid",
                "only with client_auth = \"private_key_jwt\"",
            ),
            (
                "private_key_jwt",
                "client_assertion_key_file = \"/k\"\nclient_assertion_alg = \"HS256\"",
                "client_assertion_alg",
                "RS256",
            ),
            ("tls_client_auth", "", "http.client_cert_file", "required"),
            (
                "tls_client_auth",
                "client_secret_file = \"/s\"",
                "client_secret_file",
                "not used",
            ),
        ];
        for (auth, extra, key, message) in refused {
            let e = with(auth, extra).unwrap_err();
            assert_eq!(
                e.key,
                format!("credentials.m2m.{key}"),
                "{auth} {extra}: {e}"
            );
            assert!(e.to_string().contains(message), "{e}");
        }
    }

    #[test]
    fn the_client_credentials_grant_takes_no_chain_keys() {
        let base = format!("{M2M}client_secret = \"s3cret-value\"\n");
        for extra in [
            "refresh_token = \"rt-1234567\"",
            "refresh_token_file = \"/rt\"",
            "refresh_token_max_age = \"30d\"",
            "warn_before = \"1d\"",
            "authorize_url = \"https://id.example/authorize\"",
            "redirect_uri = \"http://127.0.0.1:8400/callback\"",
            "authorize_params = { prompt = \"consent\" }",
        ] {
            let e = load(&format!("{base}{extra}\n")).unwrap_err();
            let key = extra.split(' ').next().unwrap();
            assert_eq!(e.key, format!("credentials.m2m.{key}"), "{e}");
            assert!(e.message.contains("no refresh token"), "{e}");
        }
        let e = load(&base.replace("client_credentials", "password")).unwrap_err();
        assert!(e.to_string().contains("client_credentials"), "{e}");
    }
}
