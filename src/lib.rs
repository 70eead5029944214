//! sdbridge: serves the places fleets keep their scrape targets (static
//! lists, file_sd directories, a Consul catalog, DNS names, inventory
//! databases, other HTTP SD servers) as one Prometheus HTTP SD endpoint.
//!
//! # Layout
//!
//! Data flows one way: [`config`] → [`source`] → [`merge`] →
//! [`snapshot`] → [`http`]; the vocabulary they share lives in leaves
//! ([`pipeline`], [`targetgroup`], [`config::refuse`]).
//!
//! - [`config`]: the YAML config, strict, errors with `file:line:col`
//!   (`job`: a job's blocks; `refuse`: the refusal types every config
//!   module uses).
//! - [`source`]: where targets come from. [`source::registry`] lists the
//!   kinds, in serving order: [`source::static`], [`source::file`]
//!   (`file_sd_configs`), [`source::consul`], [`source::dns`],
//!   [`source::sql`] (`sql_sd_configs`, sdbridge's own), [`source::http_sd`].
//!   Each kind's config implements [`source::Source`]; one tokio task per
//!   configured source, run under [`source::supervise`] (a task that ends
//!   or panics is reported and restarted), sends full-replacement
//!   [`pipeline::Update`]s of parts it has serialized once
//!   ([`targetgroup::Fragment`]). Polling sources share
//!   [`source::refresh`]; Consul's watchers are shared through
//!   [`source::Shared`].
//! - [`pipeline`]: what sources send and the merger receives (`Update`,
//!   `Part`, `Change`, `SlotId`, `Message`, the `Layout` of jobs).
//! - [`http_client`]: what HTTP-speaking sources share: client settings,
//!   the connector, per-server connection slots handed over between
//!   clients, one GET.
//! - [`daemon`]: the [`daemon::Runtime`] of running sources, kept across
//!   reloads (unchanged sources keep running), the layouts it gives the
//!   merger, `serve` and `dump`.
//! - [`merge`]: the one merger (a thread of its own, [`fatal`] if it
//!   dies) owning all parts; it chains the changed jobs' fragments into
//!   bodies (no JSON work, no copy) and publishes a [`snapshot::Snapshot`]
//!   through `ArcSwap`; one gzip thread follows.
//! - [`snapshot`]: pre-serialized, pre-gzipped bodies with ETags, held as
//!   a [`chain::Chain`] of their parts' bytes, and the shards cut from
//!   them; [`gzip`]: their gzip, made of each chunk's deflate segment;
//!   [`shard`]: `?shard=I&of=N` (hashmod or jump), the cut itself.
//! - [`http`]: hyper handlers answering from the snapshot (one load, no
//!   lock, no JSON work, no body copy; work proportional to a body on the
//!   blocking pool), and the server: connection limits, idle and
//!   probe-only connections.
//! - [`web`]: the `web:` block: TLS (certificates re-read when they
//!   change), basic auth with cached, bounded bcrypt checks, bearer tokens.
//! - [`state`]: `state_dir`, each job's last good body on disk (written
//!   atomically by a thread of its own, coalesced), served at start until
//!   the job's sources sync.
//! - [`status`]: the HTML status page; [`targets_page`]: one job's
//!   targets, filtered and paginated on the server; [`metrics`]: `/metrics`.
//! - [`relabel`]: Prometheus's `relabel_configs` (rules, Go's RE2
//!   regexes on the `regex` crate, `process` on one target's labels).
//! - [`cli`]: the commands, their shell completions and man page (made
//!   from the same clap definitions); [`version`]: the build's version and
//!   commit; [`migrate`]: `sdbridge migrate`, which edits a scrape
//!   config's text (comments kept) and checks the edit by parsing it back.
//! - [`fatal`]: the threads whose death ends the process.
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
pub mod pipeline;
pub mod relabel;
pub mod shard;
pub mod size;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod status;
pub mod targetgroup;
pub mod targets_page;
pub mod version;
pub mod web;
pub mod yaml;
