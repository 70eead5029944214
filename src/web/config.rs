//! The `web:` block: Prometheus's web-config schema (exporter-toolkit's
//! `web-config.yml`), inline, plus sdbridge's `bearer_tokens_file`.
//!
//! Field names, defaults and validation follow exporter-toolkit's
//! `web/tls_config.go` and `web/handler.go`. What rustls cannot do the way
//! Go's crypto/tls does (TLS 1.0/1.1, chosen cipher suites and curves,
//! certificates requested but not verified) is an explicit "not
//! supported" error, never silently ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::config::refuse::NotSupported;

/// `web:`: who may ask and over what.
#[allow(dead_code)] // `NotSupported` fields are rejected while parsing.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// TLS for the listener; absent means plain HTTP. Switching it on or
    /// off needs a restart; its files are re-read when they change.
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    /// Response headers and HTTP/2.
    #[serde(default)]
    pub http_server_config: HttpServerConfig,
    /// User name to bcrypt hash (`$2a$`, `$2b$`, `$2y$`). Any user set
    /// turns authentication on.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, BcryptHash>,
    /// sdbridge's: a file of accepted bearer tokens, one per line, re-read
    /// when it changes so tokens rotate without a reload. Turns
    /// authentication on.
    #[serde(default)]
    pub bearer_tokens_file: Option<String>,
    /// exporter-toolkit's request rate limit: not built.
    #[serde(default)]
    rate_limit: Option<NotSupported>,
}

impl fmt::Debug for WebConfig {
    // The hashes are secrets in exporter-toolkit (`config_util.Secret`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls_server_config", &self.tls_server_config)
            .field("http_server_config", &self.http_server_config)
            .field(
                "basic_auth_users",
                &self.basic_auth_users.keys().collect::<Vec<_>>(),
            )
            .field("bearer_tokens_file", &self.bearer_tokens_file)
            .finish()
    }
}

impl WebConfig {
    /// Whether requests need credentials.
    pub fn auth_enabled(&self) -> bool {
        !self.basic_auth_users.is_empty() || self.bearer_tokens_file.is_some()
    }

    /// Joins relative file paths to the config's directory, as
    /// exporter-toolkit's `SetDirectory` does.
    pub fn set_directory(&mut self, base_dir: &str) {
        let join = |p: &mut String| *p = crate::gopath::join_dir(base_dir, p);
        if let Some(tls) = &mut self.tls_server_config {
            join(&mut tls.cert_file);
            join(&mut tls.key_file);
            join(&mut tls.client_ca_file);
        }
        if let Some(tokens) = &mut self.bearer_tokens_file {
            join(tokens);
        }
    }
}

/// `tls_server_config:`.
#[allow(dead_code)] // `NotSupported` fields are rejected while parsing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain, leaf first. Required.
    #[serde(default)]
    pub cert_file: String,
    /// PEM private key. Required.
    #[serde(default)]
    pub key_file: String,
    /// PEM CAs client certificates are verified against.
    #[serde(default)]
    pub client_ca_file: String,
    /// Go's `tls.ClientAuthType` names. Default `NoClientCert`; a
    /// `client_ca_file` without a policy is an error, as in Go.
    #[serde(default)]
    pub client_auth_type: ClientAuthType,
    /// Default `TLS12`.
    #[serde(default = "TlsVersion::tls12")]
    pub min_version: TlsVersion,
    /// Default `TLS13`.
    #[serde(default = "TlsVersion::tls13")]
    pub max_version: TlsVersion,
    #[serde(default)]
    cert: Option<NotSupported>,
    #[serde(default)]
    key: Option<NotSupported>,
    #[serde(default)]
    client_ca: Option<NotSupported>,
    #[serde(default)]
    cipher_suites: Option<NotSupported>,
    #[serde(default)]
    curve_preferences: Option<NotSupported>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<NotSupported>,
    #[serde(default)]
    client_allowed_sans: Option<NotSupported>,
}

/// Go's client certificate policies that rustls can enforce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuthType {
    /// No certificate asked for.
    #[default]
    NoClientCert,
    /// A certificate is asked for and, when sent, verified.
    VerifyClientCertIfGiven,
    /// A certificate verified against `client_ca_file` is required.
    RequireAndVerifyClientCert,
}

impl<'de> Deserialize<'de> for ClientAuthType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "" | "NoClientCert" => Ok(ClientAuthType::NoClientCert),
            "VerifyClientCertIfGiven" => Ok(ClientAuthType::VerifyClientCertIfGiven),
            "RequireAndVerifyClientCert" => Ok(ClientAuthType::RequireAndVerifyClientCert),
            "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
                Err(de::Error::custom(format!(
                    "client_auth_type {name:?} (a client certificate that is not verified) is not supported by sdbridge; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
                )))
            }
            _ => Err(de::Error::custom(format!("invalid ClientAuth: {name}"))),
        }
    }
}

/// A TLS protocol version by Go's config name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS12`.
    Tls12,
    /// `TLS13`.
    Tls13,
}

impl TlsVersion {
    fn tls12() -> Self {
        TlsVersion::Tls12
    }
    fn tls13() -> Self {
        TlsVersion::Tls13
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            "TLS10" | "TLS11" => Err(de::Error::custom(format!(
                "{name} is not supported by sdbridge (rustls speaks TLS 1.2 and 1.3)"
            ))),
            _ => Err(de::Error::custom(format!("unknown TLS version: {name}"))),
        }
    }
}

/// `http_server_config:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Offer HTTP/2 (ALPN `h2` over TLS, prior knowledge in clear).
    /// Default true.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Headers added to every answer, from exporter-toolkit's short list.
    #[serde(default, deserialize_with = "headers")]
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            http2: true,
            headers: BTreeMap::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// exporter-toolkit's `extraHTTPHeaders`: the headers that may be set and,
/// where the values form an enumeration, the allowed values.
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

fn headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let headers = BTreeMap::<String, String>::deserialize(d)?;
    for (name, value) in &headers {
        let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| n == name) else {
            return Err(de::Error::custom(format!(
                "HTTP header {name:?} can not be configured"
            )));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(de::Error::custom(format!(
                "invalid value for {name}. Expected one of: {allowed:?}, but got: {value:?}"
            )));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(de::Error::custom(format!(
                "invalid value for {name}: not a valid header value"
            )));
        }
    }
    Ok(headers)
}

/// A bcrypt hash, checked when the config is read (as exporter-toolkit's
/// `validateUsers` does with `bcrypt.Cost`).
#[derive(Clone, PartialEq, Eq)]
pub struct BcryptHash(pub String);

impl fmt::Debug for BcryptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl<'de> Deserialize<'de> for BcryptHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hash = String::deserialize(d)?;
        let versioned = ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p));
        if !versioned || hash.parse::<bcrypt::HashParts>().is_err() {
            // Never echo the value: it is a secret.
            return Err(de::Error::custom(
                "not a bcrypt hash ($2a$, $2b$ or $2y$, e.g. from `htpasswd -nBC 10 USER`)",
            ));
        }
        Ok(BcryptHash(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        crate::yaml::from_str(text).map_err(|e| e.message)
    }

    const HASH: &str = "$2y$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96";

    #[test]
    fn defaults_match_exporter_toolkit() {
        let web = parse("tls_server_config: {cert_file: c, key_file: k}").unwrap();
        let tls = web.tls_server_config.clone().unwrap();
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(tls.max_version, TlsVersion::Tls13);
        assert_eq!(tls.client_auth_type, ClientAuthType::NoClientCert);
        assert!(web.http_server_config.http2);
        assert!(!web.auth_enabled());
    }

    #[test]
    fn hashes_are_checked_and_never_shown() {
        let web = parse(&format!("basic_auth_users: {{alice: '{HASH}'}}")).unwrap();
        assert!(web.auth_enabled());
        assert!(!format!("{web:?}").contains("$2y$"));
        let err = parse("basic_auth_users: {alice: hunter2}").unwrap_err();
        assert!(err.contains("not a bcrypt hash"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn what_rustls_cannot_do_is_refused() {
        for (text, want) in [
            (
                "{cert_file: c, key_file: k, min_version: TLS10}",
                "TLS10 is not supported",
            ),
            (
                "{cert_file: c, key_file: k, client_auth_type: RequireAnyClientCert}",
                "not supported",
            ),
            (
                "{cert_file: c, key_file: k, client_auth_type: Nope}",
                "invalid ClientAuth: Nope",
            ),
            (
                "{cert_file: c, key_file: k, cipher_suites: [TLS_AES_128_GCM_SHA256]}",
                "not supported",
            ),
            ("{cert: c, key_file: k}", "not supported"),
        ] {
            let err = parse(&format!("tls_server_config: {text}")).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn headers_follow_exporter_toolkits_list() {
        let web = parse("http_server_config: {headers: {X-Frame-Options: deny}}").unwrap();
        assert_eq!(web.http_server_config.headers["X-Frame-Options"], "deny");
        let err = parse("http_server_config: {headers: {X-Frame-Options: allow}}").unwrap_err();
        assert!(err.contains("Expected one of"), "{err}");
        let err = parse("http_server_config: {headers: {Server: x}}").unwrap_err();
        assert!(err.contains("can not be configured"), "{err}");
    }

    #[test]
    fn paths_resolve_against_the_config_directory() {
        let mut web = parse(
            "{tls_server_config: {cert_file: c.pem, key_file: /k.pem}, bearer_tokens_file: t}",
        )
        .unwrap();
        web.set_directory("/etc/sdbridge");
        let tls = web.tls_server_config.clone().unwrap();
        assert_eq!(tls.cert_file, "/etc/sdbridge/c.pem");
        assert_eq!(tls.key_file, "/k.pem");
        assert_eq!(tls.client_ca_file, "");
        assert_eq!(web.bearer_tokens_file.as_deref(), Some("/etc/sdbridge/t"));
    }
}
