//! Bodies from parts: a source's parts kept in key order, a job's body
//! chained from its parts' fragments, the merged body from the jobs'.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::pipeline::Part;
use crate::snapshot::{Piece, Rendered};
use crate::targetgroup::Fragment;

pub(super) fn insert_parts(parts: &mut BTreeMap<String, Arc<Fragment>>, new: Vec<Part>) {
    for part in new {
        if part.fragment.is_empty() {
            parts.remove(&part.key);
        } else if parts.get(&part.key) != Some(&part.fragment) {
            // An equal part (a file re-read every refresh_interval) keeps
            // the fragment already served: the body that is kept when
            // nothing changed holds that one, and holding both would
            // double the memory of every re-read part.
            parts.insert(part.key, part.fragment);
        }
    }
}

/// Chains `fragments` into a JSON array: the body a job serves. No bytes
/// are copied; the chain shares the fragments' bytes. Public for the fuzz
/// targets, which check that served bodies parse back to the groups they
/// were built from.
pub fn render<'a>(
    fragments: impl Iterator<Item = &'a Arc<Fragment>>,
    job: &Bytes,
    previous: Option<&Arc<Rendered>>,
) -> Arc<Rendered> {
    let mut pieces = vec![Piece::Open];
    let (mut groups, mut targets) = (0, 0);
    for fragment in fragments.filter(|f| !f.is_empty()) {
        pieces.push(Piece::Part {
            fragment: fragment.clone(),
            first: pieces.len() == 1,
            job: job.clone(),
        });
        groups += fragment.groups();
        targets += fragment.targets();
    }
    pieces.push(Piece::Close);
    Rendered::new(pieces, groups, targets, previous)
}

/// The groups of every body of `jobs`, in order, as one JSON array (the
/// all-jobs body), sharing their bytes.
pub(super) fn concat(jobs: &[Arc<Rendered>], previous: Option<&Arc<Rendered>>) -> Arc<Rendered> {
    let mut pieces = vec![Piece::Open];
    for job in jobs {
        let inner = job.pieces.get(1..job.pieces.len().saturating_sub(1));
        for piece in inner.unwrap_or_default() {
            let first = pieces.len() == 1;
            match piece {
                // A part first in its job follows the groups before it.
                Piece::Part { fragment, job, .. } => pieces.push(Piece::Part {
                    fragment: fragment.clone(),
                    first,
                    job: job.clone(),
                }),
                Piece::Raw(raw) => {
                    if !first {
                        pieces.push(Piece::Comma);
                    }
                    pieces.push(Piece::Raw(raw.clone()));
                }
                Piece::Comma if first => {}
                other => pieces.push(other.clone()),
            }
        }
    }
    pieces.push(Piece::Close);
    let groups = jobs.iter().map(|j| j.groups).sum();
    let targets = jobs.iter().map(|j| j.targets).sum();
    Rendered::new(pieces, groups, targets, previous)
}
