//! `tokend login` against the emulator's authorization endpoint: discovery,
//! the loopback redirect and the pasted one, a wrong `state`, `access_denied`, a
//! timeout, adoption by a running daemon; and the chain-age warning. The end-to-end
//! run through a real server's login and consent pages is in tests/interop.rs.

use std::time::{Duration, SystemTime};

use crate::common::{Env, authorize, finish, free_port, get, start_login, wait_for};
use tokio::io::AsyncWriteExt;

const SEC: Duration = Duration::from_secs(1);

/// A credential that knows only its issuer: no token URL, no bootstrap token.
pub(crate) fn login_config(env: &Env, extra: &str) -> std::path::PathBuf {
    let secret = format!("client_secret = \"{}\"", env.emu.config().client_secret);
    login_config_as(env, extra, &secret)
}

/// [`login_config`] with `client` as the client's authentication lines.
fn login_config_as(env: &Env, extra: &str, client: &str) -> std::path::PathBuf {
    let c = env.emu.config();
    let dir = env.dir.path().display();
    env.write_config_text(&format!(
        r#"
state_dir = "{dir}/state"
{extra}
[credentials.c]
issuer = "{issuer}"
client_id = "{id}"
{client}
refresh_token_max_age = "30d"
[credentials.c.refresh]
min_remaining = "1s"
[credentials.c.http]
allow_insecure_http = true
[[credentials.c.outputs]]
path = "{dir}/out/access_token"
"#,
        issuer = env.emu.issuer(),
        id = c.client_id,
    ))
}

fn assert_no_token(env: &Env, text: &str) {
    for t in env.emu.issued_tokens() {
        assert!(!text.contains(&t), "a token leaked into:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_the_loopback_redirect_then_run() {
    let env = Env::new(3 * SEC).await;
    let cfg = login_config(&env, "");
    let login = start_login(&cfg, &[]).await;
    assert!(
        login.url.starts_with(&env.emu.authorize_url()),
        "{}",
        login.url
    );
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "redirect_uri=http%3A%2F%2F127.0.0.1%3A",
    ] {
        assert!(login.url.contains(part), "{part} in {}", login.url);
    }
    let before = SystemTime::now();
    let redirect = authorize(&login.url).await;
    let (status, page) = get(&redirect).await;
    assert_eq!(
        (status, page.as_str()),
        (
            200,
            "tokend: authorization received. You can close this window."
        )
    );
    let (code, stdout, stderr) = finish(login).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("access token expires") && stdout.contains("scope: data:read data:write"),
        "{stdout}"
    );
    assert!(stdout.contains("log in again before"), "{stdout}");
    assert_no_token(&env, &(stdout + &stderr));

    let state = env.state("c").unwrap();
    assert_eq!(crate::common::mode(&env.path("state/c.json")), 0o600);
    let started =
        humantime::parse_rfc3339_weak(state["chain_started_at"].as_str().unwrap()).unwrap();
    assert!(
        started >= before - SEC && started <= SystemTime::now(),
        "a new chain starts now"
    );

    // The daemon continues the chain that login started, for at least 3 rotations.
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "run.log", &[]);
    let rotations = env.emu.stats().refreshes;
    wait_for("3 rotations from login's state", 15 * SEC, || {
        env.emu.stats().refreshes >= rotations + 3
    })
    .await;
    let out = std::fs::read_to_string(env.path("out/access_token")).unwrap();
    assert!(env.emu.accepts(&out));
    assert_eq!(env.emu.stats().reuses, 0);
    assert_eq!(
        env.state("c").unwrap()["chain_started_at"],
        state["chain_started_at"],
        "rotations keep the chain's start"
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_browser_takes_the_pasted_url_and_refuses_bad_answers() {
    let env = Env::new(3600 * SEC).await;
    let cfg = login_config(&env, "");

    // A wrong state: refused, nothing written.
    let mut login = start_login(&cfg, &["--no-browser"]).await;
    let redirect = authorize(&login.url).await;
    let forged = redirect.replace("state=", "state=x");
    let stdin = login.child.stdin.as_mut().unwrap();
    stdin
        .write_all(format!("{forged}\n").as_bytes())
        .await
        .unwrap();
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("state does not match"), "{err}");
    assert!(!env.path("state/c.json").exists());

    // access_denied: a clear message, exit 77, nothing written.
    env.emu.set_authorize_error(Some("access_denied"));
    let mut login = start_login(&cfg, &["--no-browser"]).await;
    let redirect = authorize(&login.url).await;
    assert!(redirect.contains("error=access_denied"), "{redirect}");
    let stdin = login.child.stdin.as_mut().unwrap();
    stdin
        .write_all(format!("{redirect}\n").as_bytes())
        .await
        .unwrap();
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 77, "{out}{err}");
    assert!(
        err.contains("the authorization was denied") && err.contains("error=access_denied"),
        "{err}"
    );
    assert!(!env.path("state/c.json").exists());
    env.emu.set_authorize_error(None);

    // --no-browser, but the browser was on this host after all: the loopback redirect
    // ends the login, and the unused read of stdin (held open here) does not hold it up.
    let mut login = start_login(&cfg, &["--no-browser"]).await;
    let _stdin_held_open = login.child.stdin.take();
    get(&authorize(&login.url).await).await;
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_file(env.path("state/c.json")).unwrap();

    // The pasted URL, as a headless user would copy it from the browser's address bar.
    let mut login = start_login(&cfg, &["--no-browser"]).await;
    let redirect = authorize(&login.url).await;
    let stdin = login.child.stdin.as_mut().unwrap();
    stdin
        .write_all(format!("\n  {redirect}  \n").as_bytes())
        .await
        .unwrap();
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(env.state("c").unwrap()["refresh_token"].is_string());
    assert_no_token(&env, &(out + &err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_times_out_leaves_nothing() {
    let env = Env::new(3600 * SEC).await;
    let cfg = login_config(&env, "");
    let login = start_login(&cfg, &["--timeout", "1s"]).await;
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 75, "{out}{err}");
    assert!(
        err.contains("no answer from the authorization server within 1s; nothing was written"),
        "{err}"
    );
    assert!(!env.path("state/c.json").exists());
    assert!(!env.path("state/c.json.login").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_adopts_a_new_login() {
    let env = Env::new(3600 * SEC).await;
    let cfg = login_config(&env, "");
    // A first chain, from a first login.
    let login = start_login(&cfg, &[]).await;
    let redirect = authorize(&login.url).await;
    get(&redirect).await;
    assert_eq!(finish(login).await.0, 0);
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "run.log", &[]);
    d.wait_started().await;
    wait_for("outputs", 5 * SEC, || env.path("out/access_token").exists()).await;

    // The chain dies (revoked on the server); the daemon blocks.
    env.emu.revoke_all();
    d.signal(libc::SIGUSR1);
    wait_for("blocked", 5 * SEC, || {
        d.log_text().contains("refreshing stopped")
    })
    .await;

    // A person logs in again while the daemon runs.
    let first_chain = env.state("c").unwrap()["chain_started_at"].clone();
    let login = start_login(&cfg, &[]).await;
    let redirect = authorize(&login.url).await;
    get(&redirect).await;
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 0, "{out}{err}");
    let pid = d.child.id().unwrap();
    assert!(
        out.contains(&format!(
            "handed to the running tokend (pid {pid}), which adopted it"
        )),
        "{out}"
    );
    assert!(
        d.log_text()
            .contains("adopting the refresh-token chain that `tokend login` started")
    );
    assert!(!env.path("state/c.json.login").exists());
    assert_ne!(env.state("c").unwrap()["chain_started_at"], first_chain);
    let token = env.state("c").unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for("the new token published", 5 * SEC, || {
        std::fs::read_to_string(env.path("out/access_token"))
            .ok()
            .as_deref()
            == Some(token.as_str())
    })
    .await;

    // Without a restart, it refreshes the new chain.
    env.rotate(&d, "a refresh of the new chain", 5 * SEC).await;
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "still the same process"
    );
    let (healthy, text) = crate::common::status(&cfg);
    assert!(healthy, "{text}");
    assert_eq!(d.stop().await, 0);
}

/// Moves the state's chain start `days` into the past, as if the chain were that old.
fn age_chain(env: &Env, days: u64) {
    use tokend::store::file::{read_state_file, write_state_file};
    let path = env.path("state/c.json");
    let mut state = read_state_file(&path).unwrap().unwrap();
    state.chain_started_at = SystemTime::now() - Duration::from_secs(days * 86_400);
    write_state_file(&path, &state, &tokend::atomic::Perms::mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_age_warning_appears_in_logs_status_and_metrics() {
    let env = Env::new(3600 * SEC).await;
    let port = free_port();
    let cfg = login_config(&env, &format!("[health]\nlisten = \"127.0.0.1:{port}\""));
    let login = start_login(&cfg, &[]).await;
    get(&authorize(&login.url).await).await;
    assert_eq!(finish(login).await.0, 0);
    let status = || crate::common::status(&cfg);
    let metrics = format!("http://127.0.0.1:{port}/metrics");

    // 24 days into a 30-day chain: before the 5-day warning point.
    age_chain(&env, 24);
    let (healthy, text) = status();
    assert!(healthy, "{text}");
    assert!(
        text.contains("chain ends:") && !text.contains("WARNING"),
        "{text}"
    );
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "young.log", &[]);
    d.wait_started().await;
    let (_, body) = common_wait_metrics(
        &metrics,
        "tokend_refresh_token_chain_warning{credential=\"c\"} 0",
    )
    .await;
    assert!(
        body.contains("tokend_refresh_token_chain_end_timestamp_seconds{credential=\"c\"}"),
        "{body}"
    );
    assert_eq!(d.stop().await, 0);
    assert!(!d.log_text().contains("maximum age"), "{}", d.log_text());

    // 26 days: inside it. A warning at start, in status, and in /metrics; still ready.
    age_chain(&env, 26);
    let (healthy, text) = status();
    assert!(healthy, "readiness is not affected: {text}");
    assert!(
        text.contains("WARNING: run `tokend login c` before then"),
        "{text}"
    );
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "old.log", &[]);
    d.wait_started().await;
    wait_for("the warning", 5 * SEC, || {
        d.log_text()
            .contains("the refresh-token chain reaches its maximum age in 3days 23h")
    })
    .await;
    let (_, body) = common_wait_metrics(
        &metrics,
        "tokend_refresh_token_chain_warning{credential=\"c\"} 1",
    )
    .await;
    let age_line = body
        .lines()
        .find(|l| l.starts_with("tokend_refresh_token_chain_age_seconds{credential=\"c\"}"))
        .unwrap();
    let age: f64 = age_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((age - 26.0 * 86_400.0).abs() < 60.0, "{age_line}");
    assert_eq!(get(&format!("http://127.0.0.1:{port}/readyz")).await.0, 200);
    assert_eq!(
        d.log_text().matches("maximum age").count(),
        1,
        "once, not at every wake"
    );
    assert_eq!(d.stop().await, 0);
}

async fn common_wait_metrics(url: &str, line: &str) -> (u16, String) {
    let start = std::time::Instant::now();
    loop {
        let (status, body) = get(url).await;
        if body.contains(line) {
            return (status, body);
        }
        assert!(start.elapsed() < 5 * SEC, "{line} not in:\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Login run as root for a daemon that runs as another user (systemd's DynamicUser, a
/// service account): the state and its lock go to the owner of the state directory,
/// and that user's `tokend once` can use them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_as_root_hands_the_state_to_the_daemons_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let nobody = crate::common::nobody();
    let env = Env::new(3600 * SEC).await;
    let cfg = login_config(&env, "");
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in ["state", "out"] {
        std::fs::create_dir(env.path(dir)).unwrap();
        std::os::unix::fs::chown(
            env.path(dir),
            Some(nobody.uid.as_raw()),
            Some(nobody.gid.as_raw()),
        )
        .unwrap();
    }
    let login = start_login(&cfg, &[]).await;
    get(&authorize(&login.url).await).await;
    assert_eq!(finish(login).await.0, 0);
    for file in ["state/c.json", "state/c.json.lock"] {
        let meta = std::fs::metadata(env.path(file)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (nobody.uid.as_raw(), nobody.gid.as_raw()),
            "{file}"
        );
    }
    assert_eq!(crate::common::mode(&env.path("state/c.json")), 0o600);
    let once = crate::common::once_as(&nobody, &cfg);
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    assert!(env.path("out/access_token").exists());
}

/// design.md §12: servers that want `private_key_jwt` want it for the code exchange too;
/// login signs an assertion for it, and the daemon goes on signing for every refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_refresh_with_a_signed_client_assertion() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let env = Env::with(tokend::emulator::EmulatorConfig {
        client_id: "signed-client".into(),
        client_secret: "unused-secret".into(),
        auth: tokend::config::ClientAuth::PrivateKeyJwt,
        assertion_key: Some(key.public_key_pem().into_bytes()),
        access_lifetime: 3 * SEC,
        reuse_grace: Duration::ZERO,
    })
    .await;
    let key_file = env.path("client.key");
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let cfg = login_config_as(
        &env,
        "",
        &format!(
            "client_auth = \"private_key_jwt\"\nclient_assertion_key_file = \"{}\"",
            key_file.display()
        ),
    );
    let login = start_login(&cfg, &[]).await;
    let redirect = authorize(&login.url).await;
    get(&redirect).await;
    let (code, stdout, stderr) = finish(login).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let exchange = env
        .emu
        .requests()
        .into_iter()
        .find(|r| r.param("grant_type") == Some("authorization_code"))
        .expect("the code exchange");
    assert!(exchange.param("client_assertion").is_some());
    assert_eq!(exchange.param("client_secret"), None);

    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "run.log", &[]);
    wait_for("2 rotations with assertions", 10 * SEC, || {
        env.emu.stats().refreshes >= 2
    })
    .await;
    assert_eq!(d.stop().await, 0);
    assert_eq!(env.emu.stats().auth_failures, 0);
    assert_no_token(&env, &d.log_text());
}

/// Any local process can reach the callback port: a redirect without this login's
/// `state` is answered 400 and ignored, and its text never reaches the terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_the_login_s_state_does_not_end_it() {
    let env = Env::new(3600 * SEC).await;
    let cfg = login_config(&env, "");
    let login = start_login(&cfg, &[]).await;
    let redirect = url::Url::parse(&login.url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    for forged in [
        format!("{redirect}?error=access_denied&error_description=Run%20curl%20evil.sh"),
        format!("{redirect}?code=forged&state=not-this-one"),
    ] {
        let (status, body) = get(&forged).await;
        assert_eq!(status, 400, "{forged}: {body}");
    }
    let (status, _) = get(&authorize(&login.url).await).await;
    assert_eq!(status, 200);
    let (code, stdout, stderr) = finish(login).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        !stderr.contains("evil") && !stdout.contains("evil"),
        "{stderr}"
    );
    assert!(env.state("c").is_some());
}
