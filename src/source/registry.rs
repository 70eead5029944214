//! The one list of source kinds (Prometheus's discovery registry): for
//! each, the key a job's blocks sit under, whether `migrate` moves such
//! blocks out of a scrape config, and how a job's blocks become running
//! sources. Serving order within a job is this list's order (contract
//! section 5). The runtime, `check` (through [`super::sources_of`]),
//! `migrate`'s movable blocks and the docs' list of kinds follow from it.
//!
//! Adding a kind: its module under `source/` (a config struct that
//! implements [`super::Source`]), its field in
//! [`crate::config::JobConfig`] (which gives it Prometheus's field name
//! and strict parsing), and one line here.

use std::sync::Arc;

use super::{r#static::StaticSource, SourceConfig};
use crate::config::JobConfig;

/// One kind of source.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// The key under a job, as Prometheus names it (`file_sd_configs`).
    pub key: &'static str,
    /// Whether `migrate` takes these blocks over from a scrape config:
    /// `sql_sd_configs` is sdbridge's own, and `http_sd_configs` is what
    /// the scrape config points at the bridge with.
    pub movable: bool,
    /// The job's blocks of this kind as sources, in config order.
    pub sources: fn(&JobConfig) -> Vec<SourceConfig>,
}

/// Each entry of a job's list of blocks as a source of its own.
fn each<T: super::Source + PartialEq + Clone>(blocks: &[T]) -> Vec<SourceConfig> {
    blocks
        .iter()
        .map(|b| Arc::new(b.clone()) as SourceConfig)
        .collect()
}

/// Every kind, in serving order.
pub const KINDS: &[Kind] = &[
    // All `static_configs` of a job are one source, as in Prometheus.
    Kind {
        key: "static_configs",
        movable: true,
        sources: |job| {
            if job.static_configs.is_empty() {
                Vec::new()
            } else {
                vec![Arc::new(StaticSource(job.static_configs.clone()))]
            }
        },
    },
    Kind {
        key: "file_sd_configs",
        movable: true,
        sources: |job| each(&job.file_sd_configs),
    },
    Kind {
        key: "consul_sd_configs",
        movable: true,
        sources: |job| each(&job.consul_sd_configs),
    },
    Kind {
        key: "dns_sd_configs",
        movable: true,
        sources: |job| each(&job.dns_sd_configs),
    },
    Kind {
        key: "sql_sd_configs",
        movable: false,
        sources: |job| each(&job.sql_sd_configs),
    },
    Kind {
        key: "http_sd_configs",
        movable: false,
        sources: |job| each(&job.http_sd_configs),
    },
];

/// The keys `migrate` moves, in serving order.
pub fn movable() -> impl Iterator<Item = &'static str> {
    KINDS.iter().filter(|k| k.movable).map(|k| k.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind's key is a job field, its blocks come out in the
    /// registry's order, and the configuration reference lists it.
    #[test]
    fn every_kind_is_a_job_field_and_documented() {
        let docs = include_str!("../../docs/configuration.md");
        for kind in KINDS {
            let text = format!("jobs:\n  - job_name: a\n    {}: []\n", kind.key);
            let parsed = crate::config::Config::parse(&text, std::path::Path::new("/x/s.yml"));
            assert!(parsed.is_ok(), "{}: {:?}", kind.key, parsed.err());
            assert!(
                docs.contains(kind.key),
                "docs/configuration.md: no {}",
                kind.key
            );
        }
        let keys: Vec<&str> = KINDS.iter().map(|k| k.key).collect();
        assert_eq!(
            keys,
            [
                "static_configs",
                "file_sd_configs",
                "consul_sd_configs",
                "dns_sd_configs",
                "sql_sd_configs",
                "http_sd_configs"
            ],
            "the contract's serving order (section 5)"
        );
        assert_eq!(
            movable().collect::<Vec<_>>(),
            [
                "static_configs",
                "file_sd_configs",
                "consul_sd_configs",
                "dns_sd_configs"
            ]
        );
    }
}
