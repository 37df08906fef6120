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
        // A secret put into the wrong key (or variable) is not echoed back.
        let message = crate::redact::token_runs(
            &message.into(),
            "",
            "[a value that looks like a token or a secret, not shown]",
        );
        let message = suggest_key(&message)
            .unwrap_or(message)
            .replace("expected a floating point", "expected a number")
            .replace("expected f64", "expected a number");
        ConfigError {
            source_name: source_name.into(),
            key: key.into(),
            message,
        }
    }
}

/// Where configuration values came from, for error messages.
pub struct Sources<'a> {
    pub env: config::Map<String, String>,
    pub file: String,
    /// The file's text, to tell what the environment alone made. Parsed only for an
    /// error: as a table it costs 9 KiB per credential, the start-up peak.
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

/// The `TOKEND_` variable that sets `key`.
pub(crate) fn env_var_for(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
}

/// serde's "unknown field `clientid`, expected one of `a`, `b`, ..." (every key of the
/// table) as "unknown key `clientid`: did you mean `client_id`?".
fn suggest_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let nearest = known
        .iter()
        .map(|k| (edit_distance(unknown, k), *k))
        .min()
        .filter(|(d, k)| *d <= 2.max(k.len() / 3));
    Some(match nearest {
        Some((_, k)) => format!("unknown key `{unknown}`: did you mean `{k}`?"),
        None => {
            format!("unknown key `{unknown}`: config/tokend.toml lists every key, with its default")
        }
    })
}

/// Levenshtein distance, for suggestions between short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_gets_the_nearest_one() {
        let m = "unknown field `client_idd`, expected one of `grant`, `token_url`, `client_id`, `client_secret`";
        assert_eq!(
            suggest_key(m).unwrap(),
            "unknown key `client_idd`: did you mean `client_id`?"
        );
        let m = "unknown field `frobnicate`, expected one of `grant`, `token_url`";
        assert!(suggest_key(m).unwrap().contains("config/tokend.toml"));
        assert_eq!(suggest_key("invalid type"), None);
        assert_eq!(edit_distance("refresh_tokn", "refresh_token"), 1);
    }
}
