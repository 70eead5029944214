//! The state file of one job: a short text header that says what the file
//! is and guards it, then the body exactly as served.
//!
//! ```text
//! sdbridge state v1
//! job "mysql"
//! key 5d41402abc4b2a76b9719d911017c592
//! built 1764700000
//! length 1234
//! xxh3 0f9a...
//!
//! [{"targets":...}]
//! ```
//!
//! `job` is the job name as a JSON string (any name fits on one line),
//! `key` the job's [`super::JobKey`], `built` the body's `Last-Modified` in
//! Unix seconds, `length` the body's size in bytes and `xxh3` the xxh3-128
//! of everything above its line plus the body, so truncation, a flipped
//! bit or trailing bytes are all detected.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::chain::Chain;

/// The first line of every state file: what it is, and the format version.
const MAGIC: &str = "sdbridge state v";
/// The format written, and the only one read.
pub const VERSION: u32 = 1;
/// The extension of state files.
pub const EXTENSION: &str = ".state";
/// Longest header read; a real one is the job name plus ~150 bytes.
const MAX_HEADER: usize = 64 * 1024;
/// Longest encoded job name used as a file name as it is; longer names
/// are hashed (file names are limited to 255 bytes).
const MAX_NAME: usize = 200;

/// Bytes kept as they are in file names; everything else is
/// percent-encoded, so no name can be `.`, `..`, hidden or hold a `/`.
const FILE_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// A job's last good body as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// The job name from the header.
    pub job: String,
    /// The job's config key when the body was written.
    pub key: String,
    /// The body's `Last-Modified`.
    pub built_at: SystemTime,
    /// The body.
    pub body: Bytes,
    /// Groups in the body.
    pub groups: usize,
    /// Targets in the body.
    pub targets: usize,
}

/// The state file name of job `job`: the name percent-encoded (readable
/// for the usual names), or for very long names a hash of it (the header
/// still names the job, so a collision is detected, not served).
pub fn file_name(job: &str) -> String {
    let encoded = utf8_percent_encode(job, FILE_NAME).to_string();
    if encoded.len() <= MAX_NAME {
        format!("{encoded}{EXTENSION}")
    } else {
        let hash = xxhash_rust::xxh3::xxh3_128(job.as_bytes());
        // `~` is always encoded above, so this cannot equal an encoded name.
        format!("~{hash:032x}{EXTENSION}")
    }
}

/// The header of `body` for job `job` under `key`, built at `built_at`.
/// The file is the header followed by the body.
pub fn header(job: &str, key: &str, built_at: SystemTime, body: &Chain) -> Vec<u8> {
    let job = serde_json::to_string(job).unwrap_or_default();
    let built = built_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut head = format!(
        "{MAGIC}{VERSION}\njob {job}\nkey {key}\nbuilt {built}\nlength {}\n",
        body.len()
    )
    .into_bytes();
    let sum = checksum(&head, body);
    head.extend_from_slice(format!("xxh3 {sum:032x}\n\n").as_bytes());
    head
}

fn checksum(head: &[u8], body: &Chain) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(head);
    for segment in body.segments() {
        hasher.update(segment);
    }
    hasher.digest128()
}

/// Reads back a state file's bytes; the error says why it cannot be used.
pub fn decode(bytes: Bytes) -> Result<Persisted, String> {
    if !bytes.starts_with(MAGIC.as_bytes()) {
        return Err(not_ours(&bytes));
    }
    let head_end = bytes
        .windows(2)
        .take(MAX_HEADER)
        .position(|w| w == b"\n\n")
        .ok_or("truncated or damaged: no end of header")?;
    let head = std::str::from_utf8(&bytes[..head_end + 1])
        .map_err(|_| "damaged header: not UTF-8".to_string())?;
    let mut lines = head.lines();
    let version = lines.next().unwrap_or("").strip_prefix(MAGIC).unwrap_or("");
    if version != VERSION.to_string() {
        return Err(format!(
            "format version {version:?}, this sdbridge reads version {VERSION}"
        ));
    }
    let mut field = |name: &str| -> Result<&str, String> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(' '))
            .ok_or_else(|| format!("damaged header: no {name:?} line where expected"))
    };
    let job: String = serde_json::from_str(field("job")?)
        .map_err(|e| format!("damaged header: job name: {e}"))?;
    let key = field("key")?.to_string();
    let built: u64 = number(field("built")?, "built")?;
    let length: usize = number(field("length")?, "length")?;
    let sum_line_at = head.rfind("\nxxh3 ").map_or(0, |i| i + 1);
    let sum = u128::from_str_radix(field("xxh3")?, 16)
        .map_err(|_| "damaged header: xxh3 is not hex".to_string())?;
    let body = bytes.slice(head_end + 2..);
    if body.len() != length {
        return Err(format!(
            "truncated or damaged: the header says {length} body bytes, the file has {}",
            body.len()
        ));
    }
    if checksum(&bytes[..sum_line_at], &Chain::from(body.clone())) != sum {
        return Err("damaged: checksum mismatch".to_string());
    }
    let (groups, targets) = count(&body)?;
    Ok(Persisted {
        job,
        key,
        built_at: UNIX_EPOCH + Duration::from_secs(built),
        body,
        groups,
        targets,
    })
}

fn not_ours(bytes: &[u8]) -> String {
    let start = String::from_utf8_lossy(&bytes[..bytes.len().min(32)]).into_owned();
    format!("not an sdbridge state file (it starts with {start:?})")
}

fn number<T: std::str::FromStr>(text: &str, name: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("damaged header: {name} {text:?} is not a number"))
}

/// One served group, as far as serving it again needs to know.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    targets: Vec<IgnoredAny>,
    #[allow(dead_code)]
    labels: IgnoredAny,
}

/// Checks that `body` is an HTTP SD answer and counts its groups and
/// targets (for `/metrics` and the status page).
fn count(body: &[u8]) -> Result<(usize, usize), String> {
    let groups: Vec<Group> = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not an HTTP SD JSON array: {e}"))?;
    Ok((groups.len(), groups.iter().map(|g| g.targets.len()).sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"[{"targets":["127.0.0.1:1","127.0.0.1:2"],"labels":{"a":"\u00e9"}},{"targets":[],"labels":{}}]"#;

    fn file(job: &str) -> Vec<u8> {
        let at = UNIX_EPOCH + Duration::from_secs(1_764_700_000);
        let mut f = header(job, "k1", at, &Chain::from(Bytes::from_static(BODY)));
        f.extend_from_slice(BODY);
        f
    }

    #[test]
    fn a_file_reads_back_as_written() {
        let job = "my \"job\"\n서비스";
        let p = decode(Bytes::from(file(job))).unwrap();
        assert_eq!(p.job, job);
        assert_eq!(p.key, "k1");
        assert_eq!(p.built_at, UNIX_EPOCH + Duration::from_secs(1_764_700_000));
        assert_eq!(&p.body[..], BODY);
        assert_eq!((p.groups, p.targets), (2, 2));
    }

    #[test]
    fn damage_of_any_kind_is_detected() {
        let good = file("j");
        let body_at = good.len() - BODY.len();
        let mut flipped = good.clone();
        flipped[body_at + 5] ^= 1;
        let mut in_header = good.clone();
        // A digit of `built`.
        let built = good.windows(6).position(|w| w == b"built ").unwrap() + 7;
        in_header[built] = if in_header[built] == b'9' { b'8' } else { b'9' };
        let mut longer = good.clone();
        longer.push(b' ');
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 1].to_vec(), "truncated"),
            (good[..body_at - 3].to_vec(), "no end of header"),
            (longer, "truncated or damaged"),
            (flipped, "checksum"),
            (in_header, "checksum"),
            (
                b"{\"foreign\": true}\n".to_vec(),
                "not an sdbridge state file",
            ),
            (Vec::new(), "not an sdbridge state file"),
            (
                String::from_utf8(good.clone())
                    .unwrap()
                    .replacen("state v1", "state v7", 1)
                    .into_bytes(),
                "format version \"7\"",
            ),
        ];
        for (bytes, want) in cases {
            let err = decode(Bytes::from(bytes.clone())).unwrap_err();
            assert!(
                err.contains(want),
                "{:?}: want {want:?}, got {err:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn a_body_that_is_not_an_answer_is_refused() {
        let body = b"{\"targets\":[]}";
        let mut f = header("j", "k", UNIX_EPOCH, &Chain::from(Bytes::from_static(body)));
        f.extend_from_slice(body);
        assert!(decode(Bytes::from(f))
            .unwrap_err()
            .contains("not an HTTP SD JSON array"));
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("mysql_exporter-1"), "mysql_exporter-1.state");
        assert_eq!(file_name("a/b"), "a%2Fb.state");
        assert_eq!(file_name(".."), "%2E%2E.state");
        assert_eq!(file_name("서"), "%EC%84%9C.state");
        let long = "x".repeat(300);
        let name = file_name(&long);
        assert!(name.starts_with('~') && name.len() < 255, "{name}");
        assert_ne!(file_name(&"x".repeat(301)), name);
    }
}
