//! The command line of SPEC §2, and the exit codes each command ends with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing::{Instrument, error};

use crate::config::{self, Config, DEFAULT_PATH};
use crate::credential::OnceResult;
use crate::daemon::{self, ConfigSource, Daemon, StartError};
use crate::endpoint::Clients;
use crate::health::Board;
use crate::state::StoreError;
use crate::state::rfc3339;
use crate::{demo, logging, login, status};

/// Exit codes, from sysexits.h (SPEC §2).
pub mod exit {
    pub const OK: u8 = 0;
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CANTCREAT: u8 = 73;
    pub const TEMPFAIL: u8 = 75;
    pub const NOPERM: u8 = 77;
    pub const CONFIG: u8 = 78;
}

#[derive(Parser)]
#[command(
    name = "tokend",
    version,
    about = "Keeps OAuth 2.0 access tokens fresh for the applications beside it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file
    #[arg(short, long, env = "TOKEND_CONFIG", default_value = DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT
    Run(ConfigArg),
    /// Make sure every credential has a valid access token and written outputs, then exit
    Once(ConfigArg),
    /// Validate the configuration and print it with every secret redacted
    Check(ConfigArg),
    /// Show each credential's expiry, last refresh, last error and health
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print the current access token (no newline)
    Token {
        /// The credential; may be left out when there is only one
        name: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Get a first refresh token through the browser (authorization code + PKCE) and
    /// start a new chain; a running daemon adopts it
    Login {
        /// The credential
        name: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print the URL and read the redirect URL pasted on stdin (headless hosts)
        #[arg(long)]
        no_browser: bool,
        /// Loopback port of the default redirect URI http://127.0.0.1:PORT/callback (0: any free port)
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// How long to wait for the authorization
        #[arg(long, default_value = "5m")]
        timeout: humantime::Duration,
    },
    /// Run the built-in emulator and the daemon against it: the zero-setup first run
    Demo {
        /// Where the tokens and state go
        #[arg(long, default_value = "./tokend-demo")]
        dir: PathBuf,
    },
    /// Run the built-in Blnk-Cloud-compatible token endpoint alone
    Emulator {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Lifetime of the access tokens it issues
        #[arg(long, default_value = "1h")]
        lifetime: humantime::Duration,
        /// Seconds a rotated refresh token may be replayed for the same answer (0: strict)
        #[arg(long, default_value = "0s")]
        reuse_grace: humantime::Duration,
        #[arg(long, default_value = "tokend-demo")]
        client_id: String,
        /// The client secret; random when not given
        #[arg(long)]
        client_secret: Option<String>,
        /// Serve HTTPS with this PEM certificate chain (needs --tls-key)
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokend: cannot start the runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let code = match cli.command {
        Command::Run(c) => runtime.block_on(run(&c.config)),
        Command::Once(c) => runtime.block_on(once(&c.config)),
        Command::Check(c) => check(&c.config),
        Command::Status { config, json } => status::status(&config.config, json),
        Command::Token { name, config } => status::token(&config.config, name.as_deref()),
        Command::Login {
            name,
            config,
            no_browser,
            port,
            timeout,
        } => {
            let options = login::Options {
                no_browser,
                port,
                timeout: timeout.into(),
            };
            runtime.block_on(login(&config.config, &name, &options))
        }
        Command::Demo { dir } => runtime.block_on(demo::run(&dir)),
        Command::Emulator {
            listen,
            lifetime,
            reuse_grace,
            client_id,
            client_secret,
            tls_cert,
            tls_key,
        } => {
            let options = demo::EmulatorOptions {
                listen,
                lifetime: lifetime.into(),
                reuse_grace: reuse_grace.into(),
                client_id,
                client_secret,
                tls: tls_cert.zip(tls_key),
            };
            runtime.block_on(demo::emulator(options))
        }
    };
    // Without waiting for blocking work still in flight, such as a read of stdin that
    // `login --no-browser` no longer needs once the browser came back by itself.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// Loads the configuration, or says why not (exit 78).
pub fn load_config(path: &Path) -> Result<Config, u8> {
    config::load(path).map_err(|e| {
        eprintln!("tokend: configuration error: {e}");
        exit::CONFIG
    })
}

fn check(path: &Path) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for c in config.credentials.values() {
        for (what, read) in [
            ("client secret", c.client_secret.read()),
            ("bootstrap refresh token", c.read_bootstrap()),
        ] {
            if let Err(e) = read {
                eprintln!("tokend: warning: credentials.{}: {what}: {e}", c.name);
            }
        }
    }
    print!("{}", config.redacted_toml());
    exit::OK
}

async fn login(path: &Path, name: &str, options: &login::Options) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(cred) = config.credentials.get(name) else {
        eprintln!("tokend: no credential named {name} in {}", path.display());
        return exit::CONFIG;
    };
    let show = |url: &url::Url| {
        eprintln!("tokend: open this URL in a browser and authorize tokend:");
        println!("{url}");
    };
    match login::login(cred, options, show).await {
        Ok(outcome) => {
            print_login(cred, &outcome);
            exit::OK
        }
        Err(e) => {
            eprintln!("tokend: login failed: {e}");
            match e {
                login::LoginError::Config(_) => exit::CONFIG,
                login::LoginError::Refused(_) => exit::NOPERM,
                login::LoginError::Temporary(_) => exit::TEMPFAIL,
                login::LoginError::Other(_) => exit::OTHER,
            }
        }
    }
}

/// The summary of a login: expiry, scope and chain, never a token.
fn print_login(cred: &config::CredentialConfig, outcome: &login::Outcome) {
    let s = &outcome.state;
    println!("logged in: credential {}", cred.name);
    if let Some(exp) = s.expires_at {
        let left = exp
            .duration_since(std::time::SystemTime::now())
            .map(|d| {
                humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
            })
            .unwrap_or_else(|_| "expired".into());
        println!(
            "  access token expires: {} (in {left})",
            rfc3339::format(exp)
        );
    }
    println!("  scope: {}", s.scope.as_deref().unwrap_or("(not stated)"));
    print!(
        "  refresh-token chain started: {}",
        rfc3339::format(s.chain_started_at)
    );
    match crate::schedule::ChainAge::of(&cred.chain, s.chain_started_at) {
        Some(age) => println!("; log in again before {}", rfc3339::format(age.ends_at)),
        None => println!(),
    }
    match &outcome.written {
        login::Written::StateFile(p) => println!("  saved to {}", p.display()),
        login::Written::Adopted(pid) => {
            println!("  handed to the running tokend (pid {pid}), which adopted it")
        }
        login::Written::HandedOver { path, holder } => println!(
            "  left at {} for the running tokend ({holder}); it adopts it on SIGHUP, at start, or within seconds if blocked",
            path.display()
        ),
    }
}

/// The exit code for an error that stops the daemon from starting.
pub fn start_error_code(e: &StartError) -> u8 {
    match e {
        StartError::Store(StoreError::Locked { .. }) => exit::CANTCREAT,
        StartError::Endpoint { .. } => exit::CONFIG,
        StartError::Listen { .. } => exit::OTHER,
        _ => exit::OTHER,
    }
}

async fn run(path: &Path) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(&config.log);
    let result = match daemon::signals() {
        Ok(signals) => match Daemon::start(ConfigSource::File(path.to_owned()), &config).await {
            Ok(d) => d.run_until_signalled(signals).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            error!(error = %e, "cannot start");
            start_error_code(&e)
        }
    }
}

async fn once(path: &Path) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(&config.log);
    let mut worst = exit::OK;
    let board = Arc::new(Board::default());
    let clients = Clients::default();
    for cfg in config.credentials.values() {
        let span = tracing::info_span!("credential", credential = %cfg.name);
        let code = once_one(cfg, &board, &clients).instrument(span).await;
        worst = worse(worst, code);
    }
    worst
}

async fn once_one(
    cfg: &crate::config::CredentialConfig,
    board: &Arc<Board>,
    clients: &Clients,
) -> u8 {
    match daemon::prepare(cfg, board, clients) {
        Err(e) => {
            error!(error = %e, "cannot start");
            start_error_code(&e)
        }
        Ok((cred, _health)) => match cred.once().await {
            OnceResult::Fresh => exit::OK,
            OnceResult::Temporary(m) => {
                error!(error = %m, "no fresh token yet; try again later");
                exit::TEMPFAIL
            }
            OnceResult::Permanent(m) => {
                error!(error = %m, "refused");
                exit::NOPERM
            }
            OnceResult::Other(m) => {
                error!(error = %m, "failed");
                exit::OTHER
            }
        },
    }
}

/// The more serious of two exit codes: configuration, lock, permanent, temporary, other.
fn worse(a: u8, b: u8) -> u8 {
    let rank = |c: u8| {
        [
            exit::CONFIG,
            exit::CANTCREAT,
            exit::NOPERM,
            exit::TEMPFAIL,
            exit::OTHER,
        ]
        .iter()
        .position(|x| *x == c)
        .unwrap_or(usize::MAX)
    };
    if rank(b) < rank(a) { b } else { a }
}
