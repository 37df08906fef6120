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
pub struct Sources<'a> {
    pub env: config::Map<String, String>,
    pub file: String,
    /// The file's text, to tell what the environment alone made. Parsed only for an
    /// error: as a table it costs 9 KiB per credential, the start-up peak (issue 18).
    pub file_text: &'a str,
}

impl Sources<'_> {
    /// The variable that set `key`; for a key missing from a table that only variables
    /// made (a credential defined in the environment alone), the variable that made it;
    /// else the file.
    fn origin_of(&self, key: &str) -> String {
        let var = env_var_for(key);
        if self.env.contains_key(&var) {
            return var;
        }
        if self.env.is_empty() {
            return self.file.clone();
        }
        // It parsed before validation; an empty table only makes messages blame the file.
        let file_table: toml::Table = toml::from_str(self.file_text).unwrap_or_default();
        let parts: Vec<&str> = key.split('.').collect();
        for depth in (1..parts.len()).rev() {
            if file_has(&file_table, &parts[..depth]) {
                break;
            }
            let made_by = format!("{}__", env_var_for(&parts[..depth].join(".")));
            if let Some(var) = self.env.keys().filter(|k| k.starts_with(&made_by)).min() {
                return var.clone();
            }
        }
        self.file.clone()
    }

    /// An error about `key`, blamed on the source that set it.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.origin_of(key), key, message)
    }
}

fn file_has(file_table: &toml::Table, path: &[&str]) -> bool {
    let mut table = file_table;
    for part in path {
        match table.get(*part) {
            Some(toml::Value::Table(t)) => table = t,
            Some(_) => return true,
            None => return false,
        }
    }
    true
}

fn env_var_for(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
}
