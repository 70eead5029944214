//! The shards cut from one body ([`crate::shard::split`]), kept with it.
//!
//! A body's shards are built on the first request for its modulus and
//! assignment, all N at once in one pass over the body, and kept with the
//! body: a new snapshot starts without them. At most [`MODULI_KEPT`]
//! (modulus, assignment) pairs are kept per body (the least recently
//! asked for goes first), so the memory shards take is bounded by that
//! many copies of the body, plus their gzip variants once asked for.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use super::Rendered;
use crate::shard::{self, Assign, Shard};

/// (modulus, assignment) pairs whose shards are kept per body.
pub const MODULI_KEPT: usize = 4;

/// All shards of one body for one modulus and assignment, built once.
type Cuts = Arc<OnceLock<Vec<Arc<Rendered>>>>;

/// The shards built from one body, per modulus and assignment.
#[derive(Debug, Default)]
pub struct Shards {
    /// Most recently asked for last.
    kept: Mutex<Vec<((u64, Assign), Cuts)>>,
}

impl Clone for Shards {
    /// A copy starts empty: shards belong to one body's life.
    fn clone(&self) -> Self {
        Shards::default()
    }
}

impl Shards {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<((u64, Assign), Cuts)>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `shard`'s body (and its gzip, if `gzip`) is built already,
    /// so answering it costs no work.
    pub fn is_built(&self, shard: Shard, gzip: bool) -> bool {
        self.lock()
            .iter()
            .find(|(k, _)| *k == (shard.modulus, shard.assign))
            .and_then(|(_, cell)| cell.get())
            .and_then(|shards| shards.get(shard.index as usize))
            .is_some_and(|cut| !gzip || cut.gzip.get().is_some())
    }

    /// `shard` of `parent`, building all of `parent`'s shards for that
    /// modulus and assignment if this is the first request for them.
    /// Concurrent first requests wait for one build.
    pub fn get(&self, parent: &Rendered, shard: Shard) -> Arc<Rendered> {
        let key = (shard.modulus, shard.assign);
        let cell = {
            let mut kept = self.lock();
            let cell = match kept.iter().position(|(k, _)| *k == key) {
                Some(i) => kept.remove(i).1,
                None => Arc::new(OnceLock::new()),
            };
            kept.push((key, cell.clone()));
            if kept.len() > MODULI_KEPT {
                kept.remove(0);
            }
            cell
        };
        let shards = cell.get_or_init(|| {
            shard::split(|f| parent.for_each_array(f), shard.modulus, shard.assign)
                .into_iter()
                .map(|cut| {
                    Rendered::derived(Bytes::from(cut.body), cut.groups, cut.targets, parent)
                })
                .collect()
        });
        // `split` makes exactly `modulus` shards and `index < modulus`.
        shards[shard.index as usize].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shard 0 of `n`, as `hashmod` assigns.
    fn first_of(modulus: u64) -> Shard {
        Shard {
            index: 0,
            modulus,
            assign: Assign::Hashmod,
        }
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
            let shard = shards.get(
                &parent,
                Shard {
                    index,
                    modulus: 7,
                    assign: Assign::Hashmod,
                },
            );
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
                    assert_eq!(shard::hashmod(t, 7), index);
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
        let whole = shards.get(&parent, first_of(1));
        let without_empty = body.replace(r#",{"targets":[],"labels":{"empty":"x"}}"#, "");
        assert_eq!(whole.body.to_bytes(), without_empty.as_bytes());
    }

    #[test]
    fn only_a_few_moduli_are_kept() {
        let parent = rendered(r#"[{"targets":["127.0.0.1:1"],"labels":{}}]"#);
        let shards = Shards::default();
        let first = shards.get(&parent, first_of(2));
        assert!(Arc::ptr_eq(&first, &shards.get(&parent, first_of(2))));
        for n in 3..3 + MODULI_KEPT as u64 {
            shards.get(&parent, first_of(n));
        }
        assert_eq!(shards.kept.lock().unwrap().len(), MODULI_KEPT);
        // Modulus 2 was the least recently used: rebuilt, a new Arc.
        assert!(!Arc::ptr_eq(&first, &shards.get(&parent, first_of(2))));
    }
}
