//! Failures: backoff, the quick retry, rotated tokens kept, blocking and unblocking, writes.

use std::time::Duration;

use secrecy::SecretString;

use super::*;

#[test]
fn transient_failures_back_off_exponentially_and_honour_retry_after() {
    let mut m = machine();
    m.start(t(0), None, Some(bootstrap("rt-b")));
    let mut f = failure(FailureKind::Transient);
    let r = m.failed(&mut f, t(0), true, t(0), 0.999);
    assert_eq!(
        r,
        Reaction::Retry {
            delay: Duration::from_secs(1),
            kind: RetryKind::Transient,
            token_expired: true
        }
    );
    assert_eq!(m.phase(), &Phase::RetryAt(t(1)));
    // The ceiling doubles: attempt 3 may wait up to 4 s; full jitter picks in between.
    m.failed(&mut failure(FailureKind::Transient), t(1), true, t(1), 0.0);
    let r = m.failed(&mut failure(FailureKind::Transient), t(2), true, t(2), 1.0);
    assert!(matches!(r, Reaction::Retry { delay, .. } if delay == Duration::from_secs(4)));
    // A server's Retry-After wins over a shorter backoff.
    let mut f = failure(FailureKind::Transient);
    f.retry_after = Some(Duration::from_secs(30));
    let r = m.failed(&mut f, t(3), true, t(3), 0.0);
    assert!(matches!(r, Reaction::Retry { delay, .. } if delay == Duration::from_secs(30)));
    assert_eq!(m.last_error_text(), "HTTP 503");
    // Still the bootstrap token: nothing rotated.
    assert_eq!(sent(&m), ("rt-b".into(), true));
}

#[test]
fn backoff_never_sleeps_past_the_expiry_of_a_valid_token() {
    let mut m = machine();
    m.start(t(0), Some(stored("rt-1", t(0), "b")), None);
    // Many failures: the backoff could reach 60 s, but the token expires in 5 s.
    for _ in 0..10 {
        m.failed(
            &mut failure(FailureKind::Transient),
            t(3590),
            false,
            t(3595),
            1.0,
        );
    }
    assert_eq!(m.phase(), &Phase::RetryAt(t(3600)));
    let r = m.failed(
        &mut failure(FailureKind::Transient),
        t(3595),
        false,
        t(3595),
        1.0,
    );
    assert!(matches!(
        r,
        Reaction::Retry {
            token_expired: false,
            ..
        }
    ));
}

#[test]
fn an_ambiguous_failure_gets_one_quick_retry_with_the_same_token() {
    let mut m = machine();
    m.start(t(0), Some(stored("rt-1", t(0), "b")), None);
    let r = m.failed(
        &mut failure(FailureKind::Ambiguous),
        t(2700),
        false,
        t(2700),
        1.0,
    );
    assert!(matches!(
        r,
        Reaction::Retry { kind: RetryKind::Quick, delay, .. } if delay == schedule::AMBIGUOUS_RETRY
    ));
    assert_eq!(sent(&m), ("rt-1".into(), false));
    let r = m.failed(
        &mut failure(FailureKind::Ambiguous),
        t(2701),
        false,
        t(2701),
        0.0,
    );
    assert!(matches!(
        r,
        Reaction::Retry {
            kind: RetryKind::Ambiguous,
            ..
        }
    ));
    // A success resets it: the next ambiguous failure gets its quick retry again.
    m.succeeded(
        answer("at", Some("rt-2"), Some(3600)),
        Some(SecretString::from("rt-1".to_owned())),
        t(2702),
        false,
    );
    let r = m.failed(
        &mut failure(FailureKind::Ambiguous),
        t(5400),
        false,
        t(5400),
        0.0,
    );
    assert!(matches!(
        r,
        Reaction::Retry {
            kind: RetryKind::Quick,
            ..
        }
    ));
}

#[test]
fn an_unexpected_answer_retries_at_the_maximum() {
    let mut m = machine();
    m.start(t(0), None, Some(bootstrap("rt-b")));
    let r = m.failed(&mut failure(FailureKind::Unexpected), t(0), true, t(0), 0.0);
    assert!(matches!(
        r,
        Reaction::Retry { kind: RetryKind::Unexpected, delay, .. } if delay == Duration::from_secs(60)
    ));
}

#[test]
fn a_rotated_token_in_an_unusable_answer_is_kept_and_the_bootstrap_dropped() {
    let mut m = machine();
    m.start(t(0), None, Some(bootstrap("rt-b")));
    let mut f = failure(FailureKind::Transient);
    f.rotated = Some(SecretString::from("rt-2".to_owned()));
    m.failed(&mut f, t(0), true, t(0), 0.0);
    assert!(f.rotated.is_none(), "taken");
    assert!(m.needs_save(), "saved before anything else");
    let state = m.state().unwrap();
    assert_eq!(
        state.refresh_token.as_ref().unwrap().expose_secret(),
        "rt-2"
    );
    assert!(state.access_token.is_none());
    assert_eq!(state.bootstrap_sha256, bootstrap("rt-b").digest);
    assert_eq!(state.last_error.as_ref().unwrap().message, "HTTP 503");
    assert_eq!(
        sent(&m),
        ("rt-2".into(), false),
        "never the bootstrap again"
    );
}

#[test]
fn a_permanent_failure_blocks_until_a_file_changes_or_sighup() {
    let mut m = machine();
    m.start(t(0), Some(stored("rt-1", t(0), "b")), None);
    let r = m.failed(
        &mut failure(FailureKind::Permanent(Permanent::Grant)),
        t(2700),
        false,
        t(2700),
        0.0,
    );
    assert_eq!(r, Reaction::Block(Block::Server(Permanent::Grant)));
    assert!(m.state().unwrap().last_error.as_ref().unwrap().blocked);
    let marks = Marks {
        bootstrap: Some(bootstrap("b").digest),
        secret: Some("secret-digest".into()),
    };
    m.block(Block::Server(Permanent::Grant), marks);
    assert!(m.is_blocked() && !m.is_due(t(9999)));
    let health = m.health(t(2701));
    assert!(health.blocked && !health.ready);
    // The token already published stays valid until it expires.
    assert!(m.current_token(t(2701)).is_some());
    assert_eq!(m.refresh_now(t(2702)), Err(Block::Server(Permanent::Grant)));
    // The same files: nothing happens.
    assert_eq!(
        m.unblock_by_files(
            t(2705),
            Some(bootstrap("b")),
            Some("secret-digest".into()),
            true
        ),
        None
    );
    // A secret given inline cannot change on disk.
    assert_eq!(
        m.unblock_by_files(t(2705), None, Some("other".into()), false),
        None
    );
    // A new client secret file resumes at once.
    assert_eq!(
        m.unblock_by_files(t(2710), None, Some("other".into()), true),
        Some(Unblocked::Secret)
    );
    assert_eq!(m.phase(), &Phase::RetryAt(t(2710)));
    assert_eq!(m.last_failure(), None);
}

#[test]
fn a_new_bootstrap_file_unblocks_with_the_new_token() {
    let mut m = machine();
    m.start(t(0), Some(stored("rt-1", t(0), "b")), None);
    m.failed(
        &mut failure(FailureKind::Permanent(Permanent::Grant)),
        t(1),
        false,
        t(1),
        0.0,
    );
    m.block(
        Block::Server(Permanent::Grant),
        Marks {
            bootstrap: Some(bootstrap("b").digest),
            secret: None,
        },
    );
    assert_eq!(
        m.unblock_by_files(t(5), Some(bootstrap("rt-fresh")), None, false),
        Some(Unblocked::Bootstrap)
    );
    assert_eq!(sent(&m), ("rt-fresh".into(), true));
    assert!(m.is_due(t(5)));
}

#[test]
fn write_failures_are_retried_soon_and_reported() {
    let mut m = machine();
    m.start(t(0), Some(stored("rt-1", t(0), "b")), None);
    m.publish_failed("output /x: read-only".into());
    assert_eq!(m.next_wake(t(1), true), t(1) + WRITE_RETRY);
    let health = m.health(t(1));
    assert_eq!(health.last_error.as_deref(), Some("output /x: read-only"));
    assert!(!health.ready);
    m.published_ok();
    assert!(m.health(t(1)).ready);
    assert_eq!(m.write_error(), None);
}

#[test]
fn an_unreadable_secret_file_blocks_locally_until_it_can_be_read() {
    let mut m = machine();
    m.start(t(0), Some(stored("rt-1", t(0), "b")), None);
    let mut f = Failure::new(
        FailureKind::Local,
        "client secret: cannot read /etc/tokend/s: No such file or directory",
    );
    let r = m.failed(&mut f, t(10), false, t(10), 0.0);
    assert_eq!(r, Reaction::Block(Block::Local));
    m.block(Block::Local, Marks::default());
    let message = m.block_message(Block::Local);
    assert!(message.contains("/etc/tokend/s") && message.contains("nothing was sent"));
    assert!(!message.contains("refused"), "{message}");
    // /readyz, which the pod network may reach, is not told where the file is.
    let reason = m.health(t(11)).reason.unwrap();
    assert!(!reason.contains("/etc/tokend"), "{reason}");
    assert!(reason.contains("the log names it"), "{reason}");
    assert_eq!(m.last_failure(), Some(FailureKind::Local));
    // The file appears: refreshing resumes.
    assert_eq!(
        m.unblock_by_files(t(15), None, Some("now-readable".into()), true),
        Some(Unblocked::Secret)
    );
    assert!(m.is_due(t(15)));
}

#[test]
fn a_refused_bootstrap_falls_back_to_the_live_chain_and_is_never_sent_again() {
    let mut m = machine();
    let live = stored("rt-live", t(0), "b-old");
    // A person writes a dead token into the bootstrap file; SIGHUP adopts it.
    m.start(t(10), Some(live), Some(bootstrap("b-old")));
    assert_eq!(
        m.resume(t(20), Some(bootstrap("rt-dead"))),
        Resume::AdoptedBootstrap
    );
    assert_eq!(sent(&m), ("rt-dead".into(), true));
    let mut f = failure(FailureKind::Permanent(Permanent::Grant));
    assert_eq!(
        m.failed(&mut f, t(20), true, t(20), 0.0),
        Reaction::FellBack
    );
    assert!(!m.is_blocked());
    assert!(m.needs_save(), "the refusal is remembered on disk");
    assert_eq!(sent(&m), ("rt-live".into(), false));
    assert!(m.is_due(t(20)));
    // Neither SIGHUP, nor the files, nor a restart adopt it again.
    assert_eq!(
        m.resume(t(30), Some(bootstrap("rt-dead"))),
        Resume::Unchanged
    );
    m.succeeded(
        answer("at-2", Some("rt-live-2"), Some(3600)),
        Some(SecretString::from("rt-live".to_owned())),
        t(40),
        false,
    );
    let saved = m.state().unwrap().clone();
    assert_eq!(
        saved.refused_bootstrap_sha256,
        Some(bootstrap("rt-dead").digest)
    );
    let mut restarted = machine();
    assert_eq!(
        restarted.start(t(50), Some(saved), Some(bootstrap("rt-dead"))),
        Start::Resumed
    );
    assert_eq!(sent(&restarted), ("rt-live-2".into(), false));
    // A different token in the file is adopted as usual.
    assert_eq!(
        restarted.resume(t(60), Some(bootstrap("rt-fresh"))),
        Resume::AdoptedBootstrap
    );
}

#[test]
fn a_refused_bootstrap_without_a_chain_before_it_blocks() {
    let mut m = machine();
    m.start(t(0), None, Some(bootstrap("rt-dead")));
    let mut f = failure(FailureKind::Permanent(Permanent::Grant));
    assert_eq!(
        m.failed(&mut f, t(0), true, t(0), 0.0),
        Reaction::Block(Block::Server(Permanent::Grant))
    );
}
