//! `consul_sd_configs` entries: Prometheus's field names, defaults and
//! validation messages (`discovery/consul` and `prometheus/common/config`'s
//! HTTP client config), plus two sdbridge extras (`vm_tag_labels`,
//! `max_connections`).
//!
//! The parsed struct is also the key under which identical Consul settings
//! across jobs share one watcher, hence `Hash + Eq` everywhere.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::Deserializer;
use serde::Deserialize;

use crate::config::refuse::NotSupported;
use crate::duration::PromDuration;
use crate::yaml;

/// Prometheus's default `server`.
pub const DEFAULT_SERVER: &str = "localhost:8500";
/// Default of `max_connections`: a full read of 1,000 services takes about
/// a quarter less time than with 8 (`bench/README.md`), still far below
/// the 200 connections per client address Consul agents allow.
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;
/// Smallest `max_connections`: the two long-lived blocking watches plus one
/// connection for fetching services.
pub const MIN_MAX_CONNECTIONS: usize = 3;

pub use crate::http_client::config::{
    validate_auth, Authorization, BasicAuth, Scheme, Secret, TlsConfig,
};

/// A `server` value checked where it is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Server(String);

impl<'de> Deserialize<'de> for Server {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        yaml::parse_str(d, |s| {
            if s.trim().is_empty() {
                return Err("consul SD configuration requires a server address".to_string());
            }
            if let Some((scheme, _)) = s.split_once("://") {
                match scheme {
                    "http" | "https" => {}
                    "unix" => {
                        return Err("unix socket servers are not supported by sdbridge yet".into())
                    }
                    other => return Err(format!("Unknown protocol scheme: {other}")),
                }
            }
            Ok(Server(s.to_string()))
        })
    }
}

fn default_server() -> Server {
    Server(DEFAULT_SERVER.to_string())
}

/// `max_connections`, checked where it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct MaxConnections(usize);

impl<'de> Deserialize<'de> for MaxConnections {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        yaml::parse_str(d, |s| {
            match s.parse::<usize>() {
            Ok(n) if n >= MIN_MAX_CONNECTIONS => Ok(MaxConnections(n)),
            _ => Err(format!(
                "max_connections must be an integer of at least {MIN_MAX_CONNECTIONS} (two blocking watches plus one request), got {s:?}"
            )),
        }
        })
    }
}

/// The entry as written; validated into [`ConsulSdConfig`].
// `NotSupported` fields are rejected while parsing and never hold a value.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsulSdConfig {
    #[serde(default = "default_server")]
    server: Server,
    #[serde(default)]
    path_prefix: String,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    datacenter: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    partition: String,
    #[serde(default = "default_scheme")]
    scheme: Scheme,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: Secret,
    #[serde(default = "default_true")]
    allow_stale: bool,
    #[serde(default = "default_refresh")]
    refresh_interval: PromDuration,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    node_meta: BTreeMap<String, String>,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    health_filter: String,
    #[serde(default = "default_tag_separator")]
    tag_separator: String,

    // HTTP client settings (prometheus/common `HTTPClientConfig`, inline).
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
    #[serde(default)]
    oauth2: Option<NotSupported>,
    #[serde(default)]
    enable_http2: Option<NotSupported>,
    #[serde(default)]
    proxy_url: Option<NotSupported>,
    #[serde(default)]
    no_proxy: Option<NotSupported>,
    #[serde(default)]
    proxy_from_environment: Option<NotSupported>,
    #[serde(default)]
    proxy_connect_header: Option<NotSupported>,
    #[serde(default)]
    http_headers: Option<NotSupported>,

    // sdbridge extras.
    #[serde(default)]
    vm_tag_labels: bool,
    #[serde(default = "default_max_connections")]
    max_connections: MaxConnections,
}

fn default_scheme() -> Scheme {
    Scheme::Http
}

fn default_true() -> bool {
    true
}

fn default_refresh() -> PromDuration {
    PromDuration(Duration::from_secs(30))
}

fn default_tag_separator() -> String {
    ",".to_string()
}

fn default_max_connections() -> MaxConnections {
    MaxConnections(DEFAULT_MAX_CONNECTIONS)
}

/// One `consul_sd_configs` entry, validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "RawConsulSdConfig")]
pub struct ConsulSdConfig {
    /// `host:port` of the Consul agent or server (a `scheme://` and a path
    /// written in `server` are split off into `scheme` and `path_prefix`,
    /// as Consul's Go client does).
    pub server: String,
    /// Prefix put before `/v1/...`, for Consul behind a reverse proxy.
    pub path_prefix: String,
    /// `http` or `https`.
    pub scheme: Scheme,
    /// ACL token, sent as `X-Consul-Token`. `None`: the Go client's
    /// fallback to `CONSUL_HTTP_TOKEN_FILE`/`CONSUL_HTTP_TOKEN` applies.
    pub token: Option<Secret>,
    /// Sent as `dc=` when set; otherwise the agent's datacenter is looked up
    /// (`/v1/agent/self`) for `__meta_consul_dc` only.
    pub datacenter: String,
    /// Consul Enterprise namespace (`ns=`).
    pub namespace: String,
    /// Consul Enterprise admin partition (`partition=`).
    pub partition: String,
    /// Read from any server, not only the leader (`stale`); default true,
    /// it spreads the load.
    pub allow_stale: bool,
    /// Prometheus's re-query period. sdbridge does not poll on it (changes
    /// arrive through blocking queries); it is kept so configs paste
    /// unchanged and so that it distinguishes watchers. See the module doc
    /// of [`crate::source::consul`].
    pub refresh_interval: PromDuration,
    /// Services to serve (exact names); empty: all services.
    pub services: Vec<String>,
    /// Tags every served instance must have (all of them).
    pub tags: Vec<String>,
    /// Node metadata every node must have (`node-meta=k:v`).
    pub node_meta: BTreeMap<String, String>,
    /// Consul filter expression for the catalog (`/v1/catalog/services`).
    pub filter: String,
    /// Consul filter expression for the health API
    /// (`/v1/health/service/<name>`).
    pub health_filter: String,
    /// Separator around and between tags in `__meta_consul_tags`.
    pub tag_separator: String,
    /// HTTP basic auth (also from the top-level `username`/`password`).
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization` header (also from `bearer_token[_file]`); `kind`
    /// is never empty.
    pub authorization: Option<Authorization>,
    /// TLS settings for `https`.
    pub tls_config: TlsConfig,
    /// Follow HTTP redirects (Prometheus's default: true).
    pub follow_redirects: bool,
    /// sdbridge extra: also emit VictoriaMetrics's
    /// `__meta_consul_tag_<name>` and `__meta_consul_tagpresent_<name>`, so
    /// vmagent relabel rules written for them keep working.
    pub vm_tag_labels: bool,
    /// sdbridge extra: most connections this watcher has open to Consul at
    /// once, counting its two blocking watches. Agents refuse more than 200
    /// per client address (429).
    pub max_connections: usize,
    /// `limits.max_input_size`, set after parsing: the largest answer read.
    pub max_input_size: usize,
}

impl TryFrom<RawConsulSdConfig> for ConsulSdConfig {
    type Error = String;

    fn try_from(raw: RawConsulSdConfig) -> Result<Self, String> {
        // discovery/consul SDConfig.UnmarshalYAML.
        let mut basic_auth = raw.basic_auth;
        if !raw.username.is_empty() || !raw.password.0.is_empty() {
            if basic_auth.is_some() {
                return Err("at most one of consul SD configuration username and password and basic auth can be configured".into());
            }
            basic_auth = Some(BasicAuth {
                username: raw.username,
                password: raw.password,
                ..BasicAuth::default()
            });
        }
        let token = raw.token.filter(|t| !t.0.is_empty());
        if token.is_some() && raw.authorization.is_some() {
            return Err(
                "at most one of consul SD token, authorization, or oauth2 can be configured".into(),
            );
        }
        if token.is_some()
            && raw.authorization.is_none()
            && (!raw.bearer_token.0.is_empty() || !raw.bearer_token_file.is_empty())
        {
            return Err(
                "at most one of consul SD token, authorization, or oauth2 can be configured".into(),
            );
        }
        let (basic_auth, authorization) = validate_auth(
            basic_auth,
            raw.authorization,
            raw.bearer_token,
            raw.bearer_token_file,
        )?;
        raw.tls_config.validate()?;

        // Consul's Go client: "scheme://host:port/prefix" in the address.
        let mut scheme = raw.scheme;
        let mut server = raw.server.0;
        let mut path_prefix = raw.path_prefix;
        if let Some((s, rest)) = server.split_once("://") {
            if s == "https" {
                scheme = Scheme::Https;
            }
            let rest = rest.to_string();
            match rest.split_once('/') {
                Some((host, prefix)) => {
                    path_prefix = format!("/{prefix}");
                    server = host.to_string();
                }
                None => server = rest,
            }
        }
        Ok(ConsulSdConfig {
            server,
            path_prefix,
            scheme,
            token,
            datacenter: raw.datacenter,
            namespace: raw.namespace,
            partition: raw.partition,
            allow_stale: raw.allow_stale,
            refresh_interval: raw.refresh_interval,
            services: raw.services,
            tags: raw.tags,
            node_meta: raw.node_meta,
            filter: raw.filter,
            health_filter: raw.health_filter,
            tag_separator: raw.tag_separator,
            basic_auth,
            authorization,
            tls_config: raw.tls_config,
            follow_redirects: raw.follow_redirects,
            vm_tag_labels: raw.vm_tag_labels,
            max_connections: raw.max_connections.0,
            max_input_size: crate::http_client::DEFAULT_MAX_INPUT,
        })
    }
}

impl ConsulSdConfig {
    /// Resolves relative file paths against `base_dir` (Prometheus's
    /// `SetDirectory`/`JoinDir`).
    pub fn set_directory(&mut self, base_dir: &str) {
        crate::http_client::config::set_directory(
            base_dir,
            &mut self.tls_config,
            self.basic_auth.as_mut(),
            self.authorization.as_mut(),
        );
    }

    /// Short description for the status page and logs (no secrets).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "consul_sd_configs {}://{}{}",
            self.scheme.as_str(),
            self.server,
            self.path_prefix
        );
        if !self.services.is_empty() {
            s.push_str(&format!(" services={}", self.services.join(",")));
        }
        if !self.tags.is_empty() {
            s.push_str(&format!(" tags={}", self.tags.join(",")));
        }
        s
    }

    /// Whether a catalog service with `tags` is served: named in
    /// `services` (or `services` empty) and carrying every `tags` entry
    /// (Prometheus's `shouldWatch`).
    pub fn should_watch(&self, name: &str, tags: &[String]) -> bool {
        (self.services.is_empty() || self.services.iter().any(|s| s == name))
            && self.tags.iter().all(|t| tags.contains(t))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(block: &str) -> Result<ConsulSdConfig, String> {
        let text = format!("jobs:\n  - job_name: a\n    consul_sd_configs:\n{block}");
        Config::parse(&text, Path::new("/etc/sdbridge/sdbridge.yml"))
            .map(|mut c| c.jobs.remove(0).consul_sd_configs.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn prometheus_defaults() {
        let c = parse("      - {}\n").unwrap();
        assert_eq!(c.server, "localhost:8500");
        assert_eq!(c.scheme, Scheme::Http);
        assert_eq!(c.path_prefix, "");
        assert_eq!(c.tag_separator, ",");
        assert!(c.allow_stale);
        assert_eq!(c.refresh_interval.0, Duration::from_secs(30));
        assert!(c.follow_redirects);
        assert!(!c.vm_tag_labels);
        assert_eq!(c.max_connections, 32);
        assert!(c.token.is_none() && c.basic_auth.is_none() && c.authorization.is_none());
    }

    #[test]
    fn full_block_and_path_resolution() {
        let c = parse(
            "      - server: https://127.0.0.1:8501/consul\n        token: t0k\n        datacenter: dc2\n        namespace: ns\n        partition: p\n        services: [mysql, redis]\n        tags: [prod]\n        node_meta: {rack: r1}\n        filter: 'NodeMeta.rack == \"r1\"'\n        health_filter: '\"prod\" in Service.Tags'\n        tag_separator: '|'\n        allow_stale: false\n        refresh_interval: 1m\n        tls_config: {ca_file: ca.pem, cert_file: /abs/c.pem, key_file: k.pem, server_name: consul.local}\n        basic_auth: {username: u, password_file: pw}\n        vm_tag_labels: true\n        max_connections: 3\n",
        )
        .unwrap();
        assert_eq!(c.server, "127.0.0.1:8501");
        assert_eq!(c.scheme, Scheme::Https);
        assert_eq!(c.path_prefix, "/consul");
        assert_eq!(c.token, Some(Secret("t0k".into())));
        assert_eq!(c.services, ["mysql", "redis"]);
        assert_eq!(c.node_meta["rack"], "r1");
        assert!(!c.allow_stale);
        assert_eq!(c.tls_config.ca_file, "/etc/sdbridge/ca.pem");
        assert_eq!(c.tls_config.cert_file, "/abs/c.pem");
        assert_eq!(c.tls_config.key_file, "/etc/sdbridge/k.pem");
        assert_eq!(
            c.basic_auth.as_ref().unwrap().password_file,
            "/etc/sdbridge/pw"
        );
        assert!(c.vm_tag_labels);
        assert_eq!(c.max_connections, 3);
        assert!(!format!("{c:?}").contains("t0k"), "secrets are not printed");
    }

    #[test]
    fn auth_folding() {
        let c = parse("      - {username: u, password: p}\n").unwrap();
        let b = c.basic_auth.unwrap();
        assert_eq!((b.username.as_str(), b.password.0.as_str()), ("u", "p"));
        let c = parse("      - {bearer_token_file: tok}\n").unwrap();
        let a = c.authorization.unwrap();
        assert_eq!(
            (a.kind.as_str(), a.credentials_file.as_str()),
            ("Bearer", "/etc/sdbridge/tok")
        );
        let c = parse("      - authorization: {type: ' Token ', credentials: x}\n").unwrap();
        assert_eq!(c.authorization.unwrap().kind, "Token");
    }

    #[test]
    fn errors_with_positions() {
        let cases = [
            ("      - server: ' '\n", ":4:17: jobs[0].consul_sd_configs[0].server: consul SD configuration requires a server address"),
            ("      - server: ftp://x\n", ":4:17: jobs[0].consul_sd_configs[0].server: Unknown protocol scheme: ftp"),
            ("      - scheme: ftp\n", ":4:17: jobs[0].consul_sd_configs[0].scheme: unsupported scheme \"ftp\""),
            ("      - max_connections: 2\n", ":4:26: jobs[0].consul_sd_configs[0].max_connections: max_connections must be an integer of at least 3"),
            ("      - bogus: 1\n", ":4:9: jobs[0].consul_sd_configs[0]: unknown field `bogus`"),
            ("      - oauth2: {client_id: x}\n", ":4:17: jobs[0].consul_sd_configs[0].oauth2: not supported by sdbridge yet"),
            ("      - proxy_url: http://127.0.0.1:3128\n", "jobs[0].consul_sd_configs[0].proxy_url: not supported by sdbridge yet"),
            ("      - enable_http2: false\n", "jobs[0].consul_sd_configs[0].enable_http2: not supported by sdbridge yet"),
            ("      - tls_config: {min_version: TLS12}\n", "jobs[0].consul_sd_configs[0].tls_config.min_version: not supported by sdbridge yet"),
            ("      - refresh_interval: 5x\n", ":4:27: jobs[0].consul_sd_configs[0].refresh_interval: not a valid duration string"),
            ("      - services: mysql\n", ":4:19: jobs[0].consul_sd_configs[0].services: invalid type"),
            ("      - {username: u, basic_auth: {username: v}}\n", "at most one of consul SD configuration username and password and basic auth can be configured"),
            ("      - {token: t, authorization: {credentials: c}}\n", "at most one of consul SD token, authorization, or oauth2 can be configured"),
            ("      - {bearer_token: a, bearer_token_file: b}\n", "at most one of bearer_token & bearer_token_file must be configured"),
            ("      - {basic_auth: {username: u}, authorization: {credentials: c}}\n", "at most one of basic_auth, oauth2 & authorization must be configured"),
            ("      - {authorization: {type: basic}}\n", "authorization type cannot be set to \"basic\", use \"basic_auth\" instead"),
            ("      - {basic_auth: {password: a, password_file: b}}\n", "at most one of basic_auth password, password_file & password_ref must be configured"),
            ("      - tls_config: {cert_file: c}\n", "exactly one of key or key_file must be configured when a client certificate is configured"),
            ("      - tls_config: {key_file: k}\n", "exactly one of cert or cert_file must be configured when a client key is configured"),
            ("      - tls_config: {ca: x, ca_file: y}\n", "at most one of ca, ca_file & ca_ref must be configured"),
        ];
        for (block, want) in cases {
            let err = parse(block).unwrap_err();
            assert!(
                err.contains(want),
                "block:\n{block}\nwant: {want}\ngot:  {err}"
            );
        }
    }

    #[test]
    fn cross_field_errors_point_into_the_entry() {
        let err = parse("      - token: t\n        authorization: {credentials: c}\n").unwrap_err();
        assert!(err.starts_with("/etc/sdbridge/sdbridge.yml:4:"), "{err}");
    }

    #[test]
    fn should_watch_is_prometheus_shouldwatch() {
        let c = parse("      - {services: [a, b], tags: [x, y]}\n").unwrap();
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(c.should_watch("a", &tags(&["y", "x", "z"])));
        assert!(!c.should_watch("a", &tags(&["x"])));
        assert!(!c.should_watch("A", &tags(&["x", "y"])));
        assert!(!c.should_watch("c", &tags(&["x", "y"])));
        let all = parse("      - {}\n").unwrap();
        assert!(all.should_watch("anything", &[]));
    }
}
