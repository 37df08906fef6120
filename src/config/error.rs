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
    /// The file's own tables, to tell what the environment alone made.
    pub file_table: toml::Table,
}

impl Sources {
    /// The variable that set `key`; for a key missing from a table that only variables
    /// made (a credential defined in the environment alone), the variable that made it;
    /// else the file.
    fn origin_of(&self, key: &str) -> String {
        let var = env_var_for(key);
        if self.env.contains_key(&var) {
            return var;
        }
        let parts: Vec<&str> = key.split('.').collect();
        for depth in (1..parts.len()).rev() {
            if self.file_has(&parts[..depth]) {
                break;
            }
            let made_by = format!("{}__", env_var_for(&parts[..depth].join(".")));
            if let Some(var) = self.env.keys().filter(|k| k.starts_with(&made_by)).min() {
                return var.clone();
            }
        }
        self.file.clone()
    }

    fn file_has(&self, path: &[&str]) -> bool {
        let mut table = &self.file_table;
        for part in path {
            match table.get(*part) {
                Some(toml::Value::Table(t)) => table = t,
                Some(_) => return true,
                None => return false,
            }
        }
        true
    }

    /// An error about `key`, blamed on the source that set it.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.origin_of(key), key, message)
    }
}

fn env_var_for(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
}
