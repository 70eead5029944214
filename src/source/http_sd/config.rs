//! `http_sd_configs` entries: Prometheus's `discovery/http` `SDConfig` with
//! its HTTP client config, field names, defaults and messages.

use serde::Deserialize;

use crate::config::NotSupported;
use crate::duration::PromDuration;
use crate::http_client::config::{validate_auth, Authorization, BasicAuth, Secret, TlsConfig};
use crate::yaml;

/// The raw entry, as written.
// `NotSupported` fields are rejected while parsing and never hold a value.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpSdConfig {
    #[serde(deserialize_with = "deserialize_url")]
    url: String,
    #[serde(default = "default_refresh")]
    refresh_interval: PromDuration,
    #[serde(default)]
    basic_auth: Option<BasicAuth>,
    #[serde(default)]
    authorization: Option<Authorization>,
    #[serde(default)]
    bearer_token: Secret,
    #[serde(default)]
    bearer_token_file: String,
    #[serde(default)]
    tls_config: TlsConfig,
    #[serde(default = "default_true")]
    follow_redirects: bool,
    /// Accepted for pasting; sdbridge speaks HTTP/1.1 to upstreams.
    #[serde(default)]
    enable_http2: Option<bool>,
    #[serde(default)]
    oauth2: Option<NotSupported>,
    #[serde(default)]
    proxy_url: Option<NotSupported>,
    #[serde(default)]
    no_proxy: Option<NotSupported>,
    #[serde(default)]
    proxy_from_environment: Option<NotSupported>,
    #[serde(default)]
    proxy_connect_header: Option<NotSupported>,
}

fn default_refresh() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(60))
}

fn default_true() -> bool {
    true
}

/// `SDConfig.UnmarshalYAML`'s URL checks, failing at the value's position.
fn deserialize_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    yaml::parse_str(d, |url| {
        if url.is_empty() {
            return Err("URL is missing".to_string());
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err("URL scheme must be 'http' or 'https'".to_string()),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err("host is missing in URL".to_string());
        }
        Ok(url.to_string())
    })
}

/// One `http_sd_configs` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawHttpSdConfig")]
pub struct HttpSdConfig {
    /// The upstream HTTP SD endpoint; also `__meta_url` of its groups.
    pub url: String,
    /// How often it is polled; default `60s`, as in Prometheus. Also the
    /// timeout of one request, as in Prometheus.
    pub refresh_interval: PromDuration,
    /// HTTP basic auth.
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization` header (also from `bearer_token[_file]`).
    pub authorization: Option<Authorization>,
    /// TLS settings for `https`.
    pub tls_config: TlsConfig,
    /// Follow HTTP redirects (Prometheus's default: true).
    pub follow_redirects: bool,
    /// `limits.max_input_size`, set after parsing: the largest answer read
    /// (after gzip decoding).
    pub max_input_size: usize,
}

impl TryFrom<RawHttpSdConfig> for HttpSdConfig {
    type Error = String;

    fn try_from(raw: RawHttpSdConfig) -> Result<Self, String> {
        let (basic_auth, authorization) = validate_auth(
            raw.basic_auth,
            raw.authorization,
            raw.bearer_token,
            raw.bearer_token_file,
        )?;
        raw.tls_config.validate()?;
        Ok(HttpSdConfig {
            url: raw.url,
            refresh_interval: raw.refresh_interval,
            basic_auth,
            authorization,
            tls_config: raw.tls_config,
            follow_redirects: raw.follow_redirects,
            max_input_size: crate::http_client::DEFAULT_MAX_INPUT,
        })
    }
}

impl HttpSdConfig {
    /// Resolves file paths against the config directory.
    pub fn set_directory(&mut self, base_dir: &str) {
        crate::http_client::config::set_directory(
            base_dir,
            &mut self.tls_config,
            self.basic_auth.as_mut(),
            self.authorization.as_mut(),
        );
    }
}
