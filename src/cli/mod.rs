//! The command line of design.md §2, and the exit codes each command ends with.
//!
//! - [`exit`]: exit codes and what maps to them
//! - [`run`]: `run` and `once`; [`preflight`]: what both check before sending anything
//! - one module per other command: [`check`], [`status`], [`token`], [`login`],
//!   [`demo`], [`emulator`]

pub mod check;
pub mod demo;
pub mod emulator;
pub mod exit;
pub mod login;
pub mod preflight;
pub mod run;
pub mod status;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_PATH;
use crate::oauth::login::Options as LoginOptions;
use crate::out::errln;

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
        /// Only this credential
        name: Option<String>,
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
    /// Run the built-in Blnk-Cloud-compatible token endpoint alone, for local tests of
    /// an app: it prints its client id, secret and a first refresh token. Make it
    /// misbehave through its control endpoints (docs/emulator.md): POST /_emulator/faults, POST /_emulator/bootstrap,
    /// GET /_emulator/stats
    Emulator {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Lifetime of the access tokens it issues
        #[arg(long, default_value = "1h")]
        lifetime: humantime::Duration,
        /// How long a rotated refresh token may be replayed for the same answer, as a
        /// duration such as "30s" (0s: strict, a replay revokes the whole chain)
        #[arg(long, default_value = "0s")]
        reuse_grace: humantime::Duration,
        /// The client id it accepts
        #[arg(long, default_value = "tokend-demo")]
        client_id: String,
        /// The client secret; random when not given
        #[arg(long)]
        client_secret: Option<String>,
        /// Authenticate the client by private_key_jwt instead of a secret: its
        /// assertions must verify with this public key (PEM)
        #[arg(long, conflicts_with = "client_secret")]
        assertion_key: Option<PathBuf>,
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
    // Before anything holds a secret.
    if let Err(e) = crate::hardening::harden() {
        errln!("tokend: warning: {e}");
    }
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
        .max_blocking_threads(crate::credential::DISK_THREADS)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln!("tokend: cannot start the runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let code = match cli.command {
        Command::Run(c) => runtime.block_on(run::run(&c.config)),
        Command::Once(c) => runtime.block_on(run::once(&c.config)),
        Command::Check(c) => check::check(&c.config),
        Command::Status { name, config, json } => {
            runtime.block_on(status::status(&config.config, name.as_deref(), json))
        }
        Command::Token { name, config } => token::run(&config.config, name.as_deref()),
        Command::Login {
            name,
            config,
            no_browser,
            port,
            timeout,
        } => {
            let options = LoginOptions {
                no_browser,
                port,
                timeout: timeout.into(),
            };
            runtime.block_on(login::login(&config.config, &name, &options))
        }
        Command::Demo { dir } => runtime.block_on(demo::run(&dir)),
        Command::Emulator {
            listen,
            lifetime,
            reuse_grace,
            client_id,
            client_secret,
            assertion_key,
            tls_cert,
            tls_key,
        } => {
            let options = emulator::Options {
                listen,
                lifetime: lifetime.into(),
                reuse_grace: reuse_grace.into(),
                client_id,
                client_secret,
                assertion_key,
                tls: tls_cert.zip(tls_key),
            };
            runtime.block_on(emulator::run(options))
        }
    };
    // Without waiting for blocking work still in flight, such as a read of stdin that
    // `login --no-browser` no longer needs once the browser came back by itself.
    runtime.shutdown_background();
    ExitCode::from(code)
}
