//! The config loader: `Config::parse`, what `sdbridge check`, `serve` and
//! `dump` run on the config file's text, then the layout `serve` builds.
#![no_main]

mod common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sdbridge::config::Config;
use sdbridge::daemon::sequential_layout;

const PATH: &str = "/etc/sdbridge/sdbridge.yml";

fuzz_target!(|data: &[u8]| {
    common::tolerate_parser_panics();
    // `Config::load` reads the file with `read_to_string`: text that is not
    // UTF-8 never reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new(PATH)) {
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(PATH), "{message}");
        }
        Ok(config) => {
            for (i, job) in config.jobs.iter().enumerate() {
                assert!(!job.job_name.is_empty());
                assert!(config.jobs[..i].iter().all(|j| j.job_name != job.job_name));
                for file_sd in &job.file_sd_configs {
                    for pattern in &file_sd.files {
                        assert!(pattern.starts_with('/'), "{pattern:?} not resolved");
                    }
                }
                common::assert_round_trip(&job.static_configs);
            }
            let layout = sequential_layout(&config);
            assert_eq!(layout.jobs.len(), config.jobs.len());
        }
    }
});
