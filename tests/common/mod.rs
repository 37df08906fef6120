//! Shared test harness: the emulator in-process on 127.0.0.1, the real `tokend` binary
//! as a child process, real signals.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokend::config::ClientAuth;
use tokend::emulator::{Emulator, EmulatorConfig};
use tokio::io::AsyncBufReadExt;

pub const BIN: &str = env!("CARGO_BIN_EXE_tokend");

pub struct Env {
    pub dir: tempfile::TempDir,
    pub emu: Emulator,
}

/// Every test ends with a secrets scan of what it left behind: logs must hold
/// no token and no client secret; outputs may hold access tokens, never a refresh token
/// or the secret. State files, bootstrap and secret files, and configurations (which may
/// hold inline secrets by design) are skipped.
impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let mut secrets: Vec<(String, bool)> = self
            .emu
            .issued_tokens()
            .into_iter()
            .map(|t| {
                let access = t.starts_with("blnk_at_");
                (t, access)
            })
            .collect();
        secrets.push((self.emu.config().client_secret, false));
        let (mut files, mut bytes, mut leaks) = (0u64, 0u64, Vec::new());
        scan(
            self.dir.path(),
            self.dir.path(),
            &secrets,
            &mut files,
            &mut bytes,
            &mut leaks,
        );
        figure(
            "secrets-scan",
            &format!(
                "files={files} bytes={bytes} secrets={} leaks={}",
                secrets.len(),
                leaks.len()
            ),
        );
        assert!(
            leaks.is_empty(),
            "secrets found where they must not be: {leaks:?}"
        );
    }
}

fn scan(
    root: &Path,
    dir: &Path,
    secrets: &[(String, bool)],
    files: &mut u64,
    bytes: &mut u64,
    leaks: &mut Vec<String>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            scan(root, &path, secrets, files, bytes, leaks);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let holds_secrets_by_design = rel.starts_with("state/")
            || name.ends_with(".bootstrap")
            || name == "client_secret"
            || name.ends_with(".toml");
        if holds_secrets_by_design {
            continue;
        }
        let is_output = rel.starts_with("out/") || rel.starts_with("pub/");
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        *files += 1;
        *bytes += text.len() as u64;
        let text = String::from_utf8_lossy(&text);
        for (secret, is_access_token) in secrets {
            if (!is_output || !is_access_token) && text.contains(secret.as_str()) {
                let what = if *is_access_token {
                    "an access token"
                } else {
                    "a refresh token or the client secret"
                };
                leaks.push(format!("{rel} holds {what}"));
            }
        }
    }
}

/// Prints a line of figures and appends it for `.ci/run` to print
/// (target/tmp/figures/NAME.txt).
pub fn figure(name: &str, line: &str) {
    use std::io::Write;
    println!("{line}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.txt")))
    {
        let _ = writeln!(f, "{line}");
    }
}

impl Env {
    pub async fn new(lifetime: Duration) -> Env {
        Env::with(EmulatorConfig {
            client_id: "test-client".into(),
            client_secret: "test-secret-Xy7".into(),
            auth: ClientAuth::Basic,
            assertion_key: None,
            access_lifetime: lifetime,
            reuse_grace: Duration::ZERO,
        })
        .await
    }

    pub async fn with(cfg: EmulatorConfig) -> Env {
        let emu = Emulator::start(cfg, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Env {
            dir: tempfile::tempdir().unwrap(),
            emu,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a fresh bootstrap token for credential `name` and returns it.
    pub fn bootstrap(&self, name: &str) -> String {
        let token = self.emu.issue_refresh_token();
        std::fs::write(
            self.path(&format!("{name}.bootstrap")),
            format!("{token}\n"),
        )
        .unwrap();
        token
    }

    /// The TOML of one credential against the emulator; `extra` goes into its table.
    pub fn credential_toml(&self, name: &str, extra: &str) -> String {
        let c = self.emu.config();
        std::fs::write(self.path("client_secret"), &c.client_secret).unwrap();
        format!(
            r#"
[credentials.{name}]
token_url = "{url}"
client_id = "{id}"
client_secret_file = "{dir}/client_secret"
refresh_token_file = "{dir}/{name}.bootstrap"
{extra}
[credentials.{name}.refresh]
min_remaining = "1s"
[credentials.{name}.retry]
initial = "200ms"
max = "2s"
[credentials.{name}.http]
allow_insecure_http = true
timeout = "3s"
connect_timeout = "1s"
[[credentials.{name}.outputs]]
path = "{dir}/out/{name}/access_token"
format = "raw"
mode = "0640"
[[credentials.{name}.outputs]]
path = "{dir}/out/{name}/token.json"
format = "json"
mode = "0600"
"#,
            url = self.emu.token_url(),
            id = c.client_id,
            dir = self.dir.path().display(),
        )
    }

    /// Writes `tokend.toml` with the given credentials (bootstrapping any without a file).
    pub fn write_config(&self, names: &[&str]) -> PathBuf {
        let mut text = format!("state_dir = \"{}/state\"\n", self.dir.path().display());
        for n in names {
            if !self.path(&format!("{n}.bootstrap")).exists() {
                self.bootstrap(n);
            }
            text.push_str(&self.credential_toml(n, ""));
        }
        self.write_config_text(&text)
    }

    pub fn write_config_text(&self, text: &str) -> PathBuf {
        let p = self.path("tokend.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Sends `d` SIGUSR1 and waits (up to `limit`) until the server has rotated once
    /// more: the idiom of every test that needs a rotation now.
    pub async fn rotate(&self, d: &Daemon, what: &str, limit: Duration) {
        let before = self.emu.stats().refreshes;
        d.signal(libc::SIGUSR1);
        wait_for(what, limit, || self.emu.stats().refreshes > before).await;
    }

    pub fn raw_output(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.path(&format!("out/{name}/access_token"))).ok()
    }

    /// A credential's state as JSON (whatever the file's format), read as `status` does.
    pub fn state(&self, name: &str) -> Option<serde_json::Value> {
        let path = self.path(&format!("state/{name}.json"));
        let state = tokend::store::file::read_state_file(&path).ok()??;
        serde_json::to_value(state).ok()
    }

    /// A log file in the test directory, appended to by a child's stderr.
    fn log_file(&self, log_name: &str) -> (PathBuf, std::fs::File) {
        let log = self.path(log_name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        (log, file)
    }

    /// Starts `tokend <args>` with stderr going to `log_name` in the test directory.
    pub fn spawn(&self, args: &[&str], log_name: &str, envs: &[(&str, &str)]) -> Daemon {
        let (log, err) = self.log_file(log_name);
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .kill_on_drop(true);
        cmd.env_remove("RUST_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    /// Runs a shell script (for umask and the like) with stderr to `log_name`.
    pub fn spawn_shell(&self, script: &str, log_name: &str) -> Daemon {
        let (log, err) = self.log_file(log_name);
        let child = tokio::process::Command::new("sh")
            .args(["-c", script])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    /// Runs the daemon on these credentials and waits until its signal handlers are in.
    pub async fn run_started(&self, names: &[&str]) -> Daemon {
        let d = self.run(names);
        d.wait_started().await;
        d
    }

    pub fn run(&self, names: &[&str]) -> Daemon {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cfg = self.write_config(names);
        self.spawn(
            &["run", "-c", cfg.to_str().unwrap()],
            &format!("tokend-{n}.log"),
            &[],
        )
    }
}

pub struct Daemon {
    pub child: tokio::process::Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("running") as i32;
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> i32 {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("tokend did not exit in time")
            .unwrap();
        status.code().unwrap_or(-1)
    }

    pub async fn stop(&mut self) -> i32 {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(10)).await
    }

    pub async fn wait_started(&self) {
        wait_for("tokend to start", Duration::from_secs(10), || {
            self.log_text().contains("started")
        })
        .await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `tokend status -c cfg`: whether it exited 0 (every credential healthy), and its text.
pub fn status(cfg: &Path) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .args(["status", "-c", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A memory figure of a running process from /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Tests that mount, chown or switch users need root, as `.ci/run` has: elsewhere they
/// fail and say so, rather than pass without having run.
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test {why}, which needs root: run it as .ci/run does"
    );
}

/// The user `nobody`, to run tokend or an attacker as someone other than root.
pub fn nobody() -> nix::unistd::User {
    require_root("runs processes as another user");
    nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("a user named nobody")
}

/// `program args` run as `user` (through setpriv, no supplementary groups).
pub fn command_as(user: &nix::unistd::User, program: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid",
        &user.uid.to_string(),
        "--regid",
        &user.gid.to_string(),
        "--clear-groups",
        program,
    ])
    .env_remove("RUST_LOG");
    cmd
}

/// `tokend once -c cfg` run as `user`.
pub fn once_as(user: &nix::unistd::User, cfg: &Path) -> std::process::Output {
    command_as(user, BIN)
        .args(["once", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The `p` quantile (0 to 1) of `values`, by nearest rank; 0 when there are none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A count a run can be made longer with (`.ci/run --long` sets them): the variable
/// `name`, or `default`.
pub fn count_from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A free TCP port on 127.0.0.1 (closed again; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `url`: the status and body.
pub async fn get(url: &str) -> (u16, String) {
    tokend::tls::install_crypto_provider();
    match reqwest::get(url).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

// ---- tokend login, as a person runs it ----

/// A `tokend login c` in progress.
pub struct Login {
    pub child: tokio::process::Child,
    /// The authorize URL tokend printed.
    pub url: String,
}

/// Starts `tokend login c -c CFG ARGS` and reads the authorize URL it prints.
pub async fn start_login(cfg: &std::path::Path, args: &[&str]) -> Login {
    let mut child = tokio::process::Command::new(BIN)
        .args(["login", "c", "-c", cfg.to_str().unwrap()])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.as_mut().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("login printed no URL")
        .unwrap()
        .unwrap();
    Login { child, url }
}

/// What the user's browser does: follows the authorize URL to the redirect.
pub async fn authorize(url: &str) -> String {
    tokend::tls::install_crypto_provider();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302, "{url}");
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// Waits for login to end: its exit code, stdout and stderr.
pub async fn finish(login: Login) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(20), login.child.wait_with_output())
        .await
        .expect("login did not finish")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
