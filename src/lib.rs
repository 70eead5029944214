//! sdbridge: serves the places fleets keep their scrape targets (file_sd
//! directories, static lists, a Consul catalog) as one Prometheus HTTP SD
//! endpoint.
//!
//! # Layout
//!
//! - [`config`]: the YAML config, strict, errors with `file:line:col`.
//! - [`source`]: one tokio task per source ([`source::file`],
//!   [`source::static`], [`source::consul`]), each sending full-replacement
//!   [`source::Update`]s whose parts it has serialized once, job-free
//!   ([`targetgroup::Fragment`]).
//! - [`merge`]: the one task owning all parts; splices job names into the
//!   changed jobs' bodies (no JSON work) and publishes a
//!   [`snapshot::Snapshot`] through `ArcSwap`.
//! - [`snapshot`]: pre-serialized, pre-gzipped bodies with ETags.
//! - [`http`]: hyper handlers answering from the snapshot: one load, no
//!   lock, no JSON work, no body copy.
//! - [`status`]: the HTML status page; [`metrics`]: `/metrics`.
//! - [`daemon`]: wiring for `serve` and `dump`; [`cli`]: the commands.
//! - [`targetgroup`], [`duration`], [`gopath`], [`yaml`]: Prometheus's
//!   data model and Go's path rules, ported where exact parity matters.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod gopath;
pub mod http;
pub mod http_client;
pub mod merge;
pub mod metrics;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod targetgroup;
pub mod yaml;
