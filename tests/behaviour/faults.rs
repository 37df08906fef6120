//! What the daemon does with each kind of failure: retries, waits, keeps, blocks, resumes.

use std::time::Duration;

use crate::common::{Env, wait_for};
use tokend::emulator::Fault;

const SEC: Duration = Duration::from_secs(1);

async fn started() -> (Env, crate::common::Daemon) {
    let env = Env::new(Duration::from_secs(3600)).await;
    let d = env.run_started(&["c"]).await;
    wait_for("first token", 5 * SEC, || env.raw_output("c").is_some()).await;
    (env, d)
}

/// Queues `faults`, asks for a refresh, and waits for `n` more token requests.
async fn provoke(
    env: &Env,
    d: &crate::common::Daemon,
    faults: Vec<Fault>,
    n: usize,
    limit: Duration,
) -> Vec<tokend::emulator::TokenRequest> {
    let before = env.emu.requests().len();
    for f in faults {
        env.emu.push_fault(f);
    }
    d.signal(libc::SIGUSR1);
    wait_for("requests", limit, || env.emu.requests().len() >= before + n).await;
    env.emu.requests()[before..].to_vec()
}

#[tokio::test]
async fn ambiguous_failures_retry_at_once_with_the_same_token() {
    let (env, mut d) = started().await;
    for fault in [
        Fault::Reset,
        Fault::Garbage,
        Fault::Delay { ms: 3500 },
        Fault::HugeBody { bytes: 100_000 },
    ] {
        let reqs = provoke(&env, &d, vec![fault.clone()], 2, 10 * SEC).await;
        assert_eq!(
            reqs[0].refresh_token(),
            reqs[1].refresh_token(),
            "{fault:?}: retry with the same token"
        );
        let gap = reqs[1].at.duration_since(reqs[0].at);
        let limit = if matches!(fault, Fault::Delay { .. }) {
            3 * SEC + 1500 * Duration::from_millis(1)
        } else {
            1500 * Duration::from_millis(1)
        };
        assert!(gap < limit, "{fault:?}: quick retry took {gap:?}");
        wait_for("success", 5 * SEC, || {
            env.emu.stats().refreshes as usize
                == env.emu.requests().len() - env.emu.stats().faults_served as usize
        })
        .await;
    }
    assert_eq!(d.stop().await, 0);
    assert_eq!(env.emu.stats().reuses, 0);
}

#[tokio::test]
async fn retry_after_is_honoured_in_both_forms() {
    let (env, mut d) = started().await;
    let reqs = provoke(
        &env,
        &d,
        vec![Fault::Status {
            status: 503,
            body: String::new(),
            retry_after: Some("2".into()),
        }],
        2,
        10 * SEC,
    )
    .await;
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= 2 * SEC && gap < 4 * SEC,
        "503 Retry-After: 2 → waited {gap:?}"
    );

    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + 4 * SEC);
    let reqs = provoke(
        &env,
        &d,
        vec![Fault::Status {
            status: 429,
            body: String::new(),
            retry_after: Some(date),
        }],
        2,
        10 * SEC,
    )
    .await;
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= 2 * SEC && gap < 5 * SEC,
        "429 with an HTTP-date → waited {gap:?}"
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test]
async fn server_errors_back_off_and_unexpected_answers_wait_the_maximum() {
    let (env, mut d) = started().await;
    let five_hundreds = vec![
        Fault::Status {
            status: 500,
            body: String::new(),
            retry_after: None
        };
        3
    ];
    let reqs = provoke(&env, &d, five_hundreds, 4, 10 * SEC).await;
    let refreshed = reqs.last().unwrap().refresh_token().to_owned();
    assert!(
        reqs.iter().all(|r| r.refresh_token() == refreshed),
        "the same token until it works"
    );
    assert!(reqs[1].at.duration_since(reqs[0].at) >= 200 * Duration::from_millis(1));

    // retry.max is 2s in the test configuration.
    let reqs = provoke(
        &env,
        &d,
        vec![Fault::Status {
            status: 403,
            body: "forbidden".into(),
            retry_after: None,
        }],
        2,
        10 * SEC,
    )
    .await;
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(gap >= 2 * SEC, "unexpected 4xx retried after {gap:?}");
    assert!(
        d.log_text().contains("unexpected answer"),
        "{}",
        d.log_text()
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test]
async fn answer_without_refresh_token_keeps_the_old_one() {
    let (env, mut d) = started().await;
    let kept = env.state("c").unwrap()["refresh_token"].clone();
    provoke(&env, &d, vec![Fault::OmitRefreshToken], 1, 5 * SEC).await;
    wait_for("new access token", 5 * SEC, || {
        env.emu.stats().refreshes == 2
    })
    .await;
    wait_for("state saved", 5 * SEC, || {
        env.state("c").unwrap()["access_token"] != serde_json::Value::Null
    })
    .await;
    assert_eq!(env.state("c").unwrap()["refresh_token"], kept);
    // And it still works for the next rotation.
    provoke(&env, &d, vec![], 1, 5 * SEC).await;
    wait_for("third rotation", 5 * SEC, || env.emu.stats().refreshes == 3).await;
    assert_eq!(d.stop().await, 0);
    assert_eq!(env.emu.stats().reuses, 0);
}

#[tokio::test]
async fn answer_without_expires_in_uses_the_default_lifetime() {
    let env = Env::new(Duration::from_secs(3600)).await;
    env.bootstrap("c");
    let text = env.credential_toml("c", "").replace(
        "min_remaining = \"1s\"",
        "min_remaining = \"1s\"\ndefault_lifetime = \"90s\"",
    );
    let cfg = env.write_config_text(&format!(
        "state_dir = \"{}/state\"\n{text}",
        env.dir.path().display()
    ));
    env.emu.push_fault(Fault::OmitExpiresIn);
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "d.log", &[]);
    wait_for("first token", 5 * SEC, || env.state("c").is_some()).await;
    let s = env.state("c").unwrap();
    let t = |k: &str| humantime::parse_rfc3339_weak(s[k].as_str().unwrap()).unwrap();
    assert_eq!(
        t("expires_at").duration_since(t("obtained_at")).unwrap(),
        Duration::from_secs(90)
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test]
async fn refused_client_blocks_until_the_secret_file_changes() {
    let (env, mut d) = started().await;
    env.emu.set_client_secret("rotated-secret");
    let before = env.emu.requests().len();
    d.signal(libc::SIGUSR1);
    wait_for("blocked", 5 * SEC, || {
        d.log_text().contains("refreshing stopped")
    })
    .await;
    assert!(
        d.log_text().contains("client credentials were refused"),
        "{}",
        d.log_text()
    );
    tokio::time::sleep(SEC).await;
    assert_eq!(
        env.emu.requests().len(),
        before + 1,
        "no retries while blocked"
    );

    std::fs::write(env.path("client_secret"), "rotated-secret").unwrap();
    wait_for("resumed", 10 * SEC, || env.emu.stats().refreshes == 2).await;
    assert_eq!(d.stop().await, 0);
}

#[tokio::test]
async fn unreachable_server_is_retried_with_backoff() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let mut d = env.run_started(&["c"]).await;
    wait_for("first token", 5 * SEC, || env.raw_output("c").is_some()).await;
    env.emu.stop();
    d.signal(libc::SIGUSR1);
    wait_for("retries logged", 10 * SEC, || {
        d.log_text().matches("could not connect").count() >= 3
    })
    .await;
    assert!(
        env.path("out/c/access_token").exists(),
        "the valid token stays published"
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test]
async fn backoff_never_sleeps_past_the_expiry_of_a_valid_token() {
    let env = Env::new(Duration::from_secs(6)).await;
    env.bootstrap("c");
    let text = env
        .credential_toml("c", "")
        .replace("max = \"2s\"", "max = \"60s\"");
    let cfg = env.write_config_text(&format!(
        "state_dir = \"{}/state\"\n{text}",
        env.dir.path().display()
    ));
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "d.log", &[]);
    wait_for("first token", 5 * SEC, || env.state("c").is_some()).await;
    let expires =
        humantime::parse_rfc3339_weak(env.state("c").unwrap()["expires_at"].as_str().unwrap())
            .unwrap();
    for _ in 0..12 {
        env.emu.push_fault(Fault::Status {
            status: 500,
            body: String::new(),
            retry_after: None,
        });
    }
    wait_for("the token to expire", 10 * SEC, || {
        std::time::SystemTime::now() > expires + SEC
    })
    .await;
    assert_eq!(d.stop().await, 0);
    // Requests were made as `Instant`s; compare them with the expiry through "now".
    let (now_sys, now_mono) = (std::time::SystemTime::now(), std::time::Instant::now());
    let expiry = now_mono - now_sys.duration_since(expires).unwrap();
    let reqs = env.emu.requests();
    let before: Vec<_> = reqs.iter().skip(1).filter(|r| r.at < expiry).collect();
    assert!(before.len() >= 3, "retried before expiry: {}", before.len());
    for pair in reqs.windows(2).skip(1) {
        if pair[0].at < expiry {
            let latest = expiry.max(pair[0].at + 200 * Duration::from_millis(1))
                + 100 * Duration::from_millis(1);
            assert!(
                pair[1].at <= latest,
                "a retry slept past the expiry of the valid token"
            );
        }
    }
}

/// A 2xx answer from which a refresh token can be read is a rotation, however sloppy:
/// a space or a quote in the token (RFC 6749 allows any VSCHAR), a duplicate key, a
/// byte order mark, a NUL after the JSON. Against a strict server, each new token is
/// saved and sent next, never the one before: 0 reuses.
#[tokio::test]
async fn a_sloppy_answer_that_rotates_is_a_rotation() {
    use tokend::emulator::{RefreshTokenStatus, Sloppiness};
    let (env, mut d) = started().await;
    for shape in [
        Sloppiness::SpaceInToken,
        Sloppiness::QuoteInToken,
        Sloppiness::DuplicateKeys,
        Sloppiness::Bom,
        Sloppiness::TrailingNul,
    ] {
        let before = env.emu.stats().refreshes;
        provoke(&env, &d, vec![Fault::Sloppy { shape }], 1, 5 * SEC).await;
        wait_for("the sloppy rotation saved", 5 * SEC, || {
            env.state("c").is_some_and(|s| {
                env.emu
                    .refresh_token_status(s["refresh_token"].as_str().unwrap_or(""))
                    == RefreshTokenStatus::Live
            }) && env.emu.stats().refreshes > before
        })
        .await;
        // The next refresh sends the sloppy token back, and the server accepts it.
        env.rotate(&d, &format!("a rotation after {shape:?}"), 5 * SEC)
            .await;
        assert_eq!(env.emu.stats().reuses, 0, "{shape:?}: {}", d.log_text());
    }
    assert_eq!(d.stop().await, 0);
}
