//! The HTTP client settings every HTTP-speaking source shares: Prometheus's
//! `prometheus/common/config` HTTP client config (`tls_config`,
//! `basic_auth`, `authorization`), with its field names and messages.
//!
//! serde's `flatten` does not work with `deny_unknown_fields`, so sources
//! do not flatten a shared struct: each source's raw config names these
//! fields itself (as typed fields of these types), which keeps unknown keys
//! an error with their line and column.

use std::fmt;

use serde::de::Deserializer;
use serde::Deserialize;

use crate::config::refuse::NotSupported;
use crate::yaml;

/// A secret string: compared and hashed by value (identical settings share
/// a watcher) but never printed.
#[derive(Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<secret>"
        })
    }
}

/// `http` or `https`, the scheme used to reach Consul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP (Prometheus's default).
    Http,
    /// HTTP over TLS, configured by `tls_config`.
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Result<Scheme, String> {
        match text {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            other => Err(format!(
                "unsupported scheme {other:?}: must be \"http\" or \"https\""
            )),
        }
    }

    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl<'de> Deserialize<'de> for Scheme {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        yaml::parse_str(d, Scheme::parse)
    }
}

/// Prometheus's `tls_config`, the parts sdbridge supports.
// `NotSupported` fields are rejected while parsing and never hold a value.
#[allow(dead_code)]
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Inline PEM CA bundle; when set (or `ca_file`), only these CAs are
    /// trusted, as in Go.
    #[serde(default)]
    pub ca: String,
    /// PEM CA bundle file (relative to the config's directory).
    #[serde(default)]
    pub ca_file: String,
    /// Inline PEM client certificate, for mutual TLS.
    #[serde(default)]
    pub cert: String,
    /// Client certificate file.
    #[serde(default)]
    pub cert_file: String,
    /// Inline PEM client key.
    #[serde(default)]
    pub key: Secret,
    /// Client key file.
    #[serde(default)]
    pub key_file: String,
    /// Name the server certificate must be valid for, when it differs from
    /// the host in `server` (also sent as SNI).
    #[serde(default)]
    pub server_name: String,
    /// Skip certificate verification (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default)]
    pub(crate) ca_ref: Option<NotSupported>,
    #[serde(default)]
    pub(crate) cert_ref: Option<NotSupported>,
    #[serde(default)]
    pub(crate) key_ref: Option<NotSupported>,
    #[serde(default)]
    pub(crate) min_version: Option<NotSupported>,
    #[serde(default)]
    pub(crate) max_version: Option<NotSupported>,
}

impl TlsConfig {
    /// `TLSConfig.Validate` from prometheus/common, same messages.
    pub fn validate(&self) -> Result<(), String> {
        if !self.ca.is_empty() && !self.ca_file.is_empty() {
            return Err("at most one of ca, ca_file & ca_ref must be configured".into());
        }
        if !self.cert.is_empty() && !self.cert_file.is_empty() {
            return Err("at most one of cert, cert_file & cert_ref must be configured".into());
        }
        if !self.key.0.is_empty() && !self.key_file.is_empty() {
            return Err("at most one of key and key_file must be configured".into());
        }
        let cert = !self.cert.is_empty() || !self.cert_file.is_empty();
        let key = !self.key.0.is_empty() || !self.key_file.is_empty();
        if cert && !key {
            return Err(
                "exactly one of key or key_file must be configured when a client certificate is configured"
                    .into(),
            );
        }
        if key && !cert {
            return Err(
                "exactly one of cert or cert_file must be configured when a client key is configured"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Prometheus's `basic_auth`.
// `NotSupported` fields are rejected while parsing and never hold a value.
#[allow(dead_code)]
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// File holding the user name (read, trimmed, on every request).
    #[serde(default)]
    pub username_file: String,
    /// Password.
    #[serde(default)]
    pub password: Secret,
    /// File holding the password (read, trimmed, on every request, so it
    /// can be rotated without a reload).
    #[serde(default)]
    pub password_file: String,
    #[serde(default)]
    pub(crate) username_ref: Option<NotSupported>,
    #[serde(default)]
    pub(crate) password_ref: Option<NotSupported>,
}

/// Prometheus's `authorization`: an `Authorization: <type> <credentials>`
/// header.
// `NotSupported` fields are rejected while parsing and never hold a value.
#[allow(dead_code)]
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme; default `Bearer` (filled in by validation).
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The credentials.
    #[serde(default)]
    pub credentials: Secret,
    /// File holding the credentials (read, trimmed, on every request).
    #[serde(default)]
    pub credentials_file: String,
    #[serde(default)]
    pub(crate) credentials_ref: Option<NotSupported>,
}

/// prometheus/common's `HTTPClientConfig.Validate` for the auth fields, with
/// its messages: at most one of `basic_auth`, `authorization` and the
/// deprecated `bearer_token[_file]` (which become an `authorization` of
/// type `Bearer`); an `authorization` type defaults to `Bearer`.
pub fn validate_auth(
    basic_auth: Option<BasicAuth>,
    authorization_in: Option<Authorization>,
    bearer_token: Secret,
    bearer_token_file: String,
) -> Result<(Option<BasicAuth>, Option<Authorization>), String> {
    let bearer = !bearer_token.0.is_empty();
    let bearer_file = !bearer_token_file.is_empty();
    if bearer && bearer_file {
        return Err("at most one of bearer_token & bearer_token_file must be configured".into());
    }
    if basic_auth.is_some() && (bearer || bearer_file) {
        return Err("at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured".into());
    }
    if let Some(b) = &basic_auth {
        if !b.username.is_empty() && !b.username_file.is_empty() {
            return Err("at most one of basic_auth username, username_file & username_ref must be configured".into());
        }
        if !b.password.0.is_empty() && !b.password_file.is_empty() {
            return Err("at most one of basic_auth password, password_file & password_ref must be configured".into());
        }
    }
    let mut authorization = authorization_in;
    if let Some(a) = &mut authorization {
        if bearer || bearer_file {
            return Err(
                "authorization is not compatible with bearer_token & bearer_token_file".into(),
            );
        }
        if !a.credentials.0.is_empty() && !a.credentials_file.is_empty() {
            return Err(
                "at most one of authorization credentials & credentials_file must be configured"
                    .into(),
            );
        }
        a.kind = a.kind.trim().to_string();
        if a.kind.is_empty() {
            a.kind = "Bearer".to_string();
        }
        if a.kind.eq_ignore_ascii_case("basic") {
            return Err(
                r#"authorization type cannot be set to "basic", use "basic_auth" instead"#.into(),
            );
        }
        if basic_auth.is_some() {
            return Err(
                "at most one of basic_auth, oauth2 & authorization must be configured".into(),
            );
        }
    } else if bearer || bearer_file {
        authorization = Some(Authorization {
            kind: "Bearer".to_string(),
            credentials: bearer_token,
            credentials_file: bearer_token_file,
            credentials_ref: None,
        });
    }
    Ok((basic_auth, authorization))
}

/// Joins the file paths of the client settings to `base_dir`, as
/// Prometheus's `SetDirectory` does.
pub fn set_directory(
    base_dir: &str,
    tls: &mut TlsConfig,
    basic_auth: Option<&mut BasicAuth>,
    authorization: Option<&mut Authorization>,
) {
    let join = |p: &mut String| *p = crate::gopath::join_dir(base_dir, p);
    join(&mut tls.ca_file);
    join(&mut tls.cert_file);
    join(&mut tls.key_file);
    if let Some(b) = basic_auth {
        join(&mut b.username_file);
        join(&mut b.password_file);
    }
    if let Some(a) = authorization {
        join(&mut a.credentials_file);
    }
}
