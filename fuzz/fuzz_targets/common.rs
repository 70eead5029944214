//! What the targets share: the check that groups, served as sdbridge
//! serves them, parse back to the same groups.

// Not every target uses every helper.
#![allow(dead_code)]

use sdbridge::merge::render;
use sdbridge::source::file::parse::parse_file;
use sdbridge::source::file::FILEPATH_LABEL;
use sdbridge::source::http_sd::{self, URL_LABEL};
use std::sync::Arc;

use sdbridge::targetgroup::{escape_job, is_valid_label_name, Fragment, TargetGroup, JOB_LABEL};

/// A job name that needs JSON escaping and is not ASCII.
pub const JOB: &str = "fuzz \"job\"\\ 서비스";
/// Where the round-tripped body claims to come from.
const URL: &str = "http://127.0.0.1:9412/http_sd/fuzz";
/// The file the round-tripped body is read back as.
const SERVED_FILE: &str = "/sd/served.json";

/// `groups` with `label` set to `value` on each, as a reader adds it, and
/// the job label the served body carries.
fn expected(groups: &[TargetGroup], label: &str, value: &str) -> Vec<TargetGroup> {
    groups
        .iter()
        .cloned()
        .map(|mut g| {
            g.labels.0.insert(JOB_LABEL.to_string(), JOB.to_string());
            g.labels.0.insert(label.to_string(), value.to_string());
            g
        })
        .collect()
}

/// Serializes `groups` as a source does, renders the body a job serves,
/// and reads it back both as Prometheus's HTTP SD reader and as a file_sd
/// JSON file: both must give the same groups (plus the job label and the
/// reader's own label), and every label name must be valid.
pub fn assert_round_trip(groups: &[TargetGroup]) {
    // Written for the job (most sources) and job-free with the name
    // spliced in (Consul's shared watcher): the same bytes.
    let baked = Arc::new(Fragment::new(groups, JOB));
    let free = Arc::new(Fragment::job_free(groups));
    assert_eq!(baked.groups(), groups.len());
    let job = escape_job(JOB);
    let rendered = render(std::iter::once(&baked), &job, None);
    let spliced = render(std::iter::once(&free), &job, None);
    let body = &rendered.body.to_bytes()[..];
    assert_eq!(
        body,
        &spliced.body.to_bytes()[..],
        "written in or spliced in"
    );
    let back = http_sd::parse(URL, body)
        .unwrap_or_else(|e| panic!("served body does not parse as HTTP SD: {e}: {body:?}"));
    assert_eq!(back, expected(groups, URL_LABEL, URL), "http_sd: {body:?}");
    let back = parse_file(SERVED_FILE, body)
        .unwrap_or_else(|e| panic!("served body does not parse as file_sd: {e}: {body:?}"));
    assert_eq!(
        back,
        expected(groups, FILEPATH_LABEL, SERVED_FILE),
        "file_sd: {body:?}"
    );
    for g in &back {
        for name in g.labels.0.keys() {
            assert!(is_valid_label_name(name), "{name:?}");
        }
    }
}

/// Lets a panic inside libyaml-safer unwind to `yaml::tree::compose`,
/// which turns it into an error, as it does in the daemon; any other panic
/// still aborts (libFuzzer's hook), so it is still a crash. Without this a
/// libyaml-safer panic that the checks before parsing miss (the CI smoke
/// found a tag before a comma after a multi-line plain scalar holding a
/// quote) aborts the run although sdbridge handles it.
pub fn tolerate_parser_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info
                .location()
                .is_some_and(|l| l.file().contains("libyaml-safer"));
            if !in_parser {
                abort(info);
            }
        }));
    });
}
