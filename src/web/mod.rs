//! The `web:` block (CONTRACT section 3): TLS, basic auth, bearer tokens
//! and extra response headers, with exporter-toolkit's schema and
//! behaviour.
//!
//! - [`config`]: the YAML schema and its validation.
//! - [`auth`]: who may ask.
//! - [`tls`]: the listener's rustls configuration.
//! - [`watched`]: token, certificate and key files re-read when they change.
//!
//! A [`Web`] is built at start and on every reload and swapped in whole;
//! connections and requests read the current one.

pub mod auth;
pub mod config;
pub mod tls;
pub mod watched;

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use tokio::sync::Semaphore;

pub use self::config::WebConfig;

/// Paths answered without credentials: they reveal nothing, and
/// orchestrators probe them (CONTRACT section 3).
pub fn is_open_path(path: &str) -> bool {
    path == "/-/healthy" || path == "/-/ready"
}

/// The web settings in force.
#[derive(Debug, Default)]
pub struct Web {
    /// Required credentials; `None`: anyone may ask.
    pub auth: Option<auth::Auth>,
    /// The listener's TLS; `None`: plain HTTP. Fixed at start.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Offer HTTP/2.
    pub http2: bool,
    /// Added to every answer.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Web {
    /// Builds the settings, reading the token, certificate, key and CA
    /// files; an error names the setting or file.
    pub fn new(config: &WebConfig, bcrypt: Arc<Semaphore>) -> Result<Web, String> {
        let http2 = config.http_server_config.http2;
        let tls = config
            .tls_server_config
            .as_ref()
            .map(|tls| tls::server_config(tls, http2))
            .transpose()?;
        let mut headers = Vec::new();
        for (name, value) in &config.http_server_config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("http_server_config.headers: {name}: {e}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| format!("http_server_config.headers: {name}: {e}"))?;
            headers.push((name, value));
        }
        Ok(Web {
            auth: auth::Auth::new(config, bcrypt)?,
            tls,
            http2,
            headers,
        })
    }

    /// Plain HTTP, no credentials: what serving without `web:` means.
    pub fn open() -> Web {
        Web {
            http2: true,
            ..Web::default()
        }
    }

    /// Takes `old`'s listener mode: TLS is switched on or off only by a
    /// restart, like `listen`. Says whether the new config wanted another.
    pub fn keep_mode_of(&mut self, old: &Web) -> bool {
        match (&old.tls, self.tls.is_some()) {
            (Some(old_tls), false) => {
                self.tls = Some(old_tls.clone());
                false
            }
            (None, true) => {
                self.tls = None;
                false
            }
            _ => true,
        }
    }
}
