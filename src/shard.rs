//! `?shard=I&of=N[&assign=hashmod|jump]` (CONTRACT sections 4 and 5a):
//! which of N scrapers a target goes to, and a body's targets cut into N
//! bodies by it.
//!
//! - `hashmod` (the default) is Prometheus's `hashmod` relabel action on
//!   `__address__`: the last 8 bytes of the MD5 of the address as a
//!   big-endian integer, modulo N. A Prometheus that adds `hashmod` +
//!   `keep` rules keeps exactly the shard sdbridge serves.
//! - `jump` is Lamping and Veach's jump consistent hash (2014) of the
//!   same 64-bit key with N buckets: going from N to N+1 scrapers moves
//!   only the targets that land in the new shard (about 1/(N+1) of them),
//!   where `hashmod` moves nearly all.
//!
//! This module only computes: [`split`] returns the cut bodies' bytes;
//! the snapshot keeps them with the body they were cut from.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Largest `of` accepted (CONTRACT section 4).
pub const MAX_MODULUS: u64 = 1024;

/// How targets are assigned to shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Assign {
    /// Prometheus's `hashmod`: the key modulo N.
    #[default]
    Hashmod,
    /// Jump consistent hash of the key into N buckets.
    Jump,
}

impl Assign {
    /// The query value (`assign=...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Assign::Hashmod => "hashmod",
            Assign::Jump => "jump",
        }
    }

    fn parse(value: &str) -> Result<Assign, String> {
        match value {
            "hashmod" => Ok(Assign::Hashmod),
            "jump" => Ok(Assign::Jump),
            other => Err(format!("assign={other:?} is not one of hashmod, jump")),
        }
    }
}

/// One shard of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// `shard=I`, `0 <= I < N`.
    pub index: u64,
    /// `of=N`, `1 <= N <= 1024`.
    pub modulus: u64,
    /// `assign=`, `hashmod` unless given.
    pub assign: Assign,
}

/// A query's `shard`, `of` and `assign` values, each checked; missing
/// ones `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parameters {
    /// `shard=I`.
    pub index: Option<u64>,
    /// `of=N`, within 1 to [`MAX_MODULUS`].
    pub modulus: Option<u64>,
    /// `assign=`.
    pub assign: Option<Assign>,
}

/// The [`Parameters`] of `query`. Values are percent-decoded (`%30` is
/// `0`), then `shard` and `of` must be plain decimal digits: no sign, no
/// space, no exponent.
pub fn parameters(query: Option<&str>) -> Result<Parameters, String> {
    let (mut index, mut modulus, mut assign) = (None, None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        if key == "assign" {
            if assign.is_some() {
                return Err("assign is given more than once".into());
            }
            assign = Some(Assign::parse(&decoded)?);
            continue;
        }
        let slot = match key {
            "shard" => &mut index,
            "of" => &mut modulus,
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!("{key} is given more than once"));
        }
        let number = Some(&*decoded)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok());
        *slot =
            Some(number.ok_or_else(|| format!("{key}={decoded:?} is not a non-negative integer"))?);
    }
    if let Some(n) = modulus {
        if n == 0 || n > MAX_MODULUS {
            return Err(format!("of={n} is out of range (1 to {MAX_MODULUS})"));
        }
    }
    Ok(Parameters {
        index,
        modulus,
        assign,
    })
}

impl Shard {
    /// The shard a query string asks for: `None` without `shard` and `of`;
    /// an error for one without the other, `assign` without them, a
    /// repeated or malformed value, or values out of range. Other
    /// parameters are ignored.
    pub fn from_query(query: Option<&str>) -> Result<Option<Shard>, String> {
        let Parameters {
            index,
            modulus,
            assign,
        } = parameters(query)?;
        match (index, modulus) {
            (None, None) if assign.is_some() => Err("assign needs shard=I and of=N".into()),
            (None, None) => Ok(None),
            (Some(_), None) => Err("shard needs of=N".into()),
            (None, Some(_)) => Err("of needs shard=I".into()),
            (Some(i), Some(n)) if i >= n => {
                Err(format!("shard={i} is out of range (0 to {})", n - 1))
            }
            (Some(index), Some(modulus)) => Ok(Some(Shard {
                index,
                modulus,
                assign: assign.unwrap_or_default(),
            })),
        }
    }
}

/// The 64-bit key both assignments use: the last 8 bytes of the MD5 of
/// `address`, big-endian (what Prometheus's `hashmod` takes modulo N).
pub fn key(address: &str) -> u64 {
    let sum = Md5::digest(address.as_bytes());
    let mut last = [0u8; 8];
    last.copy_from_slice(&sum[8..]);
    u64::from_be_bytes(last)
}

/// The shard Prometheus's `hashmod` (`source_labels: [__address__]`,
/// `modulus: N`) assigns `address` to.
pub fn hashmod(address: &str, modulus: u64) -> u64 {
    key(address) % modulus
}

/// Lamping and Veach's jump consistent hash of `key` into `buckets`
/// buckets (their paper's reference code, in 64-bit arithmetic).
pub fn jump(mut key: u64, buckets: u64) -> u64 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    let buckets = i64::try_from(buckets).unwrap_or(i64::MAX);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as u64
}

/// The shard of N that `assign` puts `address` in.
pub fn assign(address: &str, modulus: u64, assign: Assign) -> u64 {
    match assign {
        Assign::Hashmod => hashmod(address, modulus),
        Assign::Jump => jump(key(address), modulus),
    }
}

/// One cut body: a JSON array of groups and its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The JSON array.
    pub body: Vec<u8>,
    /// Groups in it.
    pub groups: usize,
    /// Targets in it.
    pub targets: usize,
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

/// All `modulus` shards of a body whose parts `for_each_array` hands
/// over one JSON array at a time (so only one part's groups are parsed at
/// once). Labels are copied byte for byte; groups left without targets
/// are omitted.
pub fn split(
    for_each_array: impl FnOnce(&mut dyn FnMut(&[u8])),
    modulus: u64,
    how: Assign,
) -> Vec<Cut> {
    let mut bodies: Vec<(Vec<u8>, usize, usize)> =
        (0..modulus).map(|_| (b"[".to_vec(), 0, 0)).collect();
    for_each_array(&mut |array| {
        // The pieces are ours, serialized by a source; they always parse.
        let groups: Vec<GroupIn<'_>> = serde_json::from_slice(array).unwrap_or_default();
        let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); modulus as usize];
        for group in &groups {
            for target in &group.targets {
                by_shard[assign(target, modulus, how) as usize].push(target);
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
            // Kept as long as the body: without the growth slack.
            body.shrink_to_fit();
            Cut {
                body,
                groups,
                targets,
            }
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
                modulus: 3,
                assign: Assign::Hashmod,
            }))
        );
        assert_eq!(
            q("of=1024&shard=0"),
            Ok(Some(Shard {
                index: 0,
                modulus: 1024,
                assign: Assign::Hashmod,
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
                modulus: 2,
                assign: Assign::Hashmod,
            }))
        );
        assert_eq!(
            q("shard=1&of=3&assign=jump"),
            Ok(Some(Shard {
                index: 1,
                modulus: 3,
                assign: Assign::Jump,
            }))
        );
        for bad in [
            "shard=0&of=2&assign=ring",
            "assign=jump",
            "shard=0&of=2&assign=jump&assign=jump",
        ] {
            assert!(q(bad).is_err(), "{bad}");
        }
    }

    /// The reference values of Lamping and Veach's code, and the property the assignment is for: going
    /// from N to N+1 buckets moves keys only into the new bucket.
    #[test]
    fn jump_matches_the_reference_and_moves_only_to_the_new_bucket() {
        assert_eq!(jump(0, 1), 0);
        for n in 1..100 {
            assert_eq!(jump(0, n), 0, "key 0 stays in bucket 0");
        }
        // What the paper's reference code (compiled as C, 2026-12-08)
        // prints for these keys and bucket counts.
        let vectors: [(u64, u64, u64); 6] = [
            (1, 1, 0),
            (0xdead_beef, 16, 5),
            (0x0ddc_0ffe_ebad_f00d, 128, 113),
            (256, 1024, 520),
            (123_456_789, 1000, 294),
            (u64::MAX, 7, 2),
        ];
        for (key, n, want) in vectors {
            assert_eq!(jump(key, n), want, "jump({key:#x}, {n})");
        }
        let mut moved = 0;
        let total = 10_000;
        for i in 0..total {
            let k = key(&format!("127.0.{}.{}:9100", i / 250, i % 250));
            let (before, after) = (jump(k, 7), jump(k, 8));
            if before != after {
                assert_eq!(after, 7, "a moved key goes to the new bucket");
                moved += 1;
            }
        }
        // About 1/8 of them; hashmod would move about 7/8.
        assert!((900..1600).contains(&moved), "{moved} of {total} moved");
    }
}
