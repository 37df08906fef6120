//! Real etcd members (Debian's `etcd` on loopback ports, temporary data directories), a
//! pausable TCP proxy to cut one replica off from them, and a group of `tokend run`
//! replicas sharing one credential.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::common::{self, Daemon, Env, free_port, get, wait_for};

/// A GET that gives up after a second (a stopped replica never answers).
pub async fn fetch(url: &str) -> (u16, String) {
    tokio::time::timeout(Duration::from_secs(1), get(url))
        .await
        .unwrap_or((0, String::new()))
}

/// One etcd member. Its data outlives kills, so that a restart is a real restart.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    peer_port: u16,
    data: PathBuf,
    cluster: String,
    child: Option<Child>,
    log: PathBuf,
    /// A directory with `ca.pem`, `server.pem`, `server.key`, `client.pem` and
    /// `client.key`: clients then need a certificate from that CA.
    tls: Option<PathBuf>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut etcd = Command::new("etcd");
        if let Some(dir) = &self.tls {
            let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
            etcd.args([
                "--cert-file",
                &file("server.pem"),
                "--key-file",
                &file("server.key"),
            ])
            .args(["--client-cert-auth", "--trusted-ca-file", &file("ca.pem")]);
        }
        let child = etcd
            .args([
                "--name",
                &self.name,
                "--data-dir",
                self.data.to_str().unwrap(),
                "--listen-client-urls",
                &self.endpoint(),
                "--advertise-client-urls",
                &self.endpoint(),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer_port),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer_port),
                "--initial-cluster",
                &self.cluster,
                "--initial-cluster-state",
                "new",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd runs (.ci/run installs Debian's etcd-server)");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether this member answers as part of a cluster with a leader.
    pub async fn healthy(&self) -> bool {
        let url = format!("{}/health", self.endpoint());
        let Some(dir) = &self.tls else {
            let (status, body) = fetch(&url).await;
            return status == 200 && body.contains("\"true\"");
        };
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let mut pem = read("client.pem");
        pem.extend(read("client.key"));
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&read("ca.pem")).unwrap()])
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        match client.get(&url).send().await {
            Ok(r) => r.text().await.is_ok_and(|b| b.contains("\"true\"")),
            Err(_) => false,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` etcd members forming one cluster, data under `dir` (outside the test directory
/// that the secrets scan reads: etcd holds the shared record, refresh token included,
/// by design).
pub struct Etcd {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start(n: usize) -> Etcd {
        Etcd::start_with(n, None).await
    }

    /// One member serving TLS, with client certificates required (see [`Member`]).
    pub async fn start_tls(files: &Path) -> Etcd {
        Etcd::start_with(1, Some(files.to_owned())).await
    }

    async fn start_with(n: usize, tls: Option<PathBuf>) -> Etcd {
        tokend::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| Member {
                name: format!("m{i}"),
                client_port: *client,
                peer_port: *peer,
                data: dir.path().join(format!("m{i}")),
                cluster: cluster.clone(),
                child: None,
                log: dir.path().join(format!("m{i}.log")),
                tls: tls.clone(),
            })
            .collect();
        for m in &mut members {
            m.spawn();
        }
        let etcd = Etcd { members, _dir: dir };
        etcd.wait_healthy().await;
        etcd
    }

    pub async fn wait_healthy(&self) {
        let start = Instant::now();
        loop {
            let mut all = true;
            for m in &self.members {
                all &= m.healthy().await;
            }
            if all {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }
}

/// A TCP proxy that can be cut: while cut, nothing is read or written either way, as on
/// a network that drops every packet (the peers' buffers fill, their timers fire).
/// It can also hold the answers once the client has sent a given marker.
pub struct Proxy {
    pub port: u16,
    cut: watch::Sender<bool>,
    hold: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    held: Arc<AtomicBool>,
    slow: Slow,
}

/// Requests whose bytes hold the marker, and how long each is held before it goes on.
type Slow = Arc<std::sync::Mutex<Option<(Vec<u8>, Duration)>>>;

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = watch::channel(false);
        let hold = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
        let held = Arc::new(AtomicBool::new(false));
        let (hold2, held2) = (hold.clone(), held.clone());
        let slow = Slow::default();
        let slow2 = slow.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up_hold = Some((hold2.clone(), held2.clone()));
                let up = pipe(cr, sw, cut_rx.clone(), up_hold, None, Some(slow2.clone()));
                tokio::spawn(up);
                tokio::spawn(pipe(
                    sr,
                    cw,
                    cut_rx.clone(),
                    None,
                    Some(held2.clone()),
                    None,
                ));
            }
        });
        Proxy {
            port,
            cut,
            hold,
            held,
            slow,
        }
    }

    /// Each request holding `marker` (plain text, as in its request line) goes on only
    /// `by` after it was sent; `None` ends that.
    pub fn slow_down(&self, marker_and_delay: Option<(&str, Duration)>) {
        *self.slow.lock().unwrap() = marker_and_delay.map(|(m, d)| (m.as_bytes().to_vec(), d));
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    /// From the moment the client sends `text` inside a base64 value (as etcd's JSON
    /// gateway carries values), answers are held until [`release`].
    pub fn hold_after(&self, text: &str) {
        *self.hold.lock().unwrap() = base64_forms(text.as_bytes());
    }

    pub fn holding(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    pub fn release(&self) {
        self.hold.lock().unwrap().clear();
        self.held.store(false, Ordering::SeqCst);
    }
}

type Hold = (Arc<std::sync::Mutex<Vec<Vec<u8>>>>, Arc<AtomicBool>);

/// What `text` looks like inside base64, at each of the three alignments it can have:
/// the characters that depend on its bytes alone.
fn base64_forms(text: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    (0..3)
        .map(|pad| {
            let mut bytes = vec![b'x'; pad];
            bytes.extend_from_slice(text);
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let skip = [0, 2, 3][pad];
            encoded.as_bytes()[skip..encoded.len() - 4].to_vec()
        })
        .collect()
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
    arm: Option<Hold>,
    held: Option<Arc<AtomicBool>>,
    slow: Option<Slow>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let blocked = |cut: &watch::Receiver<bool>| {
            *cut.borrow() || held.as_ref().is_some_and(|h| h.load(Ordering::SeqCst))
        };
        while blocked(&cut) {
            tokio::select! {
                _ = cut.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = slow.as_ref().and_then(|s| {
            let s = s.lock().unwrap();
            let (marker, by) = s.as_ref()?;
            buf[..n]
                .windows(marker.len())
                .any(|w| w == marker.as_slice())
                .then_some(*by)
        });
        if let Some(by) = delay {
            tokio::time::sleep(by).await;
        }
        if let Some((markers, flag)) = &arm {
            let armed = markers.lock().unwrap().clone();
            if armed
                .iter()
                .any(|m| buf[..n].windows(m.len()).any(|w| w == m.as_slice()))
            {
                flag.store(true, Ordering::SeqCst);
            }
        }
        while blocked(&cut) {
            tokio::select! {
                _ = cut.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// One `tokend run` replica of the shared credential `c`.
pub struct Replica {
    pub id: usize,
    pub config: PathBuf,
    pub health: u16,
    pub daemon: Option<Daemon>,
    runs: usize,
}

impl Replica {
    pub fn pid(&self) -> Option<i32> {
        self.daemon
            .as_ref()
            .and_then(|d| d.child.id())
            .map(|p| p as i32)
    }

    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            unsafe { libc::kill(pid, sig) };
        }
    }

    pub async fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.child.kill().await;
        }
    }

    pub async fn metrics(&self) -> String {
        if self.daemon.is_none() {
            return String::new();
        }
        fetch(&format!("http://127.0.0.1:{}/metrics", self.health))
            .await
            .1
    }

    pub async fn is_leader(&self) -> bool {
        self.metrics()
            .await
            .contains("tokend_leader{credential=\"c\"} 1")
    }

    pub async fn ready(&self) -> bool {
        self.daemon.is_some()
            && fetch(&format!("http://127.0.0.1:{}/readyz", self.health))
                .await
                .0
                == 200
    }

    pub fn log_text(&self) -> String {
        self.daemon
            .as_ref()
            .map(Daemon::log_text)
            .unwrap_or_default()
    }

    /// Its `rotated` lines so far: each is logged once the record is stored and the
    /// outputs written, the end of a refresh.
    pub fn rotations(&self) -> usize {
        self.log_text().matches(" rotated ").count()
    }
}

/// Three (or n) replicas of credential `c` against the emulator, each reaching the
/// store through its own backend table.
pub struct Group {
    pub env: Env,
    pub replicas: Vec<Replica>,
}

pub const LEASE: Duration = Duration::from_secs(3);

impl Group {
    /// Writes each replica's configuration; `tables[i]` is replica i's backend table
    /// ([`crate::stores::Store::table`], [`etcd_table`]).
    pub async fn new(env: Env, tables: Vec<String>) -> Group {
        env.bootstrap("c");
        let replicas = tables
            .iter()
            .enumerate()
            .map(|(i, table)| {
                let health = free_port();
                let text = replica_toml(&env, i, table, health);
                let config = env.path(&format!("r{i}.toml"));
                std::fs::write(&config, text).unwrap();
                Replica {
                    id: i,
                    config,
                    health,
                    daemon: None,
                    runs: 0,
                }
            })
            .collect();
        Group { env, replicas }
    }

    /// Replicas on 5 s tokens (or `lifetime`), all started, each with its first token.
    pub async fn running(tables: Vec<String>, lifetime: Duration) -> Group {
        let env = Env::new(lifetime).await;
        let mut g = Group::new(env, tables).await;
        g.start_all();
        let n = g.replicas.len();
        let start = Instant::now();
        while !(0..n).all(|i| g.output(i).is_some()) {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "every replica's first token"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        g
    }

    /// Waits for a moment between two refreshes: the leader has just rotated and every
    /// running replica publishes the result, so the store holds it. A kill, stop or cut
    /// of the leader inside a refresh (after the server rotated, before the store holds
    /// the answer) loses the chain on a server without a reuse grace window, whatever
    /// the client does (design.md §11); a test that strikes at random hits that window now
    /// and then on a loaded machine, so the tests strike here, with about a second of
    /// the refresh cycle ahead.
    pub async fn between_refreshes(&self, leader: usize) {
        // The end of a refresh is the leader's `rotated` line, logged once the record is
        // stored and the outputs written (the emulator's count moves when it answers,
        // mid-refresh; an output is visible before its directory is synced).
        let rotated = || self.replicas[leader].rotations();
        let before = rotated();
        wait_for(
            "a refresh to strike after",
            LEASE + Duration::from_secs(5),
            || {
                let newest = self.output(leader);
                rotated() > before
                    && newest.is_some()
                    && self
                        .replicas
                        .iter()
                        .filter(|r| r.daemon.is_some())
                        .all(|r| self.output(r.id) == newest)
            },
        )
        .await;
    }

    /// Makes `leader` refresh now, and returns once the token server has received its
    /// request: the server rotates at once and holds its answer `hold`, so that a kill,
    /// stop or cut right after this lands after the rotation and before the answer, the
    /// window in which a chain is lost.
    pub async fn at_receipt(&self, leader: usize, hold: Duration) {
        let before = self.env.emu.stats().token_requests;
        self.env
            .emu
            .push_fault(tokend::emulator::Fault::SlowAnswer {
                ms: hold.as_millis() as u64,
            });
        self.replicas[leader].signal(libc::SIGUSR1);
        wait_for(
            "the server to receive the leader's request",
            Duration::from_secs(10),
            || self.env.emu.stats().token_requests > before,
        )
        .await;
    }

    /// A replica other than `old` that leads, waiting up to `limit` from `since`.
    pub async fn new_leader(&self, old: usize, since: Instant, limit: Duration) -> usize {
        loop {
            for r in &self.replicas {
                if r.id != old && r.is_leader().await {
                    return r.id;
                }
            }
            assert!(since.elapsed() < limit, "no takeover within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The end of every test: no reuse, every output accepted, stopped, no panic.
    pub async fn finish(mut self) {
        assert_eq!(self.reuses(), 0, "the server saw a reuse");
        assert!(self.outputs_accepted(), "an output holds a refused token");
        self.stop_all().await;
        self.assert_no_panic();
    }

    /// Adds `lines` to replica `i`'s `[coordination.etcd]` table.
    pub fn add_etcd_settings(&self, i: usize, lines: &str) {
        let cfg = &self.replicas[i].config;
        let text = std::fs::read_to_string(cfg).unwrap().replace(
            "prefix = \"/test/\"",
            &format!("prefix = \"/test/\"\n{lines}"),
        );
        std::fs::write(cfg, text).unwrap();
    }

    pub fn start(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        let log = format!("r{i}-{}.log", r.runs);
        r.runs += 1;
        r.daemon = Some(
            self.env
                .spawn(&["run", "-c", r.config.to_str().unwrap()], &log, &[]),
        );
    }

    pub fn start_all(&mut self) {
        for i in 0..self.replicas.len() {
            self.start(i);
        }
    }

    /// Adds `line` to every replica's `[coordination]` table, then starts them all and
    /// waits for every first token.
    pub async fn start_all_with(&mut self, line: &str) {
        for r in &self.replicas {
            let text = std::fs::read_to_string(&r.config).unwrap().replacen(
                "[coordination]\n",
                &format!("[coordination]\n{line}\n"),
                1,
            );
            std::fs::write(&r.config, text).unwrap();
        }
        self.start_all();
        let n = self.replicas.len();
        wait_for("every first token", Duration::from_secs(15), || {
            (0..n).all(|i| self.output(i).is_some())
        })
        .await;
    }

    /// The replica that leads now, waiting up to `limit` for one.
    pub async fn leader(&self, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            for r in &self.replicas {
                if r.is_leader().await {
                    return r.id;
                }
            }
            assert!(start.elapsed() < limit, "no replica leads after {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The output of replica `i`: the raw access token.
    pub fn output(&self, i: usize) -> Option<String> {
        std::fs::read_to_string(self.env.path(&format!("out/r{i}/access_token"))).ok()
    }

    /// Every running replica's output holds a token the server accepts.
    pub fn outputs_accepted(&self) -> bool {
        self.replicas
            .iter()
            .filter(|r| r.daemon.is_some())
            .all(|r| {
                self.output(r.id)
                    .is_some_and(|t| self.env.emu.accepts(t.trim()))
            })
    }

    pub fn refreshes(&self) -> u64 {
        self.env.emu.stats().refreshes
    }

    pub fn reuses(&self) -> u64 {
        self.env.emu.stats().reuses
    }

    /// No replica log holds a panic.
    pub fn assert_no_panic(&self) {
        for r in &self.replicas {
            for run in 0..r.runs {
                let text = std::fs::read_to_string(self.env.path(&format!("r{}-{run}.log", r.id)))
                    .unwrap_or_default();
                assert!(
                    !text.contains("panicked"),
                    "replica {} panicked:\n{text}",
                    r.id
                );
            }
        }
    }

    pub async fn stop_all(&mut self) {
        for r in &mut self.replicas {
            if let Some(d) = &mut r.daemon {
                d.signal(libc::SIGCONT);
                let _ = d.stop().await;
            }
            r.daemon = None;
        }
    }
}

/// A failing test shows what each replica said last.
impl Drop for Group {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for r in &self.replicas {
            for run in 0..r.runs {
                let text = std::fs::read_to_string(self.env.path(&format!("r{}-{run}.log", r.id)))
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                eprintln!("---- replica {} run {run} (last 30 lines)\n{tail}", r.id);
            }
        }
    }
}

/// The etcd backend table of a replica that reaches etcd at `endpoints`.
pub fn etcd_table(endpoints: &[String]) -> String {
    let eps = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "backend = \"etcd\"\n[coordination.etcd]\nendpoints = [{eps}]\nprefix = \"/test/\"\ntimeout = \"1s\"\n"
    )
}

fn replica_toml(env: &Env, i: usize, table: &str, health: u16) -> String {
    let c = env.emu.config();
    std::fs::write(env.path("client_secret"), &c.client_secret).unwrap();
    let dir = env.dir.path().display();
    format!(
        r#"state_dir = "{dir}/state/r{i}"
[health]
listen = "127.0.0.1:{health}"
[coordination]
identity = "replica-{i}"
lease = "{lease}s"
{table}
[credentials.c]
token_url = "{url}"
authorize_url = "{authorize}"
client_id = "{id}"
client_secret_file = "{dir}/client_secret"
refresh_token_file = "{dir}/c.bootstrap"
[credentials.c.refresh]
# Early enough that a takeover (the 3 s lease and a little) ends before a 5 s token
# expires: refreshed at 1 s, a token has 4 s left.
at = 0.2
min_remaining = "1s"
[credentials.c.retry]
initial = "200ms"
max = "1s"
[credentials.c.http]
allow_insecure_http = true
timeout = "1s"
connect_timeout = "1s"
[[credentials.c.outputs]]
path = "{dir}/out/r{i}/access_token"
format = "raw"
[[credentials.c.outputs]]
path = "{dir}/out/r{i}/token.json"
format = "json"
"#,
        lease = LEASE.as_secs(),
        url = env.emu.token_url(),
        authorize = env.emu.authorize_url(),
        id = c.client_id,
    )
}

/// Records every change of each replica's output (polled every 10 ms): when each token
/// first appeared anywhere, and when each replica showed it.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    task: Option<std::thread::JoinHandle<Vec<Seen>>>,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub token: String,
    pub at: Instant,
    /// A live replica's published token had expired at this sample.
    pub expired: bool,
    /// The replica was running undisturbed (not killed, stopped, cut or catching up).
    pub steady: bool,
}

impl Watcher {
    /// `alive(i)` says whether replica i runs undisturbed at a sample: only then is an
    /// expired output a failure, and its lag counted.
    pub fn start(dir: &Path, n: usize, alive: Arc<dyn Fn(usize) -> bool + Send + Sync>) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let dir = dir.to_owned();
        let task = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut last: Vec<Option<String>> = vec![None; n];
            while !stop2.load(Ordering::SeqCst) {
                for (i, last) in last.iter_mut().enumerate() {
                    let mut text = String::new();
                    let ok = std::fs::File::open(dir.join(format!("out/r{i}/access_token")))
                        .and_then(|mut f| f.read_to_string(&mut text))
                        .is_ok();
                    let steady = alive(i);
                    let expired = steady && expired_output(&dir, i);
                    if expired {
                        seen.push(Seen {
                            token: String::new(),
                            at: Instant::now(),
                            expired: true,
                            steady,
                        });
                    }
                    if ok && last.as_deref() != Some(text.as_str()) {
                        *last = Some(text.clone());
                        seen.push(Seen {
                            token: text,
                            at: Instant::now(),
                            expired: false,
                            steady,
                        });
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        });
        Watcher {
            stop,
            task: Some(task),
        }
    }

    pub fn finish(mut self) -> Vec<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.take().unwrap().join().unwrap()
    }
}

fn expired_output(dir: &Path, i: usize) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(format!("out/r{i}/token.json"))) else {
        return false;
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    json["expires_at"]
        .as_str()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
        .is_some_and(|e| e <= SystemTime::now())
}

/// Publish lags: for each token, how long after its first appearance each other
/// (steady) replica showed it (ms).
pub fn lags(seen: &[Seen]) -> Vec<f64> {
    let mut first: std::collections::HashMap<&str, Instant> = Default::default();
    for s in seen.iter().filter(|s| !s.expired) {
        first.entry(&s.token).or_insert(s.at);
    }
    seen.iter()
        .filter(|s| !s.expired && s.steady)
        .filter_map(|s| {
            let f = first[s.token.as_str()];
            (s.at > f).then(|| (s.at - f).as_secs_f64() * 1000.0)
        })
        .collect()
}

pub use crate::common::percentile;

pub fn figure(name: &str, line: &str) {
    common::figure(name, line);
}
