//! `tokend login NAME`: the authorization-code flow with PKCE and a loopback redirect,
//! which starts a new refresh-token chain and writes it exactly as the daemon would. A
//! running daemon holds the state's lock, so login hands the new state over beside it
//! and sends that daemon SIGHUP to adopt it.
//!
//! - [`flow`]: the flow itself, from the authorize URL to the first state
//! - [`callback`]: the redirect's listener or pasted URL, and what it says
//! - [`handover`]: where the new state is written
//! - [`error`]: why a login failed

pub mod callback;
pub mod error;
pub mod flow;
pub mod handover;

pub use error::LoginError;
pub use flow::{Options, Outcome, login};
pub use handover::Written;
