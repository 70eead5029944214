//! `GET /`: a small HTML status page for people.

use std::fmt::Write;
use std::time::SystemTime;

use crate::snapshot::{Snapshot, SourceStatus};

/// HTML-escapes text and attribute values.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `t` as "<n>s ago", or "never".
pub(crate) fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) => format!("{}s ago", d.as_secs()),
        None => "never".to_string(),
    }
}

/// A source's state for people, and its CSS class.
pub(crate) fn state(source: &SourceStatus) -> (&'static str, &'static str) {
    match (&source.problem, source.synced) {
        (_, false) => ("bad", "syncing"),
        (Some(_), true) => ("bad", "error (serving last good)"),
        (None, true) => ("ok", "synced"),
    }
}

/// Renders the status page for `snapshot`.
pub fn page(snapshot: &Snapshot) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sdbridge</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
         .bad{color:#b00}.ok{color:#070}pre{margin:0;white-space:pre-wrap}</style></head><body>\
         <h1>sdbridge</h1><p><a href=\"/http_sd\">/http_sd</a> (all jobs) · \
         <a href=\"/metrics\">/metrics</a> · <a href=\"/-/ready\">/-/ready</a></p>\
         <table><tr><th>job</th><th>source</th><th>state</th><th>last success</th>\
         <th>groups</th><th>targets</th><th>last error</th></tr>",
    );
    for job in &snapshot.jobs {
        let encoded = escape(
            &percent_encoding::utf8_percent_encode(&job.name, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
        let link = format!(
            "<a href=\"/http_sd/{encoded}\">{}</a><br><small><a href=\"/targets/{encoded}\">targets</a></small>",
            escape(&job.name)
        );
        let link = if job.from_state {
            format!(
                "{link}<br><small class=\"bad\">served from state_dir (body built {}) until every source has synced</small>",
                ago(Some(job.rendered.last_modified))
            )
        } else {
            link
        };
        if job.sources.is_empty() {
            let _ = write!(
                html,
                "<tr><td>{link}</td><td>(no sources)</td><td class=\"ok\">synced</td><td></td><td>0</td><td>0</td><td></td></tr>"
            );
        }
        for source in &job.sources {
            let (class, state) = state(source);
            let state = match &source.waiting {
                Some(what) => format!("{state}<br><small>waiting: {}</small>", escape(what)),
                None => state.to_string(),
            };
            let _ = write!(
                html,
                "<tr><td>{link}</td><td>{}<br><small>{}</small></td><td class=\"{class}\">{state}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                escape(&source.name),
                escape(&source.description),
                ago(source.last_success),
                source.groups,
                source.targets,
                escape(source.problem.as_deref().unwrap_or("")),
            );
        }
    }
    html.push_str("</table></body></html>\n");
    html
}
