//! Hostile token endpoints: a raw TCP server that answers what no well-behaved
//! server would — a body at 1 byte per second, 100 MB bodies, invalid UTF-8, JSON nested
//! 30,000 deep, absurd `expires_in`, tokens with line breaks — and the real binary
//! against each. Every case must end in a clear log line, no panic, bounded memory, and
//! never the loss of a rotated refresh token the answer carried.

use std::time::{Duration, Instant};

use crate::common::Env;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SEC: Duration = Duration::from_secs(1);
/// The refresh token the hostile answers rotate to, when they carry one.
const NEW_RT: &str = "blnk_rt_HOSTILEROTATED0000000000000000";

#[derive(Clone)]
enum Answer {
    /// A 200 with this JSON (or not-JSON) body, sent at once.
    Body(Vec<u8>),
    /// A 200 whose 100-byte body comes at 1 byte per second.
    OneBytePerSecond,
    /// A 200 with a 100 MB body, streamed as fast as the client reads.
    Huge { chunked: bool },
}

async fn read_request(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // The form body is small; one more read takes it if the headers came alone.
    let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut chunk)).await;
}

async fn answer(mut stream: TcpStream, answer: Answer) {
    read_request(&mut stream).await;
    let head = |len: Option<usize>| {
        let length = match len {
            Some(n) => format!("content-length: {n}\r\n"),
            None => "transfer-encoding: chunked\r\n".to_owned(),
        };
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{length}\r\n").into_bytes()
    };
    match answer {
        Answer::Body(body) => {
            let _ = stream.write_all(&head(Some(body.len()))).await;
            let _ = stream.write_all(&body).await;
        }
        Answer::OneBytePerSecond => {
            let _ = stream.write_all(&head(Some(100))).await;
            for _ in 0..100 {
                if stream.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(SEC).await;
            }
        }
        Answer::Huge { chunked } => {
            const TOTAL: usize = 100 * 1024 * 1024;
            let piece = vec![b' '; 64 * 1024];
            let _ = stream.write_all(&head((!chunked).then_some(TOTAL))).await;
            for _ in 0..TOTAL / piece.len() {
                let sent = if chunked {
                    let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                    framed.extend_from_slice(&piece);
                    framed.extend_from_slice(b"\r\n");
                    stream.write_all(&framed).await
                } else {
                    stream.write_all(&piece).await
                };
                if sent.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// Serves `reply` to every connection; returns the token URL.
async fn hostile(reply: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, reply.clone()));
        }
    });
    url
}

fn json(body: serde_json::Value) -> Answer {
    Answer::Body(body.to_string().into_bytes())
}

fn rotated_with(field: &str, value: serde_json::Value) -> Answer {
    let mut body = serde_json::json!({
        "access_token": "blnk_at_HOSTILE", "token_type": "Bearer",
        "expires_in": 3600, "refresh_token": NEW_RT,
    });
    body[field] = value;
    json(body)
}

struct Case {
    name: &'static str,
    reply: Answer,
    /// What the log must say.
    expect: &'static str,
    /// The answer carried a rotated refresh token that must be on disk afterwards.
    keeps_rotated: bool,
}

/// How far above the well-behaved answer's peak RSS a hostile one may go: bodies are
/// cut at 64 KiB, so a hostile answer costs well under this; a buffered 100 MB body
/// would cost a hundred times more. Relative to the same build in the same run, so that
/// a debug binary growing does not fail a test whose property held.
const MEMORY_ABOVE_BASELINE_KIB: u64 = 4 * 1024;
const BASELINE: &str = "well-behaved (baseline)";

/// The summary line and the peak RSS (KiB) of one case, or what went wrong.
async fn run_case(case: Case) -> Result<(String, u64), String> {
    let env = Env::new(3600 * SEC).await;
    let url = hostile(case.reply).await;
    env.bootstrap("c");
    let text = format!(
        "state_dir = \"{}/state\"\n{}",
        env.dir.path().display(),
        env.credential_toml("c", "")
    )
    .replace(&env.emu.token_url(), &url);
    let cfg = env.write_config_text(&text);
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "tokend.log", &[]);
    let pid = d.child.id().unwrap();
    let start = Instant::now();
    let limit = 15 * SEC;
    while !d.log_text().contains(case.expect) {
        if start.elapsed() > limit {
            let _ = d.stop().await;
            return Err(format!(
                "{}: no {:?} in 15 s:\n{}",
                case.name,
                case.expect,
                d.log_text()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    let peak = crate::common::proc_status_kib(pid, "VmHWM");
    let code = d.stop().await;
    let log = d.log_text();
    let mut problems = Vec::new();
    if code != 0 {
        problems.push(format!("exit {code}"));
    }
    if log.contains("panicked") {
        problems.push("a panic".into());
    }
    if log.contains(NEW_RT) || log.contains("blnk_at_HOSTILE") {
        problems.push("a token in the log".into());
    }
    if case.keeps_rotated {
        let state = env.state("c").unwrap_or_default();
        if state["refresh_token"] != NEW_RT {
            problems.push("the rotated refresh token was not saved".into());
        }
    }
    // What the log said about it: the error, or the rotation.
    let line = log
        .lines()
        .find(|l| l.contains(case.expect))
        .and_then(|l| {
            l.find("error=")
                .or_else(|| l.find("rotated"))
                .map(|i| l[i..].to_owned())
        })
        .unwrap_or_default();
    let summary = format!(
        "{:<28} {:>5.1} s  peak RSS {:>5.1} MiB  {}",
        case.name,
        took.as_secs_f64(),
        peak as f64 / 1024.0,
        line.chars().take(110).collect::<String>()
    );
    if problems.is_empty() {
        Ok((summary, peak))
    } else {
        Err(format!("{summary}\n  {}\n{log}", problems.join(", ")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_end_in_a_clear_line_with_bounded_memory() {
    // 30,000 deep fits in the 64 KiB limit, so it reaches the JSON parser.
    let nested = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes();
    let cases = vec![
        Case {
            name: "body at 1 byte/s",
            reply: Answer::OneBytePerSecond,
            expect: "timed out after sending: no whole answer within 3s",
            keeps_rotated: false,
        },
        Case {
            name: "100 MB body (length)",
            reply: Answer::Huge { chunked: false },
            expect: "with a body over 65536 bytes",
            keeps_rotated: false,
        },
        Case {
            name: "100 MB body (chunked)",
            reply: Answer::Huge { chunked: true },
            expect: "with a body over 65536 bytes",
            keeps_rotated: false,
        },
        Case {
            name: "invalid UTF-8",
            reply: Answer::Body(
                b"{\"access_token\": \"\xff\xfe\", \"token_type\": \"Bearer\"}".to_vec(),
            ),
            expect: "not a JSON token response",
            keeps_rotated: false,
        },
        Case {
            name: BASELINE,
            reply: rotated_with("scope", "a".into()),
            expect: "rotated",
            keeps_rotated: true,
        },
        Case {
            name: "JSON nested 30,000 deep",
            reply: Answer::Body(nested),
            expect: "not a JSON token response",
            keeps_rotated: false,
        },
        Case {
            name: "expires_in 0",
            reply: rotated_with("expires_in", 0.into()),
            expect: "unusable expires_in",
            keeps_rotated: true,
        },
        Case {
            name: "expires_in -3600",
            reply: rotated_with("expires_in", (-3600).into()),
            expect: "unusable expires_in",
            keeps_rotated: true,
        },
        Case {
            name: "expires_in 100 years",
            reply: rotated_with("expires_in", 3_155_760_000u64.into()),
            expect: "lifetime=9years 11months",
            keeps_rotated: true,
        },
        Case {
            name: "access token with newline",
            reply: rotated_with("access_token", "blnk_at_a\nb".into()),
            expect: "unusable access_token",
            keeps_rotated: true,
        },
        Case {
            name: "access token with \\x01",
            reply: rotated_with("access_token", "blnk_at_a\u{1}b".into()),
            expect: "unusable access_token",
            keeps_rotated: true,
        },
        Case {
            name: "new RT, no token_type",
            reply: rotated_with("token_type", serde_json::Value::Null),
            expect: "lacks token_type",
            keeps_rotated: true,
        },
        Case {
            name: "refresh token with newline",
            reply: json(
                serde_json::json!({"access_token": "blnk_at_x", "token_type": "Bearer", "refresh_token": "blnk_rt_a\nb"}),
            ),
            expect: "unusable refresh_token",
            keeps_rotated: false,
        },
    ];
    let results = futures_util::future::join_all(cases.into_iter().map(run_case)).await;
    let baseline = results
        .iter()
        .flatten()
        .find(|(line, _)| line.starts_with(BASELINE))
        .map(|(_, peak)| *peak);
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok((line, peak)) => {
                crate::common::figure("hostile", &line);
                match baseline {
                    Some(b) if peak > b + MEMORY_ABOVE_BASELINE_KIB => failed.push(format!(
                        "{line}\n  peak RSS {peak} KiB, more than {MEMORY_ABOVE_BASELINE_KIB} KiB above the well-behaved answer's {b} KiB"
                    )),
                    None => failed.push("the well-behaved baseline failed".into()),
                    _ => {}
                }
            }
            Err(e) => failed.push(e),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
