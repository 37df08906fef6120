//! The configuration as `tokend check` prints it: the keys of the file, loadable again,
//! with every inline secret redacted.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Serialize, Serializer};
use url::Url;

use crate::config::model::{
    AssertionConfig, ChainPolicy, ClientAuth, Config, CredentialConfig, GrantType, HookConfig,
    HttpConfig, OutputConfig, RefreshPolicy, RetryPolicy,
};
use crate::config::secret::SecretSource;

/// A credential as `check` prints it: the keys of the file, inline secrets redacted.
#[derive(Serialize)]
struct CredentialView<'a> {
    grant: GrantType,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorize_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    authorize_params: &'a BTreeMap<String, String>,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret_file: Option<&'a Path>,
    client_auth: ClientAuth,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    assertion: Option<&'a AssertionConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token_file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    token_params: &'a BTreeMap<String, String>,
    state_file: &'a Path,
    /// Only for a chain with a maximum age: without one `warn_before` does nothing, and
    /// the client-credentials grant takes no chain keys.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    chain: Option<&'a ChainPolicy>,
    refresh: &'a RefreshPolicy,
    retry: &'a RetryPolicy,
    http: &'a HttpConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_dir: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_rotate: Option<&'a HookConfig>,
    outputs: &'a [OutputConfig],
}

impl Serialize for CredentialConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let inline =
            |src: &SecretSource| matches!(src, SecretSource::Inline(_)).then_some("[redacted]");
        CredentialView {
            grant: self.grant,
            token_url: self.token_url.as_ref().map(Url::as_str),
            issuer: self.login.issuer.as_ref().map(Url::as_str),
            authorize_url: self.login.authorize_url.as_ref().map(Url::as_str),
            redirect_uri: self.login.redirect_uri.as_ref().map(Url::as_str),
            authorize_params: &self.login.params,
            client_id: &self.client_id,
            client_secret: self.client_secret.as_ref().and_then(inline),
            client_secret_file: self.client_secret.as_ref().and_then(SecretSource::path),
            client_auth: self.client_auth,
            assertion: self.assertion.as_deref(),
            refresh_token: self.refresh_token.as_ref().and_then(inline),
            refresh_token_file: self.refresh_token.as_ref().and_then(SecretSource::path),
            scope: self.scope.as_deref(),
            token_params: &self.token_params,
            state_file: &self.state_file,
            chain: (self.has_chain() && self.chain.max_age.is_some()).then_some(&self.chain),
            refresh: &self.refresh,
            retry: &self.retry,
            http: &self.http,
            publish_dir: self.publish_dir.as_deref(),
            on_rotate: self.on_rotate.as_deref(),
            outputs: &self.outputs,
        }
        .serialize(s)
    }
}

impl Config {
    /// The effective configuration as TOML, every secret redacted (for `tokend check`).
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}
