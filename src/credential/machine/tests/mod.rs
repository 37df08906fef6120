//! Every phase transition of the state machine, with injected time and chance.

mod chain;
mod failures;
mod grant;

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::oauth::{Failure, FailureKind, Permanent, TokenAnswer};
use crate::store::{State, VERSION, bootstrap_digest};

pub(super) const HOUR: Duration = Duration::from_secs(3600);

pub(super) fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

pub fn config() -> CredentialConfig {
    let text = r#"
        state_dir = "/tmp/m"
        [credentials.c]
        token_url = "https://id.example/token"
        client_id = "id"
        client_secret = "s3cret-value"
        [credentials.c.retry]
        initial = "1s"
        max = "60s"
    "#;
    crate::config::load_from_str(text, "t.toml", [])
        .unwrap()
        .credentials["c"]
        .as_ref()
        .clone()
}

pub(super) fn machine() -> Machine {
    Machine::new(std::sync::Arc::new(config()))
}

pub(super) fn bootstrap(token: &str) -> Bootstrap {
    let token = SecretString::from(token.to_owned());
    let digest = bootstrap_digest(&token);
    Bootstrap { token, digest }
}

/// A stored state whose token was obtained at `obtained` and lives an hour.
pub(super) fn stored(refresh: &str, obtained: SystemTime, boot: &str) -> State {
    State {
        version: VERSION,
        generation: 1,
        refresh_token: Some(SecretString::from(refresh.to_owned())),
        access_token: Some(SecretString::from("at-old".to_owned())),
        token_type: "Bearer".into(),
        scope: Some("a".into()),
        obtained_at: Some(obtained),
        expires_at: Some(obtained + HOUR),
        chain_started_at: obtained,
        bootstrap_sha256: bootstrap(boot).digest,
        refused_bootstrap_sha256: None,
        last_error: None,
    }
}

pub(super) fn answer(access: &str, refresh: Option<&str>, expires_in: Option<u64>) -> TokenAnswer {
    TokenAnswer {
        access_token: SecretString::from(access.to_owned()),
        token_type: "Bearer".into(),
        expires_in: expires_in.map(Duration::from_secs),
        refresh_token: refresh.map(|r| SecretString::from(r.to_owned())),
        scope: None,
    }
}

pub(super) fn failure(kind: FailureKind) -> Failure {
    Failure::new(kind, "HTTP 503")
}

pub(super) fn sent(m: &Machine) -> (String, bool) {
    let (token, from_bootstrap) = m.token_to_send().expect("a token to send");
    let token = token.expect("a refresh token");
    (token.expose_secret().to_owned(), from_bootstrap)
}
