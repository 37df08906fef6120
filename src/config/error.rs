//! Configuration errors, and where each value came from (the file or a variable), so
//! that every error names its key and its source.

/// The prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "TOKEND_";

/// A configuration that failed to load or validate: which key, from where, and why.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {key}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(
        source_name: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            source_name: source_name.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where configuration values came from, for error messages.
pub struct Sources {
    pub env: config::Map<String, String>,
    pub file: String,
}

impl Sources {
    /// The variable that set `key`, or else the file.
    fn origin_of(&self, key: &str) -> String {
        let var = env_var_for(key);
        if self.env.contains_key(&var) {
            var
        } else {
            self.file.clone()
        }
    }

    /// An error about `key`, blamed on the source that set it.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.origin_of(key), key, message)
    }
}

fn env_var_for(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
}
