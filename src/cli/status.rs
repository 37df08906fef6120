//! `tokend status`: a read-only view of the state files, usable while the daemon runs (a
//! state file is only ever replaced whole) and as an exec probe.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::cli::exit::{self, load_config};
use crate::credential::schedule::ChainAge;
use crate::out::outln;
use crate::rfc3339;
use crate::store::file::read_state_file;
use crate::store::lock::holder_of;
use crate::store::names::lock_path;

/// One credential's condition as `status` reports it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub name: String,
    pub healthy: bool,
    pub expires_at: Option<String>,
    pub seconds_left: Option<u64>,
    pub last_refresh: Option<String>,
    pub chain_started_at: Option<String>,
    /// When the chain reaches `refresh_token_max_age`, if one is set.
    pub chain_ends_at: Option<String>,
    /// Within `warn_before` of that: a person should run `tokend login` soon. Health is
    /// not affected until the chain actually fails.
    pub chain_warning: bool,
    /// The chain is past that maximum age.
    pub chain_ended: bool,
    pub last_error: Option<String>,
    pub blocked: bool,
    /// With `[coordination]`: the credential as the store holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedReport>,
    /// The state file's generation, for `shared` (reported there).
    #[serde(skip)]
    generation: Option<u64>,
}

/// A shared credential (design.md §11): who leads, and which generation the store holds.
#[derive(Debug, Serialize)]
pub struct SharedReport {
    /// This host's daemon: "leader", "follower", or "not running".
    pub role: String,
    pub leader: Option<String>,
    /// The generation in the store; `local_generation` is this host's state file's.
    pub generation: Option<u64>,
    pub local_generation: Option<u64>,
    /// A refresh begun and not stored: which replica, since when (an unfinished one is
    /// waited on; docs/replicas.md).
    pub refreshing: Option<String>,
    /// Why the store could not be read.
    pub error: Option<String>,
}

/// Builds the report of every configured credential from its state file.
pub fn reports(config: &crate::config::Config, now: SystemTime) -> Vec<Report> {
    config
        .credentials
        .values()
        .map(|c| match read_state_file(&c.state_file) {
            Ok(Some(s)) => {
                let left = s.expires_at.and_then(|e| e.duration_since(now).ok());
                let blocked = s.last_error.as_ref().is_some_and(|e| e.blocked);
                let chain = ChainAge::of(&c.chain, s.chain_started_at);
                Report {
                    name: c.name.clone(),
                    healthy: s.valid_access_token(now).is_some() && !blocked,
                    expires_at: s.expires_at.map(rfc3339::format),
                    seconds_left: left.map(|d| d.as_secs()),
                    last_refresh: s.obtained_at.map(rfc3339::format),
                    // The client-credentials grant has no chain to date.
                    chain_started_at: c.has_chain().then(|| rfc3339::format(s.chain_started_at)),
                    chain_ends_at: chain.map(|a| rfc3339::format(a.ends_at)),
                    chain_warning: chain.is_some_and(|a| a.warning(now)),
                    chain_ended: chain.is_some_and(|a| a.ends_at <= now),
                    last_error: s
                        .last_error
                        .map(|e| format!("{}: {}", rfc3339::format(e.at), e.message)),
                    blocked,
                    shared: None,
                    generation: Some(s.generation),
                }
            }
            Ok(None) => Report::missing(&c.name, "no state yet".into()),
            Err(e) => Report::missing(&c.name, e.to_string()),
        })
        .collect()
}

impl Report {
    fn missing(name: &str, why: String) -> Report {
        Report {
            name: name.to_owned(),
            healthy: false,
            expires_at: None,
            seconds_left: None,
            last_refresh: None,
            chain_started_at: None,
            chain_ends_at: None,
            chain_warning: false,
            chain_ended: false,
            last_error: Some(why),
            blocked: false,
            shared: None,
            generation: None,
        }
    }
}

impl SharedReport {
    fn unread(error: String) -> SharedReport {
        SharedReport {
            role: "unknown".into(),
            leader: None,
            generation: None,
            local_generation: None,
            refreshing: None,
            error: Some(error),
        }
    }
}

/// Adds what the store says of each credential, when coordination is configured.
async fn add_shared(config: &crate::config::Config, reports: &mut [Report]) {
    let Some(coordination) = &config.coordination else {
        return;
    };
    let store = crate::coordination::Connection::open(coordination);
    for r in reports.iter_mut() {
        let store = match &store {
            Ok(store) => store,
            Err(e) => {
                r.shared = Some(SharedReport::unread(e.to_string()));
                continue;
            }
        };
        let Some(cred) = config.credentials.get(&r.name) else {
            continue;
        };
        // The daemon's identity: its own pid when none is configured.
        let daemon =
            holder_of(&lock_path(&cred.state_file)).map(|pid| coordination.identity_of(pid as u32));
        let mut shared = SharedReport {
            role: "not running".into(),
            leader: None,
            generation: None,
            local_generation: r.generation,
            refreshing: None,
            error: None,
        };
        match store.describe(&r.name).await {
            Ok((leader, stored)) => {
                if daemon.is_some() {
                    shared.role = if leader.is_some() && leader == daemon {
                        "leader".into()
                    } else {
                        "follower".into()
                    };
                }
                shared.leader = leader;
                shared.generation = Some(stored.generation());
                shared.refreshing = stored
                    .record
                    .as_ref()
                    .and_then(|r| r.intent.as_ref())
                    .map(|i| {
                        let ago = SystemTime::now().duration_since(i.since).unwrap_or_default();
                        format!(
                            "replica {} began a refresh of generation {} at {} ({} ago) and has stored no result",
                            i.identity,
                            i.generation,
                            rfc3339::format(i.since),
                            humantime::format_duration(Duration::from_secs(ago.as_secs()))
                        )
                    });
            }
            Err(e) => shared.error = Some(e.to_string()),
        }
        r.shared = Some(shared);
    }
}

/// Prints the report of every credential (or of `name`); exit 0 only when all it
/// shows are healthy.
pub async fn status(path: &Path, name: Option<&str>, json: bool) -> u8 {
    let mut config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(name) = name {
        if !config.credentials.contains_key(name) {
            return exit::unknown_credential(name, path, &config);
        }
        config.credentials.retain(|n, _| n == name);
    }
    let mut reports = reports(&config, SystemTime::now());
    add_shared(&config, &mut reports).await;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_else(|_| "[]".into())
        );
    } else {
        for r in &reports {
            let health = if r.healthy {
                "healthy"
            } else if r.blocked {
                "BLOCKED"
            } else {
                "UNHEALTHY"
            };
            let left = r
                .seconds_left
                .map(|s| humantime::format_duration(Duration::from_secs(s)).to_string());
            outln!("{}: {health}", r.name);
            outln!(
                "  expires at:   {} ({} left)",
                r.expires_at.as_deref().unwrap_or("-"),
                left.as_deref().unwrap_or("none")
            );
            outln!(
                "  last refresh: {}",
                r.last_refresh.as_deref().unwrap_or("-")
            );
            if let Some(start) = &r.chain_started_at {
                outln!("  chain start:  {start}");
            }
            if let Some(end) = &r.chain_ends_at {
                let warning = if r.chain_ended {
                    format!(" WARNING: past it: run `tokend login {}`", r.name)
                } else if r.chain_warning {
                    format!(" WARNING: run `tokend login {}` before then", r.name)
                } else {
                    String::new()
                };
                outln!("  chain ends:   {end}{warning}");
            }
            outln!("  last error:   {}", r.last_error.as_deref().unwrap_or("-"));
            if let Some(sh) = &r.shared {
                let number = |g: Option<u64>| g.map_or("-".into(), |g| g.to_string());
                outln!(
                    "  role:         {} (leader: {})",
                    sh.role,
                    sh.leader.as_deref().unwrap_or("none")
                );
                outln!(
                    "  generation:   {} in the store, {} here",
                    number(sh.generation),
                    number(sh.local_generation)
                );
                if let Some(i) = &sh.refreshing {
                    outln!("  refreshing:   {i}");
                }
                if let Some(e) = &sh.error {
                    outln!("  store error:  {e}");
                }
            }
        }
    }
    if reports.iter().all(|r| r.healthy) {
        exit::OK
    } else {
        exit::OTHER
    }
}
