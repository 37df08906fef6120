//! Talking to the authorization server (SPEC §5, RFC 6749).
//!
//! - [`http`]: capped body reads and one-line errors (a leaf both others use)
//! - [`clients`]: HTTP clients shared across credentials, with TLS trust roots
//! - [`endpoint`]: one credential's token requests and client authentication
//! - [`assertion`]: the signed JWTs of `private_key_jwt`
//! - [`answer`]: what an answer means ([`classify`]), and the state it leads to
//! - [`discovery`]: RFC 8414 / OpenID Connect metadata
//! - [`login`]: the authorization-code flow that starts a chain

pub mod answer;
pub mod assertion;
pub mod clients;
pub mod discovery;
pub mod endpoint;
pub mod http;
pub mod login;

pub use answer::{Failure, FailureKind, Origin, Outcome, Permanent, TokenAnswer, classify};
pub use clients::{Clients, EndpointError};
pub use endpoint::{Endpoint, Grant};
