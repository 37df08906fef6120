//! Publishing: what applications read, and who is told of a rotation (design.md §7).
//!
//! - [`format`]: the content of each output format
//! - [`file`]: an output's permissions and its write errors
//! - [`dir`]: `publish_dir`, several outputs swapped as one version
//! - [`outputs`]: every output of a credential, written together
//! - [`hooks`]: the command or signal run after a rotation

pub mod dir;
pub mod file;
pub mod format;
pub mod hooks;
pub mod outputs;

pub use file::OutputError;
pub use format::Published;
pub use outputs::publish;
