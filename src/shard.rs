//! `?shard=I&of=N` (CONTRACT section 4): a job's targets split the way
//! Prometheus's `hashmod` relabel action splits them, so N Prometheus
//! servers each discover only their share.
//!
//! A body's shards are built on the first request for its modulus, all N
//! at once in one pass over the body, and kept with the body: a new
//! snapshot starts without them. At most [`MODULI_KEPT`] moduli are kept
//! per body (the least recently asked for goes first), so the memory shards
//! take is bounded by that many copies of the body, plus their gzip
//! variants once asked for.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::snapshot::Rendered;

/// Largest `of` accepted (CONTRACT section 4).
pub const MAX_MODULUS: u64 = 1024;
/// Moduli whose shards are kept per body.
pub const MODULI_KEPT: usize = 4;

/// One shard of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// `shard=I`, `0 <= I < N`.
    pub index: u64,
    /// `of=N`, `1 <= N <= 1024`.
    pub modulus: u64,
}

impl Shard {
    /// The shard a query string asks for: `None` without `shard` and `of`;
    /// an error for one without the other, a repeated or malformed value,
    /// or values out of range. Other parameters are ignored.
    pub fn from_query(query: Option<&str>) -> Result<Option<Shard>, String> {
        let (mut index, mut modulus) = (None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "shard" => &mut index,
                "of" => &mut modulus,
                _ => continue,
            };
            if slot.is_some() {
                return Err(format!("{key} is given more than once"));
            }
            // Query values are percent-decoded (`%30` is `0`), then must
            // be plain decimal digits: no sign, no space, no exponent.
            let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            let number = Some(&*decoded)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            *slot = Some(
                number.ok_or_else(|| format!("{key}={decoded:?} is not a non-negative integer"))?,
            );
        }
        match (index, modulus) {
            (None, None) => Ok(None),
            (Some(_), None) => Err("shard needs of=N".into()),
            (None, Some(_)) => Err("of needs shard=I".into()),
            (Some(_), Some(n)) if n == 0 || n > MAX_MODULUS => {
                Err(format!("of={n} is out of range (1 to {MAX_MODULUS})"))
            }
            (Some(i), Some(n)) if i >= n => {
                Err(format!("shard={i} is out of range (0 to {})", n - 1))
            }
            (Some(index), Some(modulus)) => Ok(Some(Shard { index, modulus })),
        }
    }
}

/// The shard Prometheus's `hashmod` (`source_labels: [__address__]`,
/// `modulus: N`) assigns `address` to: the MD5 of the address, its last 8
/// bytes as a big-endian integer, modulo N.
pub fn hashmod(address: &str, modulus: u64) -> u64 {
    let sum = Md5::digest(address.as_bytes());
    let mut last = [0u8; 8];
    last.copy_from_slice(&sum[8..]);
    u64::from_be_bytes(last) % modulus
}

/// All shards of one body for one modulus, built once.
type Cut = Arc<OnceLock<Vec<Arc<Rendered>>>>;

/// The shards built from one body, per modulus.
#[derive(Debug, Default)]
pub struct Shards {
    /// Most recently asked for last.
    kept: Mutex<Vec<(u64, Cut)>>,
}

impl Clone for Shards {
    /// A copy starts empty: shards belong to one body's life.
    fn clone(&self) -> Self {
        Shards::default()
    }
}

impl Shards {
    /// Whether `shard`'s body (and its gzip, if `gzip`) is built already,
    /// so answering it costs no work.
    pub fn is_built(&self, shard: Shard, gzip: bool) -> bool {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.iter()
            .find(|(n, _)| *n == shard.modulus)
            .and_then(|(_, cell)| cell.get())
            .and_then(|shards| shards.get(shard.index as usize))
            .is_some_and(|cut| !gzip || cut.gzip.get().is_some())
    }

    /// `shard` of `parent`, building all of `parent`'s shards for that
    /// modulus if this is the first request for it. Concurrent first
    /// requests wait for one build.
    pub fn get(&self, parent: &Rendered, shard: Shard) -> Arc<Rendered> {
        let cell = {
            let mut kept = self
                .kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let cell = match kept.iter().position(|(n, _)| *n == shard.modulus) {
                Some(i) => kept.remove(i).1,
                None => Arc::new(OnceLock::new()),
            };
            kept.push((shard.modulus, cell.clone()));
            if kept.len() > MODULI_KEPT {
                kept.remove(0);
            }
            cell
        };
        let shards = cell.get_or_init(|| split(parent, shard.modulus));
        // `split` makes exactly `modulus` shards and `index < modulus`.
        shards[shard.index as usize].clone()
    }
}

#[derive(Deserialize)]
struct GroupIn<'a> {
    #[serde(borrow)]
    targets: Vec<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    labels: &'a RawValue,
}

#[derive(Serialize)]
struct GroupOut<'a> {
    targets: Vec<&'a str>,
    labels: &'a RawValue,
}

/// All `modulus` shards of `parent`'s body. Labels are copied byte for
/// byte; groups left without targets are omitted.
fn split(parent: &Rendered, modulus: u64) -> Vec<Arc<Rendered>> {
    let mut bodies: Vec<(Vec<u8>, usize, usize)> =
        (0..modulus).map(|_| (b"[".to_vec(), 0, 0)).collect();
    // One part at a time, so only a part's groups are parsed at once.
    parent.for_each_array(|array| {
        // The pieces are ours, serialized by a source; they always parse.
        let groups: Vec<GroupIn<'_>> = serde_json::from_slice(array).unwrap_or_default();
        let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); modulus as usize];
        for group in &groups {
            for target in &group.targets {
                by_shard[hashmod(target, modulus) as usize].push(target);
            }
            for (targets, (body, groups, count)) in by_shard.iter_mut().zip(&mut bodies) {
                if targets.is_empty() {
                    continue;
                }
                if *groups > 0 {
                    body.push(b',');
                }
                *groups += 1;
                *count += targets.len();
                let out = GroupOut {
                    targets: std::mem::take(targets),
                    labels: group.labels,
                };
                // Writing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *body, &out);
            }
        }
    });
    bodies
        .into_iter()
        .map(|(mut body, groups, targets)| {
            body.push(b']');
            // Kept as long as the body: without the growth slack, which
            // `Bytes` would keep (up to half of a grown `Vec`).
            body.shrink_to_fit();
            Rendered::derived(Bytes::from(body), groups, targets, parent)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashmod_matches_prometheus() {
        // Prometheus's relabel_test.go: hashmod of "baz", modulus 1000.
        assert_eq!(hashmod("baz", 1000), 976);
        for n in 1..50 {
            assert!(hashmod("127.0.0.1:9100", n) < n);
        }
    }

    #[test]
    fn queries_are_checked() {
        let q = |s: &str| Shard::from_query(Some(s));
        assert_eq!(q(""), Ok(None));
        assert_eq!(q("x=1"), Ok(None));
        assert_eq!(
            q("shard=2&of=3"),
            Ok(Some(Shard {
                index: 2,
                modulus: 3
            }))
        );
        assert_eq!(
            q("of=1024&shard=0"),
            Ok(Some(Shard {
                index: 0,
                modulus: 1024
            }))
        );
        for bad in [
            "shard=3&of=3",
            "shard=0&of=0",
            "shard=0&of=1025",
            "shard=0",
            "of=2",
            "shard=-1&of=2",
            "shard=a&of=2",
            "shard=0&shard=1&of=2",
            "shard=&of=2",
            // Regression: a sign passed Rust's integer parse.
            "shard=+0&of=2",
            "shard=%2B0&of=2",
            "shard=0&of= 2",
            "shard=0&of=2%20",
        ] {
            assert!(q(bad).is_err(), "{bad}");
        }
        // Regression: percent-encoded digits were refused.
        assert_eq!(
            q("shard=%30&of=%32"),
            Ok(Some(Shard {
                index: 0,
                modulus: 2
            }))
        );
    }

    fn rendered(body: &str) -> Arc<Rendered> {
        Rendered::restored(Bytes::from(body.to_string()), 0, 0, std::time::UNIX_EPOCH)
    }

    #[test]
    fn shards_partition_the_targets_and_keep_labels_verbatim() {
        let targets: Vec<String> = (0..200)
            .map(|i| format!("127.0.0.{}:{}", i % 250, 9000 + i))
            .collect();
        // As the merger writes bodies: `targets` first, UTF-8 unescaped.
        let list = |ts: &[String]| serde_json::to_string(ts).unwrap();
        let body = format!(
            r#"[{{"targets":{},"labels":{{"job":"a","k":"데이터 \"q\""}}}},{{"targets":{},"labels":{{}}}},{{"targets":[],"labels":{{"empty":"x"}}}}]"#,
            list(&targets[..150]),
            list(&targets[150..]),
        );
        let parent = rendered(&body);
        let shards = Shards::default();
        let mut seen = Vec::new();
        for index in 0..7 {
            let shard = shards.get(&parent, Shard { index, modulus: 7 });
            let bytes = shard.body.to_bytes();
            let groups: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("\\u"),
                "labels are copied verbatim"
            );
            let mut count = 0;
            for g in &groups {
                let ts = g["targets"].as_array().unwrap();
                assert!(!ts.is_empty(), "empty groups are omitted");
                for t in ts {
                    let t = t.as_str().unwrap();
                    assert_eq!(hashmod(t, 7), index);
                    seen.push(t.to_string());
                    count += 1;
                }
            }
            assert_eq!((shard.groups, shard.targets), (groups.len(), count));
            assert_eq!(shard.last_modified, parent.last_modified);
            assert_ne!(shard.etag, parent.etag);
        }
        seen.sort();
        let mut all = targets.clone();
        all.sort();
        assert_eq!(seen, all);
        // One shard of one: the body itself, byte for byte, but for the
        // group without targets.
        let whole = shards.get(
            &parent,
            Shard {
                index: 0,
                modulus: 1,
            },
        );
        let without_empty = body.replace(r#",{"targets":[],"labels":{"empty":"x"}}"#, "");
        assert_eq!(whole.body.to_bytes(), without_empty.as_bytes());
    }

    #[test]
    fn only_a_few_moduli_are_kept() {
        let parent = rendered(r#"[{"targets":["127.0.0.1:1"],"labels":{}}]"#);
        let shards = Shards::default();
        let first = shards.get(
            &parent,
            Shard {
                index: 0,
                modulus: 2,
            },
        );
        assert!(Arc::ptr_eq(
            &first,
            &shards.get(
                &parent,
                Shard {
                    index: 0,
                    modulus: 2
                }
            )
        ));
        for n in 3..3 + MODULI_KEPT as u64 {
            shards.get(
                &parent,
                Shard {
                    index: 0,
                    modulus: n,
                },
            );
        }
        assert_eq!(shards.kept.lock().unwrap().len(), MODULI_KEPT);
        // Modulus 2 was the least recently used: rebuilt, a new Arc.
        assert!(!Arc::ptr_eq(
            &first,
            &shards.get(
                &parent,
                Shard {
                    index: 0,
                    modulus: 2
                }
            )
        ));
    }
}
