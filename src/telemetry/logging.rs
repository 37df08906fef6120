//! Logs: `tracing` to stderr, as text or one JSON object per line (design.md §8).
//!
//! Secrets never reach here: they are `SecretString`s whose `Debug` is redacted, and no
//! code formats their exposed value into a message.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; `RUST_LOG`, when set, wins over `level`.
pub fn init(cfg: &LogConfig) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(v).unwrap_or_else(|_| EnvFilter::new(&cfg.level))
        }
        _ => EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // rustls' verifier logs its own error for an untrusted certificate; tokend says the
    // same once, with what to do.
    let filter = match "rustls_platform_verifier=off".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    };
    // A stderr that went away (`tokend once 2>&- | ...`) loses the log lines, quietly:
    // the subscriber's own complaint about it would go through `eprintln!`, which panics.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
