//! The file_sd parser on a .yml file: `parse_file`, what the file_sd
//! source and `sdbridge check` run on a file's bytes. A file that parses
//! must serve groups that parse back the same.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sdbridge::source::file::parse::parse_file;
use sdbridge::source::file::FILEPATH_LABEL;

const PATH: &str = "/sd/fuzz.yml";

fuzz_target!(|data: &[u8]| {
    common::tolerate_parser_panics();
    match parse_file(PATH, data) {
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(PATH), "{message}");
        }
        Ok(groups) => {
            for g in &groups {
                assert_eq!(
                    g.labels.0.get(FILEPATH_LABEL).map(String::as_str),
                    Some(PATH)
                );
            }
            common::assert_round_trip(&groups);
        }
    }
});
