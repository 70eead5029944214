//! `GET /targets/<job>`: every target of one job with its labels, source,
//! state and last error, in the spirit of Prometheus's Service Discovery
//! page, for people.
//!
//! Server-rendered, no JavaScript: the filter (`?q=`, a case-insensitive
//! substring of the address or of any `name="value"`) and the pages
//! (`?page=`, [`PAGE_SIZE`] targets each) are applied here, so a page
//! carries a bounded number of targets however large the job (vmagent's
//! targets page is reported unusable past 10,000 targets). Every value is
//! HTML-escaped. The job's served body is read on each request, a part at
//! a time (so the page holds one part's groups, not a parsed copy of the
//! body): a parse of the body (about 0.1 s at 100,000 targets), nothing
//! while nobody looks.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Deserialize;

use crate::snapshot::{JobSnapshot, SourceStatus};
use crate::status::{ago, escape, state};

/// Targets shown per page.
pub const PAGE_SIZE: usize = 100;

#[derive(Deserialize)]
struct Group {
    targets: Vec<String>,
    labels: BTreeMap<String, String>,
}

/// What the query string asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The filter text; empty shows everything.
    pub filter: String,
    /// 1-based page number.
    pub page: usize,
}

impl View {
    /// Reads `q` and `page`; anything unreadable falls back to the first
    /// page, unfiltered.
    pub fn from_query(query: Option<&str>) -> View {
        let mut view = View {
            filter: String::new(),
            page: 1,
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "q" => view.filter = value.trim().to_string(),
                "page" => view.page = value.parse().unwrap_or(1).max(1),
                _ => {}
            }
        }
        view
    }

    fn link(&self, job: &str, page: usize) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !self.filter.is_empty() {
            query.append_pair("q", &self.filter);
        }
        query.append_pair("page", &page.to_string());
        format!("/targets/{}?{}", encode(job), query.finish())
    }
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The source each group came from: groups are served in source order and
/// each source knows how many it contributes. `None` while those counts do
/// not add up (a reloaded job serving its previous body).
fn sources_of(job: &JobSnapshot, groups: usize) -> Option<Vec<&SourceStatus>> {
    let counted: usize = job.sources.iter().map(|s| s.groups).sum();
    (counted == groups).then(|| {
        job.sources
            .iter()
            .flat_map(|s| std::iter::repeat_n(s, s.groups))
            .collect()
    })
}

/// Adds `group`'s targets that match `needle` to `rows`, if they fall on
/// the page starting after `first` matches.
fn row(
    rows: &mut String,
    group: &Group,
    source: Option<&SourceStatus>,
    needle: &str,
    first: usize,
    matched: &mut usize,
) {
    let labels: String = group
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(" ");
    let labels_match = labels.to_lowercase().contains(needle);
    for target in &group.targets {
        if !(needle.is_empty() || labels_match || target.to_lowercase().contains(needle)) {
            continue;
        }
        *matched += 1;
        if *matched <= first || *matched > first + PAGE_SIZE {
            continue;
        }
        let (class, state) = source.map_or(("", "—"), state);
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{state}</td><td><pre>{}</pre></td></tr>",
            escape(target),
            group
                .labels
                .iter()
                .map(|(k, v)| format!("<span class=\"l\">{}=\"{}\"</span>", escape(k), escape(v)))
                .collect::<String>(),
            source.map_or(String::new(), |s| format!("{}<br><small>{}</small>", escape(&s.name), escape(&s.description))),
            escape(source.and_then(|s| s.problem.as_deref()).unwrap_or("")),
        );
    }
}

/// Renders the page of `job` that `view` asks for.
pub fn page(job: &JobSnapshot, view: &View) -> String {
    let sources = sources_of(job, job.rendered.groups);
    let needle = view.filter.to_lowercase();
    let mut matched = 0usize;
    let first = (view.page - 1).saturating_mul(PAGE_SIZE);
    let mut rows = String::new();
    let mut i = 0;
    // One part at a time: the page holds one part's groups, not the body.
    job.rendered.for_each_array(|array| {
        // The pieces are ours, serialized by a source; they always parse.
        let groups: Vec<Group> = serde_json::from_slice(array).unwrap_or_default();
        for group in &groups {
            row(
                &mut rows,
                group,
                sources.as_ref().and_then(|s| s.get(i)).copied(),
                &needle,
                first,
                &mut matched,
            );
            i += 1;
        }
    });
    let pages = matched.div_ceil(PAGE_SIZE).max(1);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sdbridge · {name}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}\
         .bad{{color:#b00}}.ok{{color:#070}}pre{{margin:0;white-space:pre-wrap}}\
         .l{{display:inline-block;background:#eef;border-radius:3px;margin:1px;padding:0 4px}}</style></head><body>\
         <h1>Targets of job {name}</h1>\
         <p><a href=\"/\">status</a> · <a href=\"/http_sd/{link}\">/http_sd/{name}</a> · \
         last change {changed}</p>\
         <form method=\"get\" action=\"/targets/{link}\"><input name=\"q\" size=\"40\" value=\"{filter}\" \
         placeholder=\"filter: address or label text\"> <button>Filter</button></form>\
         <p>{matched} of {total} targets{matching} · page {page} of {pages}",
        name = escape(&job.name),
        link = escape(&encode(&job.name)),
        changed = ago(Some(job.rendered.last_modified)),
        filter = escape(&view.filter),
        total = job.rendered.targets,
        matching = if view.filter.is_empty() { String::new() } else { format!(" match “{}”", escape(&view.filter)) },
        page = view.page,
    );
    if view.page > 1 {
        let _ = write!(
            html,
            " · <a href=\"{}\">previous</a>",
            escape(&view.link(&job.name, view.page - 1))
        );
    }
    if view.page < pages {
        let _ = write!(
            html,
            " · <a href=\"{}\">next</a>",
            escape(&view.link(&job.name, view.page + 1))
        );
    }
    html.push_str("</p><table><tr><th>target</th><th>labels</th><th>source</th><th>state</th><th>last error</th></tr>");
    html.push_str(&rows);
    html.push_str("</table></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_fall_back_to_the_first_page() {
        assert_eq!(
            View::from_query(None),
            View {
                filter: String::new(),
                page: 1
            }
        );
        assert_eq!(
            View::from_query(Some("q=%EB%8D%B0%EC%9D%B4%ED%84%B0+x&page=3")),
            View {
                filter: "데이터 x".into(),
                page: 3
            }
        );
        assert_eq!(View::from_query(Some("page=0")).page, 1);
        assert_eq!(View::from_query(Some("page=zz")).page, 1);
    }

    #[test]
    fn links_keep_the_filter() {
        let view = View {
            filter: "a&b".into(),
            page: 2,
        };
        assert_eq!(view.link("my job", 3), "/targets/my%20job?q=a%26b&page=3");
    }
}
