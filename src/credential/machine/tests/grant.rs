//! The client-credentials grant (design.md §12): no chain to start from, resume or keep.

use super::*;

fn client_credentials() -> Machine {
    let mut cfg = config();
    cfg.grant = crate::config::GrantType::ClientCredentials;
    cfg.chain.max_age = None;
    Machine::new(std::sync::Arc::new(cfg))
}

#[test]
fn with_no_state_the_first_token_is_asked_for_at_once_without_a_refresh_token() {
    let mut m = client_credentials();
    assert_eq!(m.start(t(0), None, None), Start::ClientCredentials);
    assert!(m.is_due(t(0)) && !m.is_blocked());
    let (token, from_bootstrap) = m.token_to_send().unwrap();
    assert!(token.is_none() && !from_bootstrap);
    // A refresh token in the answer (RFC 6749 §4.4.3 says none should come) is not kept.
    m.succeeded(
        answer("at-1", Some("rt-unasked"), Some(600)),
        None,
        t(1),
        false,
    );
    let state = m.state().unwrap();
    assert!(state.refresh_token.is_none());
    assert_eq!(state.access_token.as_ref().unwrap().expose_secret(), "at-1");
    assert_eq!((m.generation(), m.is_due(t(2))), (1, false));
    assert!(m.chain_warning_due(t(2)).is_none());
    // No chain age in health, hence none in the metrics.
    assert!(m.health(t(2)).chain_started_at.is_none());
}

#[test]
fn a_stored_token_is_used_until_its_refresh_time_and_a_rotated_one_is_not_kept() {
    let mut m = client_credentials();
    let mut state = stored("unused", t(0), "");
    state.refresh_token = None;
    assert_eq!(m.start(t(60), Some(state), None), Start::Resumed);
    assert!(!m.is_due(t(60)), "a restart does not fetch early");
    assert!(m.is_due(t(3000)));
    let mut f = failure(FailureKind::Ambiguous);
    f.rotated = Some(SecretString::from("rt-odd".to_owned()));
    m.failed(&mut f, t(3000), false, t(3000), 0.5);
    assert!(m.state().unwrap().refresh_token.is_none());
    assert_eq!(m.token_to_send().unwrap().0.map(|_| ()), None);
}

#[test]
fn a_chain_never_asks_for_client_credentials_from_a_state_without_a_refresh_token() {
    // The credential was a client-credentials one, then became a chain.
    let mut m = machine();
    let mut state = stored("unused", t(0), "");
    state.refresh_token = None;
    m.start(t(4000), Some(state.clone()), None);
    assert!(
        m.token_to_send().is_none(),
        "nothing to send: the task blocks"
    );
    // A bootstrap token starts the chain.
    let started = m.start(t(4000), Some(state), Some(bootstrap("rt-boot")));
    assert_eq!(started, Start::BootstrapChanged);
    assert_eq!(sent(&m), ("rt-boot".into(), true));
}
