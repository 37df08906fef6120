//! The built-in Blnk-Cloud-compatible token endpoint (design.md §13), for `demo`, `emulator`
//! and the project's own tests.
//!
//! It rotates the refresh token on every use and, like strict servers, treats the reuse
//! of a rotated token as theft: `invalid_grant`, and the whole family revoked (an optional
//! grace window instead returns the pair already issued). Tests queue faults to make it
//! misbehave on purpose, in-process or through `POST /_emulator/faults`.
//!
//! - [`model`]: its paths, configuration, faults and counters
//! - [`handle`]: the running [`Emulator`] and its control API
//! - [`server`]: the HTTP(S) server and its routes
//! - [`token`]: the token endpoint: faults, rotation, the client-credentials grant
//! - [`client`]: client authentication: secrets, assertions, certificates
//! - [`authorize`]: the authorization endpoint and the code exchange
//! - [`memory`]: every token issued and revoked
//! - [`reply`]: how answers are written

pub mod authorize;
pub mod client;
pub mod handle;
pub mod memory;
pub mod model;
pub mod reply;
pub mod server;
pub mod token;

pub use handle::Emulator;
pub use model::{
    AUTHORIZE_PATH, EmulatorConfig, Fault, METADATA_PATH, RESOURCE_PATH, RefreshTokenStatus,
    Rotation, Sloppiness, Stats, TOKEN_PATH, TlsIdentity, TokenRequest,
};
