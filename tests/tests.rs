//! Integration tests: the real `sdbridge` binary, real files, real
//! Prometheus and VictoriaMetrics where installed.

#[macro_use]
mod macros;
mod util;

mod cli;
mod consul;
mod e2e;
mod e2e_consul;
mod fake_consul;
mod file_sd;
mod http;
mod http_sd;
mod reload;
