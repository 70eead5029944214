//! `http_sd_configs` entries: Prometheus's `discovery/http` `SDConfig` with
//! its HTTP client config, field names, defaults and messages.
//!
//! Two departures. `refresh_interval: 0s` is refused (Prometheus would
//! panic; sdbridge polled ten times a second). `user:password@` in the URL
//! is sent as basic auth, as Go's client sends it, but its password is
//! shown nowhere: the URL sdbridge prints and puts in `__meta_url` is Go's
//! `url.Redacted` form (`user:xxxxx@`), so it does not reach every
//! scraper of the answer.

use serde::Deserialize;

use crate::config::refuse::NotSupported;
use crate::duration::{Positive, PromDuration};
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
    refresh_interval: Positive,
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

fn default_refresh() -> Positive {
    Positive(PromDuration(std::time::Duration::from_secs(60)))
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

/// A URL's `user[:password]@`, split off.
#[derive(Debug, PartialEq, Eq)]
struct Split {
    /// The URL as shown: the password, if any, replaced by `xxxxx`.
    shown: String,
    /// The URL without user information, to request.
    fetch: String,
    /// The user and password, percent-decoded, if the URL has them.
    credentials: Option<(String, String)>,
}

/// Splits `url`'s user information off, as Go's `url.Parse` reads it
/// (percent-decoded) and `URL.Redacted` shows it.
fn split_userinfo(url: &str) -> Result<Split, String> {
    let unchanged = || Split {
        shown: url.to_string(),
        fetch: url.to_string(),
        credentials: None,
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(unchanged());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some((userinfo, host)) = rest[..end].rsplit_once('@') else {
        return Ok(unchanged());
    };
    let tail = &rest[end..];
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| "invalid user information in URL: not UTF-8".to_string())
    };
    let (user, password, shown) = match userinfo.split_once(':') {
        Some((user, password)) => (
            user,
            password,
            format!("{scheme}://{user}:xxxxx@{host}{tail}"),
        ),
        None => (userinfo, "", url.to_string()),
    };
    Ok(Split {
        shown,
        fetch: format!("{scheme}://{host}{tail}"),
        credentials: Some((decode(user)?, decode(password)?)),
    })
}

/// One `http_sd_configs` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawHttpSdConfig")]
pub struct HttpSdConfig {
    /// The upstream HTTP SD endpoint as shown (status page, logs,
    /// `__meta_url`): a password in it replaced by `xxxxx`.
    pub url: String,
    /// The URL requested: without `user:password@`, which goes into
    /// `basic_auth`.
    pub fetch_url: String,
    /// How often it is polled; default `60s`, as in Prometheus. Also the
    /// timeout of one request, as in Prometheus. Never zero.
    pub refresh_interval: PromDuration,
    /// HTTP basic auth (also from the URL's `user:password@`).
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
        let split = split_userinfo(&raw.url)?;
        let basic_auth = match split.credentials {
            None => basic_auth,
            Some(_) if basic_auth.is_some() || authorization.is_some() => {
                return Err("the url has user information (user:password@), sent as basic auth: basic_auth, authorization and bearer_token cannot be set as well".into());
            }
            Some((username, password)) => Some(BasicAuth {
                username,
                password: Secret(password),
                ..BasicAuth::default()
            }),
        };
        Ok(HttpSdConfig {
            url: split.shown,
            fetch_url: split.fetch,
            refresh_interval: raw.refresh_interval.0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn parse(block: &str) -> Result<HttpSdConfig, String> {
        let text = format!("jobs:\n  - job_name: a\n    http_sd_configs:\n{block}");
        Config::parse(&text, Path::new("/etc/sdbridge/sdbridge.yml"))
            .map(|mut c| c.jobs.remove(0).http_sd_configs.remove(0))
            .map_err(|e| e.to_string())
    }

    /// Issue 18: `refresh_interval: 0s` was accepted and polled about ten
    /// times a second.
    #[test]
    fn a_zero_refresh_interval_is_refused_where_it_is_written() {
        let err = parse("      - url: http://127.0.0.1:1/sd\n        refresh_interval: 0s\n")
            .unwrap_err();
        assert!(
            err.contains(
                "/etc/sdbridge/sdbridge.yml:5:27: jobs[0].http_sd_configs[0].refresh_interval: must be greater than 0"
            ),
            "{err}"
        );
        let c = parse("      - url: http://127.0.0.1:1/sd\n").unwrap();
        assert_eq!(c.refresh_interval.0, std::time::Duration::from_secs(60));
        let c = parse("      - {url: http://127.0.0.1:1/sd, refresh_interval: 1ms}\n").unwrap();
        assert_eq!(c.refresh_interval.0, std::time::Duration::from_millis(1));
    }

    /// Issue 17: `user:password@` was neither sent nor hidden.
    #[test]
    fn url_user_information_becomes_basic_auth_and_is_redacted() {
        let c = parse("      - url: 'http://alice:s3cr%40t@127.0.0.1:1/sd?x=1'\n").unwrap();
        assert_eq!(c.url, "http://alice:xxxxx@127.0.0.1:1/sd?x=1");
        assert_eq!(c.fetch_url, "http://127.0.0.1:1/sd?x=1");
        let auth = c.basic_auth.as_ref().expect("basic auth from the URL");
        assert_eq!(
            (auth.username.as_str(), auth.password.0.as_str()),
            ("alice", "s3cr@t")
        );
        assert!(!format!("{c:?}").contains("s3cr"), "{c:?}");
        // A user alone is sent with an empty password and shown as is (Go).
        let c = parse("      - url: 'https://bob@127.0.0.1:1/'\n").unwrap();
        assert_eq!(
            (c.url.as_str(), c.fetch_url.as_str()),
            ("https://bob@127.0.0.1:1/", "https://127.0.0.1:1/")
        );
        assert_eq!(
            c.basic_auth.as_ref().map(|b| b.username.as_str()),
            Some("bob")
        );
        // No user information: nothing changes.
        let c = parse("      - url: 'http://127.0.0.1:1/a@b'\n").unwrap();
        assert_eq!(
            (c.url.as_str(), c.basic_auth.is_none()),
            ("http://127.0.0.1:1/a@b", true)
        );
        for other in [
            "basic_auth: {username: u, password: p}",
            "authorization: {credentials: c}",
            "bearer_token: t",
        ] {
            let err = parse(&format!(
                "      - url: 'http://alice:s3cret@127.0.0.1:1/sd'\n        {other}\n"
            ))
            .unwrap_err();
            assert!(
                err.starts_with("/etc/sdbridge/sdbridge.yml:4:9: jobs[0].http_sd_configs[0]: the url has user information"),
                "{other}: {err}"
            );
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
