//! `dns_sd_configs` entries: Prometheus's `discovery/dns` `SDConfig`, its
//! field names, defaults and messages, and sdbridge's `nameservers`.
//!
//! Three departures, all refusing what Prometheus would take and then
//! misuse: `refresh_interval: 0s` (Prometheus panics), a `port` outside
//! 0..=65535 (Prometheus builds `host:-1`), and `type: NS`, which
//! Prometheus 2.42 refuses and 2.49 and later accept, is accepted as the
//! later versions do.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::{Positive, PromDuration};
use crate::yaml;

/// Default `refresh_interval`, as in Prometheus.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// The record type a block asks for (`type`, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// `SRV` (the default): target and port from each record.
    Srv,
    /// `A`: each IPv4 address with `port`.
    A,
    /// `AAAA`: each IPv6 address, in brackets, with `port`.
    Aaaa,
    /// `MX`: each mail exchange with `port`.
    Mx,
    /// `NS`: each name server with `port` (Prometheus 2.49 and later).
    Ns,
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::Srv => "SRV",
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
            RecordKind::Mx => "MX",
            RecordKind::Ns => "NS",
        })
    }
}

/// The raw entry, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsSdConfig {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default = "default_refresh")]
    refresh_interval: Positive,
    #[serde(default = "default_type", rename = "type")]
    record_type: String,
    #[serde(default, deserialize_with = "deserialize_port")]
    port: u16,
    #[serde(default, deserialize_with = "deserialize_nameservers")]
    nameservers: Option<Vec<SocketAddr>>,
}

fn default_refresh() -> Positive {
    Positive(PromDuration(DEFAULT_REFRESH))
}

fn default_type() -> String {
    "SRV".to_string()
}

/// Go's `int`, refused where it is written (inside the visitor, so the
/// error has the value's position) when it cannot be a port.
fn deserialize_port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    struct Port;

    impl serde::de::Visitor<'_> for Port {
        type Value = u16;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a port number")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u16, E> {
            u16::try_from(v)
                .map_err(|_| E::custom(format!("port must be between 0 and 65535, got {v}")))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u16, E> {
            u16::try_from(v)
                .map_err(|_| E::custom(format!("port must be between 0 and 65535, got {v}")))
        }
    }

    d.deserialize_i64(Port)
}

/// `nameservers`: each `IP:PORT`, checked where it is written.
fn deserialize_nameservers<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<SocketAddr>>, D::Error> {
    /// One checked entry, so an error points at the entry itself.
    struct Checked(SocketAddr);

    impl<'de> Deserialize<'de> for Checked {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            yaml::parse_str(d, |s| {
                s.parse().map(Checked).map_err(|_| {
                    format!("{s:?} is not IP:PORT (an IPv6 address in brackets: [::1]:53)")
                })
            })
        }
    }

    let servers = Vec::<Checked>::deserialize(d)?;
    if servers.is_empty() {
        return Err(serde::de::Error::custom(
            "nameservers must not be empty (leave it out to use /etc/resolv.conf)",
        ));
    }
    Ok(Some(servers.into_iter().map(|c| c.0).collect()))
}

/// One `dns_sd_configs` entry, validated as Prometheus validates it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawDnsSdConfig")]
pub struct DnsSdConfig {
    /// The names looked up, each one group (or more) in this order.
    pub names: Vec<String>,
    /// How often every name is looked up again; default `30s`.
    pub refresh_interval: PromDuration,
    /// The record type asked for.
    pub record_type: RecordKind,
    /// The port of A, AAAA, MX and NS targets (required for them); SRV
    /// records carry their own.
    pub port: u16,
    /// sdbridge's: the servers asked instead of `/etc/resolv.conf`'s, in
    /// order (a Consul agent's DNS on `:8600`, say). `None`: the system's.
    pub nameservers: Option<Vec<SocketAddr>>,
}

impl TryFrom<RawDnsSdConfig> for DnsSdConfig {
    type Error = String;

    fn try_from(raw: RawDnsSdConfig) -> Result<Self, String> {
        if raw.names.is_empty() {
            return Err("DNS-SD config must contain at least one SRV record name".to_string());
        }
        let record_type = match raw.record_type.to_uppercase().as_str() {
            "SRV" => RecordKind::Srv,
            "A" => RecordKind::A,
            "AAAA" => RecordKind::Aaaa,
            "MX" => RecordKind::Mx,
            "NS" => RecordKind::Ns,
            _ => return Err(format!("invalid DNS-SD records type {}", raw.record_type)),
        };
        if record_type != RecordKind::Srv && raw.port == 0 {
            return Err(
                "a port is required in DNS-SD configs for all record types except SRV".to_string(),
            );
        }
        Ok(DnsSdConfig {
            names: raw.names,
            refresh_interval: raw.refresh_interval.0,
            record_type,
            port: raw.port,
            nameservers: raw.nameservers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn parse(block: &str) -> Result<DnsSdConfig, String> {
        let text = format!("jobs:\n  - job_name: a\n    dns_sd_configs:\n{block}");
        Config::parse(&text, Path::new("/etc/sdbridge/sdbridge.yml"))
            .map(|mut c| c.jobs.remove(0).dns_sd_configs.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_prometheus_s() {
        let c = parse("      - names: [_mysqld._tcp.db.example.internal]\n").unwrap();
        assert_eq!(c.names, ["_mysqld._tcp.db.example.internal"]);
        assert_eq!(c.record_type, RecordKind::Srv);
        assert_eq!(c.refresh_interval.0, DEFAULT_REFRESH);
        assert_eq!((c.port, c.nameservers), (0, None));
        let c = parse(
            "      - {names: [a, b], type: aaaa, port: 9100, refresh_interval: 1m, nameservers: ['127.0.0.1:8600', '[::1]:53']}\n",
        )
        .unwrap();
        assert_eq!((c.record_type, c.port), (RecordKind::Aaaa, 9100));
        assert_eq!(c.refresh_interval.0, Duration::from_secs(60));
        let servers: Vec<String> = c
            .nameservers
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(servers, ["127.0.0.1:8600", "[::1]:53"]);
        for t in ["A", "MX", "NS", "Srv"] {
            assert!(parse(&format!("      - {{names: [a], type: {t}, port: 1}}\n")).is_ok());
        }
    }

    #[test]
    fn errors_are_prometheus_s_at_their_place() {
        let cases = [
            (
                "      - names: []\n",
                ":4:9: jobs[0].dns_sd_configs[0]: DNS-SD config must contain at least one SRV record name",
            ),
            (
                "      - {refresh_interval: 1m}\n",
                "DNS-SD config must contain at least one SRV record name",
            ),
            (
                "      - {names: [a], type: TXT}\n",
                ":4:9: jobs[0].dns_sd_configs[0]: invalid DNS-SD records type TXT",
            ),
            (
                "      - {names: [a], type: A}\n",
                "a port is required in DNS-SD configs for all record types except SRV",
            ),
            (
                "      - {names: [a], type: MX, port: 0}\n",
                "a port is required in DNS-SD configs for all record types except SRV",
            ),
            (
                "      - {names: [a], port: 70000}\n",
                ":4:28: jobs[0].dns_sd_configs[0].port: port must be between 0 and 65535, got 70000",
            ),
            (
                "      - {names: [a], refresh_interval: 0s}\n",
                ":4:40: jobs[0].dns_sd_configs[0].refresh_interval: must be greater than 0",
            ),
            (
                "      - {names: [a], nameservers: ['127.0.0.1:8600', consul:8600]}\n",
                ":4:54: jobs[0].dns_sd_configs[0].nameservers[1]: \"consul:8600\" is not IP:PORT",
            ),
            (
                "      - {names: [a], nameservers: ['127.0.0.1']}\n",
                "\"127.0.0.1\" is not IP:PORT",
            ),
            (
                "      - {names: [a], nameservers: []}\n",
                "nameservers must not be empty",
            ),
            (
                "      - {names: [a], server: x}\n",
                "jobs[0].dns_sd_configs[0]: unknown field `server`",
            ),
        ];
        for (block, want) in cases {
            let err = parse(block).unwrap_err();
            assert!(
                err.contains(want),
                "block:\n{block}want: {want}\ngot:  {err}"
            );
        }
    }
}
