//! sdbridge: serves the places fleets keep their scrape targets (file_sd
//! directories, static lists, a Consul catalog) as one Prometheus HTTP SD
//! endpoint.
//!
//! # Layout
//!
//! - [`config`]: the YAML config, strict, errors with `file:line:col`.
//! - [`source`]: where targets come from. Each kind implements
//!   [`source::Source`] in its own module ([`source::static`],
//!   [`source::file`], [`source::consul`], [`source::http_sd`]); one tokio
//!   task per configured source, run under [`source::supervise`] (a task
//!   that ends or panics is reported and restarted), sends
//!   full-replacement [`source::Update`]s of parts it has serialized once
//!   ([`targetgroup::Fragment`]: with the job's name, or job-free for
//!   Consul's watcher, which jobs share). Polling sources share
//!   [`source::refresh`].
//! - [`http_client`]: what HTTP-speaking sources share: client settings,
//!   the connector, per-server connection slots, one GET.
//! - [`daemon`]: the [`daemon::Runtime`] of running sources, kept across
//!   reloads (unchanged sources keep running), `serve` and `dump`.
//! - [`merge`]: the one merger (a thread of its own) owning all parts;
//!   reconfigured by a [`merge::Layout`], it chains the changed jobs'
//!   fragments into bodies (no JSON work, no copy) and publishes a
//!   [`snapshot::Snapshot`] through `ArcSwap`; one gzip thread follows.
//! - [`snapshot`]: pre-serialized, pre-gzipped bodies with ETags, held as
//!   a [`chain::Chain`] of their parts' bytes; [`gzip`]: their gzip, made
//!   of each part's own deflate segment, so a change deflates one part;
//!   [`shard`]: their `?shard=I&of=N` cuts, built once per body and modulus.
//! - [`http`]: hyper handlers answering from the snapshot: one load, no
//!   lock, no JSON work, no body copy.
//! - [`web`]: the `web:` block: TLS (certificates re-read when they
//!   change), basic auth with cached bcrypt checks, bearer tokens.
//! - [`state`]: `state_dir`, each job's last good body on disk (written
//!   atomically by a thread of its own, coalesced), served at start until
//!   the job's sources sync.
//! - [`status`]: the HTML status page; [`targets_page`]: one job's
//!   targets, filtered and paginated on the server; [`metrics`]: `/metrics`.
//! - [`relabel`]: Prometheus's `relabel_configs` (rules, Go's RE2
//!   regexes on the `regex` crate, `process` on one target's labels).
//! - [`cli`]: the commands; [`migrate`]: `sdbridge migrate`, which edits
//!   a scrape config's text (comments kept) and checks the edit by parsing
//!   it back.
//! - [`targetgroup`], [`duration`], [`gopath`], [`yaml`]: Prometheus's
//!   data model and Go's path rules, ported where exact parity matters;
//!   [`backoff`]: backoff with jitter and the clamp on server-given delays;
//!   [`size`]: Prometheus's size syntax (`limits.max_input_size`).

pub mod backoff;
pub mod chain;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod fatal;
pub mod gopath;
pub mod gzip;
pub mod http;
pub mod http_client;
pub mod merge;
pub mod metrics;
pub mod migrate;
pub mod relabel;
pub mod shard;
pub mod size;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod status;
pub mod targetgroup;
pub mod targets_page;
pub mod web;
pub mod yaml;
