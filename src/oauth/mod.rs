//! Talking to the authorization server (design.md §5, RFC 6749).
//!
//! - [`http`]: capped body reads and one-line errors (a leaf both others use)
//! - [`clients`]: HTTP clients shared across credentials, with TLS trust roots
//! - [`endpoint`]: one credential's token requests and client authentication
//! - [`assertion`]: the signed JWTs of `private_key_jwt`
//! - [`outcome`]: what a request comes to, and the state an answer leads to
//! - [`answer`]: what an HTTP answer means ([`classify`]); [`parse`]: a 2xx answer's body
//! - [`discovery`]: RFC 8414 / OpenID Connect metadata
//! - [`login`]: the authorization-code flow that starts a chain

pub mod answer;
pub mod assertion;
pub mod clients;
pub mod discovery;
pub mod endpoint;
pub mod http;
pub mod login;
pub mod outcome;
pub mod parse;

pub use answer::classify;
pub use clients::{Clients, EndpointError};
pub use endpoint::{Endpoint, Grant};
pub use outcome::{Failure, FailureKind, Origin, Outcome, Permanent, TokenAnswer};
