//! The snippets of docs/reading-the-token.md: each one is a file in tests/readers/,
//! quoted verbatim on that page, and run here against a
//! live tokend. Each starts before tokend has written anything, so coping with the file
//! not existing yet is tested too. CI installs every runtime (`.ci/run`).

use std::process::Stdio;
use std::time::Duration;

use crate::common::Env;

const READERS: &[(&str, &[&str], &str)] = &[
    ("reader.sh", &["sh", "reader.sh"], "curl"),
    ("reader.py", &["python3", "reader.py"], "python3"),
    ("reader.go", &["go", "run", "reader.go"], "golang-go"),
    ("reader.js", &["node", "reader.js"], "nodejs"),
    (
        "Reader.java",
        &["java", "Reader.java"],
        "default-jdk-headless",
    ),
];

fn readers_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers")
}

#[test]
fn the_docs_quote_every_reader_verbatim() {
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reading-the-token.md");
    let page = std::fs::read_to_string(page).unwrap();
    for (file, _, _) in READERS {
        let text = std::fs::read_to_string(readers_dir().join(file)).unwrap();
        assert!(
            page.contains(text.trim()),
            "docs/reading-the-token.md does not quote tests/readers/{file} as it is"
        );
    }
}

async fn run_reader(file: &str, argv: &[&str], package: &str) -> Result<String, String> {
    let env = Env::new(Duration::from_secs(3600)).await;
    env.bootstrap("c");
    let mut text = format!("state_dir = \"{}/state\"\n", env.dir.path().display());
    text.push_str(&env.credential_toml("c", ""));
    text.push_str(&format!(
        "[[credentials.c.outputs]]\npath = \"{}\"\nformat = \"header\"\n",
        env.path("out/c/header").display()
    ));
    let cfg = env.write_config_text(&text);
    let reader = tokio::process::Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(readers_dir())
        .env("TOKEN_FILE", env.path("out/c/access_token"))
        .env("TOKEN_JSON", env.path("out/c/token.json"))
        .env("HEADER_FILE", env.path("out/c/header"))
        .env("API_URL", env.emu.resource_url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "{file}: cannot run {}: {e} (apt install {package})",
                argv[0]
            )
        })?;
    // The reader is waiting for a file that does not exist yet; now tokend starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "tokend.log", &[]);
    let out = tokio::time::timeout(Duration::from_secs(180), reader.wait_with_output())
        .await
        .map_err(|_| format!("{file}: no answer in 180 s"))?
        .map_err(|e| e.to_string())?;
    let _ = d.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && stdout.contains(r#""ok":true"#) {
        Ok(format!("{file}: {}", stdout.trim()))
    } else {
        Err(format!(
            "{file}: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reader_gets_a_token_the_server_accepts() {
    let runs = READERS
        .iter()
        .map(|(file, argv, package)| run_reader(file, argv, package));
    let results = futures_util::future::join_all(runs).await;
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(line) => println!("{line}"),
            Err(e) => failed.push(e),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
