//! Integration tests: the real `sdbridge` binary, real files, real
//! Prometheus and VictoriaMetrics where installed, real MariaDB and
//! PostgreSQL servers for the SQL source.

#[macro_use]
mod macros;
mod util;

mod architecture;
mod cli;
mod connections;
mod consul;
mod consul_filter;
mod dns_sd;
mod dns_util;
mod e2e;
mod e2e_consul;
mod e2e_dns;
mod e2e_migrate;
mod examples;
mod fake_consul;
mod fatal;
mod file_sd;
mod http;
mod http_sd;
mod http_sd_shared;
mod kit;
mod migrate;
mod relabel_promtool;
mod reload;
mod shard;
mod sql;
mod sql_safety;
mod sql_source;
mod sql_util;
mod state;
mod targets_page;
mod tls_util;
mod web;
