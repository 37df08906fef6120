//! Where the chain comes from, success, SIGHUP, SIGUSR1, login handovers, chain age.

use std::time::Duration;

use secrecy::SecretString;

use super::*;

#[test]
fn start_from_bootstrap_refreshes_at_once() {
    let mut m = machine();
    assert_eq!(
        m.start(t(0), None, Some(bootstrap("rt-boot"))),
        Start::FromBootstrap
    );
    assert_eq!(m.phase(), &Phase::RetryAt(t(0)));
    assert!(m.is_due(t(0)));
    assert_eq!(sent(&m), ("rt-boot".into(), true));
}

#[test]
fn start_from_state_waits_for_the_deadline() {
    let mut m = machine();
    let s = stored("rt-1", t(0), "rt-boot");
    assert_eq!(
        m.start(t(10), Some(s), Some(bootstrap("rt-boot"))),
        Start::Resumed
    );
    assert_eq!(m.phase(), &Phase::Scheduled);
    let deadline = m.deadline().unwrap();
    // 0.75 ± 0.05 of the hour.
    assert!(deadline >= t(2520) && deadline <= t(2880), "{deadline:?}");
    assert!(!m.is_due(t(10)));
    assert!(m.is_due(deadline));
    assert_eq!(sent(&m), ("rt-1".into(), false));
    // Nothing to write: it sleeps until the deadline, not the write retry.
    assert_eq!(m.next_wake(t(10), true), deadline.min(t(10) + WRITE_RETRY));
}

#[test]
fn a_changed_bootstrap_replaces_the_stored_chain() {
    let mut m = machine();
    let s = stored("rt-1", t(0), "rt-boot");
    assert_eq!(
        m.start(t(10), Some(s), Some(bootstrap("rt-new"))),
        Start::BootstrapChanged
    );
    assert_eq!(m.phase(), &Phase::RetryAt(t(10)));
    assert_eq!(sent(&m), ("rt-new".into(), true));
}

#[test]
fn no_state_and_no_bootstrap_blocks_until_sighup_restarts() {
    let mut m = machine();
    assert_eq!(m.start(t(0), None, None), Start::NoBootstrap);
    m.block(Block::NoBootstrap, Marks::default());
    assert!(m.is_blocked());
    assert!(!m.is_due(t(100)));
    assert_eq!(m.next_wake(t(0), true), t(0) + BLOCKED_POLL);
    assert!(
        m.block_message(Block::NoBootstrap)
            .contains("tokend login c")
    );
    assert_eq!(m.refresh_now(t(1)), Err(Block::NoBootstrap));
    assert_eq!(m.resume(t(2), None), Resume::Restart);
    assert_eq!(m.phase(), &Phase::Scheduled);
    assert!(m.state().is_none());
    assert_eq!(
        m.start(t(2), None, Some(bootstrap("rt-b"))),
        Start::FromBootstrap
    );
}

#[test]
fn an_unreadable_state_blocks_and_restarts_on_sighup() {
    let mut m = machine();
    m.block(Block::UnreadableState, Marks::default());
    assert!(
        m.block_message(Block::UnreadableState)
            .contains("/tmp/m/c.json")
    );
    // The health (and /readyz) says what, and leaves the path to the log.
    let reason = m.health(t(0)).reason.unwrap();
    assert!(
        reason.starts_with("blocked: ") && !reason.contains("/tmp/m"),
        "{reason}"
    );
    assert!(m.unready_reason(t(0)).contains("/tmp/m/c.json"));
    // A new bootstrap file alone does not unblock it: the state's chain may be live.
    assert_eq!(m.resume(t(1), Some(bootstrap("rt-b"))), Resume::Restart);
}

#[test]
fn success_saves_first_then_publishes_then_schedules() {
    let mut m = machine();
    m.start(t(0), None, Some(bootstrap("rt-boot")));
    let rotated = m.succeeded(
        answer("at-1", Some("rt-2"), Some(600)),
        Some(SecretString::from("rt-boot".to_owned())),
        t(1),
        true,
    );
    assert_eq!(rotated.expires_at, t(601));
    assert_eq!(rotated.lifetime, Duration::from_secs(600));
    assert!(m.needs_save() && m.needs_publish());
    assert!(!m.health(t(2)).ready, "not ready before it is saved");
    assert_eq!(
        m.health(t(2)).reason.as_deref(),
        Some("the state is not saved")
    );
    m.saved();
    assert_eq!(
        m.health(t(2)).reason.as_deref(),
        Some("outputs not written")
    );
    assert!(m.published_ok(), "the rotation's hooks are due once");
    assert!(!m.published_ok());
    assert!(m.health(t(2)).ready);
    assert_eq!(m.phase(), &Phase::Scheduled);
    let state = m.state().unwrap();
    assert_eq!(
        state.refresh_token.as_ref().unwrap().expose_secret(),
        "rt-2"
    );
    assert_eq!(state.chain_started_at, t(1));
    assert_eq!(state.bootstrap_sha256, bootstrap("rt-boot").digest);
    assert_eq!(sent(&m), ("rt-2".into(), false));
    // Readiness ends at expiry, and the loop wakes for it.
    assert!(!m.health(t(601)).ready);
    assert!(m.next_wake(t(500), true) <= t(601));
}

#[test]
fn an_answer_without_a_refresh_token_keeps_the_old_one() {
    let mut m = machine();
    m.start(t(0), Some(stored("rt-1", t(0), "b")), None);
    m.succeeded(
        answer("at-2", None, None),
        Some(SecretString::from("rt-1".to_owned())),
        t(5),
        false,
    );
    let state = m.state().unwrap();
    assert_eq!(
        state.refresh_token.as_ref().unwrap().expose_secret(),
        "rt-1"
    );
    // No expires_in: the default lifetime (an hour), from the moment it was sent.
    assert_eq!(state.expires_at, Some(t(5) + HOUR));
    // No scope in the answer: the previous one stays.
    assert_eq!(state.scope.as_deref(), Some("a"));
    assert_eq!(state.chain_started_at, t(0), "the chain goes on");
}

#[test]
fn sighup_retries_a_blocked_credential_or_adopts_a_changed_bootstrap() {
    let mut m = machine();
    m.start(t(0), Some(stored("rt-1", t(0), "b")), Some(bootstrap("b")));
    // Nothing changed and nothing blocked.
    assert_eq!(m.resume(t(1), Some(bootstrap("b"))), Resume::Unchanged);
    assert_eq!(m.phase(), &Phase::Scheduled);
    m.failed(
        &mut failure(FailureKind::Permanent(Permanent::Client)),
        t(2),
        false,
        t(2),
        0.0,
    );
    m.block(Block::Server(Permanent::Client), Marks::default());
    assert_eq!(m.resume(t(3), Some(bootstrap("b"))), Resume::Retrying);
    assert_eq!(m.phase(), &Phase::RetryAt(t(3)));
    assert_eq!(sent(&m), ("rt-1".into(), false));
    assert_eq!(
        m.resume(t(4), Some(bootstrap("b2"))),
        Resume::AdoptedBootstrap
    );
    assert_eq!(sent(&m), ("b2".into(), true));
}

#[test]
fn sigusr1_refreshes_now_unless_blocked() {
    let mut m = machine();
    m.start(t(0), Some(stored("rt-1", t(0), "b")), None);
    assert!(!m.is_due(t(10)));
    assert_eq!(m.refresh_now(t(10)), Ok(()));
    assert!(m.is_due(t(10)));
}

#[test]
fn a_login_handover_is_adopted_only_when_newer() {
    let mut m = machine();
    m.start(t(100), Some(stored("rt-1", t(100), "b")), None);
    assert!(!m.is_newer_chain(&stored("rt-old", t(50), ""), None));
    assert!(!m.is_newer_chain(&stored("rt-same", t(100), ""), None));
    let login = stored("rt-login", t(200), "");
    assert!(m.is_newer_chain(&login, None));
    m.failed(
        &mut failure(FailureKind::Permanent(Permanent::Grant)),
        t(150),
        false,
        t(150),
        0.0,
    );
    m.block(Block::Server(Permanent::Grant), Marks::default());
    m.adopt(login, t(200));
    assert_eq!(m.phase(), &Phase::Scheduled);
    assert!(m.needs_save() && m.needs_publish());
    assert_eq!(sent(&m), ("rt-login".into(), false));
    assert_eq!(m.last_failure(), None);
    // With nothing in memory, the stored chain is the one compared.
    let empty = machine();
    assert!(!empty.is_newer_chain(&stored("x", t(10), ""), Some(t(20))));
    assert!(empty.is_newer_chain(&stored("x", t(30), ""), Some(t(20))));
    assert!(empty.is_newer_chain(&stored("x", t(30), ""), None));
}

#[test]
fn the_chain_age_warning_is_due_at_its_point_then_daily() {
    let text = r#"
        [credentials.c]
        client_id = "id"
        client_secret = "s3cret-value"
        refresh_token_max_age = "30d"
        warn_before = "5d"
    "#;
    let cfg = crate::config::load_from_str(text, "t.toml", [])
        .unwrap()
        .credentials["c"]
        .clone();
    let mut m = Machine::new(cfg);
    m.start(t(0), Some(stored("rt-1", t(0), "b")), None);
    let day = 86_400;
    assert_eq!(m.chain_warning_due(t(24 * day)), None);
    let w = m.chain_warning_due(t(25 * day)).unwrap();
    assert_eq!(w.ends_at, t(30 * day));
    assert_eq!(w.left, Duration::from_secs(5 * day));
    assert_eq!(m.chain_warning_due(t(25 * day + 10)), None, "once a day");
    assert!(m.chain_warning_due(t(26 * day)).is_some());
    assert!(m.health(t(26 * day)).chain_warning);
}
