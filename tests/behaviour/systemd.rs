//! Plays systemd: a NOTIFY_SOCKET datagram socket, WATCHDOG_USEC, and the messages tokend
//! sends through start, reload and stop (design.md §9).

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Env, wait_for};
use tokend::emulator::Fault;

const SEC: Duration = Duration::from_secs(1);

struct Message {
    at: Instant,
    text: String,
    /// Whether the raw output held a token when the message arrived.
    output_valid: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_ready_watchdog_reloading_and_stopping() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let socket_path = env.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let messages: Arc<Mutex<Vec<Message>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let output = env.path("out/c/access_token");
    let receiver = {
        let (messages, stop) = (messages.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let output_valid =
                        std::fs::read_to_string(&output).is_ok_and(|t| t.starts_with("blnk_at_"));
                    messages.lock().unwrap().push(Message {
                        at: Instant::now(),
                        text,
                        output_valid,
                    });
                }
            }
        })
    };
    // The first refresh takes a second, so READY=1 has something to wait for.
    env.emu.push_fault(Fault::Delay { ms: 1000 });
    let cfg = env.write_config(&["c"]);
    let mut d = env.spawn(
        &["run", "-c", cfg.to_str().unwrap()],
        "d.log",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let has = |m: &Arc<Mutex<Vec<Message>>>, needle: &str| {
        m.lock().unwrap().iter().any(|x| x.text.contains(needle))
    };
    wait_for("READY=1", 10 * SEC, || has(&messages, "READY=1")).await;
    {
        let m = messages.lock().unwrap();
        let ready = m.iter().find(|x| x.text.contains("READY=1")).unwrap();
        assert!(
            ready.output_valid,
            "READY=1 came before the output held a token"
        );
        assert!(
            ready.text.contains("STATUS=1/1 credentials ready"),
            "{}",
            ready.text
        );
        assert!(
            m.iter().filter(|x| x.text.contains("STATUS=0/1")).count() >= 1,
            "a not-ready status first"
        );
        assert!(env.emu.accepts(&env.raw_output("c").unwrap()));
    }
    // Watchdog pings at about half of WATCHDOG_USEC.
    tokio::time::sleep(3 * SEC).await;
    let pings: Vec<Instant> = messages
        .lock()
        .unwrap()
        .iter()
        .filter(|x| x.text.contains("WATCHDOG=1"))
        .map(|x| x.at)
        .collect();
    assert!(pings.len() >= 6, "{} pings", pings.len());
    let gaps: Vec<f64> = pings
        .windows(2)
        .skip(1)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!(
        (0.4..0.6).contains(&mean),
        "watchdog every {mean:.3}s, want about 0.5s: {gaps:?}"
    );

    d.signal(libc::SIGHUP);
    wait_for("RELOADING=1", 5 * SEC, || has(&messages, "RELOADING=1")).await;
    wait_for("READY=1 after the reload", 5 * SEC, || {
        let m = messages.lock().unwrap();
        let reload = m
            .iter()
            .position(|x| x.text.contains("RELOADING=1"))
            .unwrap();
        assert!(
            m[reload].text.contains("MONOTONIC_USEC="),
            "{}",
            m[reload].text
        );
        m[reload..].iter().any(|x| x.text.contains("READY=1"))
    })
    .await;

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(10 * SEC).await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    receiver.join().unwrap();
    assert!(has(&messages, "STOPPING=1"));
}
