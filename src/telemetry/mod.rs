//! What the process tells the outside about itself (design.md §8, §9): each credential's
//! health, the board that gathers them, Prometheus metrics, the health endpoints and
//! the logs.
//!
//! - [`health`]: one credential's condition
//! - [`board`]: every credential's condition, for readiness and status lines
//! - [`series`]: the series every credential has, made at each scrape
//! - [`tally`]: one credential's refresh attempts, counted as they happen
//! - [`metrics`]: the other Prometheus series, and the text of them all
//! - [`server`]: `/healthz`, `/readyz`, `/metrics`
//! - [`logging`]: `tracing` to stderr, text or JSON

pub mod board;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod series;
pub mod server;
pub mod tally;

pub use board::Board;
pub use health::Health;
