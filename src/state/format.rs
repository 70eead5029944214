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
//! bit or trailing bytes are all detected. The checksum only catches
//! accidents (anyone who can write the file can recompute it), so every
//! field is also checked for what it may hold: [`read`] opens only regular
//! files and bounds what it reads, and `built` must lie in
//! `[0, now + 1 day]`.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
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
/// How far in the future `built` may be: a host whose clock ran ahead
/// wrote the file, and serving it would pin `Last-Modified` (every later
/// body is at least one second later) in the future.
pub const MAX_AHEAD: Duration = Duration::from_secs(86_400);
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

/// Reads the state file at `path` (`Ok(None)`: there is none). Only a
/// regular file is read: a symlink is not followed and the open cannot
/// block (a FIFO), and its size, taken from the opened file, must match
/// its header and fit `max_body` (`limits.max_input_size`) before the body
/// is read, so nothing reads more than that. The error says why the file
/// cannot be used.
pub fn read(path: &Path, max_body: u64, now: SystemTime) -> Result<Option<Persisted>, String> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let opened = OpenOptions::new()
        .read(true)
        // The flags are small positive constants: the cast is lossless.
        .custom_flags(flags.bits() as i32)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err("a symbolic link: only regular files are read".to_string())
        }
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "not a regular file ({}): only regular files are read",
            kind_of(&meta.file_type())
        ));
    }
    let size = meta.len();
    let too_large = |body: u64| {
        format!("a body of {body} bytes is larger than limits.max_input_size ({max_body} bytes)")
    };
    if size > max_body.saturating_add(MAX_HEADER as u64) {
        return Err(format!(
            "{size} bytes, more than a header and limits.max_input_size ({max_body} bytes) can take"
        ));
    }
    let mut bytes = Vec::new();
    read_up_to(&mut file, &mut bytes, size.min(MAX_HEADER as u64 + 2))?;
    let head = parse_header(&bytes)?;
    if head.length > max_body {
        return Err(too_large(head.length));
    }
    if size.checked_sub(head.len as u64) != Some(head.length) {
        return Err(format!(
            "truncated or damaged: the header says {} body bytes, the file has {}",
            head.length,
            size.saturating_sub(head.len as u64)
        ));
    }
    let rest = (size - bytes.len() as u64).saturating_add(1);
    read_up_to(&mut file, &mut bytes, rest)?;
    if bytes.len() as u64 != size {
        return Err("changed while it was read".to_string());
    }
    decode(Bytes::from(bytes), now).map(Some)
}

/// Appends at most `limit` more bytes of `file` to `into`.
fn read_up_to(file: &mut File, into: &mut Vec<u8>, limit: u64) -> Result<(), String> {
    file.take(limit)
        .read_to_end(into)
        .map(drop)
        .map_err(|e| format!("cannot read it: {e}"))
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// The fields of a header, and where its parts end.
struct Header {
    job: String,
    key: String,
    built: u64,
    length: u64,
    sum: u128,
    /// Bytes up to the checksum line: what the checksum covers before the body.
    sum_line_at: usize,
    /// Bytes of the header, the blank line included: where the body starts.
    len: usize,
}

/// Parses the header at the start of `bytes` (which may go on past it).
fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    if !bytes.starts_with(MAGIC.as_bytes()) {
        return Err(not_ours(bytes));
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
    let length: u64 = number(field("length")?, "length")?;
    let sum_line_at = head.rfind("\nxxh3 ").map_or(0, |i| i + 1);
    let sum = u128::from_str_radix(field("xxh3")?, 16)
        .map_err(|_| "damaged header: xxh3 is not hex".to_string())?;
    Ok(Header {
        job,
        key,
        built,
        length,
        sum,
        sum_line_at,
        len: head_end + 2,
    })
}

/// Reads back a whole state file's bytes, at `now` (for the `built`
/// window); the error says why it cannot be used.
pub fn decode(bytes: Bytes, now: SystemTime) -> Result<Persisted, String> {
    let head = parse_header(&bytes)?;
    let body = bytes.slice(head.len..);
    if body.len() as u64 != head.length {
        return Err(format!(
            "truncated or damaged: the header says {} body bytes, the file has {}",
            head.length,
            body.len()
        ));
    }
    if checksum(&bytes[..head.sum_line_at], &Chain::from(body.clone())) != head.sum {
        return Err("damaged: checksum mismatch".to_string());
    }
    let built_at = built_at(head.built, now)?;
    let (groups, targets) = count(&body)?;
    Ok(Persisted {
        job: head.job,
        key: head.key,
        built_at,
        body,
        groups,
        targets,
    })
}

/// `built` (Unix seconds) as a time, if it lies in `[0, now + 1 day]`.
fn built_at(built: u64, now: SystemTime) -> Result<SystemTime, String> {
    let latest = now.checked_add(MAX_AHEAD).unwrap_or(now);
    UNIX_EPOCH
        .checked_add(Duration::from_secs(built))
        .filter(|t| *t <= latest)
        .ok_or_else(|| {
            format!(
                "built {built} is more than a day ahead of this host's clock (written by a host whose clock ran ahead?)"
            )
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

    /// The clock the tests read files at: a day after [`file`]'s `built`.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_700_000 + 86_400)
    }

    /// A file with a valid checksum and `built` as given.
    fn built_at_text(built: &str) -> Vec<u8> {
        let mut head = format!(
            "{MAGIC}{VERSION}\njob \"j\"\nkey k1\nbuilt {built}\nlength {}\n",
            BODY.len()
        )
        .into_bytes();
        let sum = checksum(&head, &Chain::from(Bytes::from_static(BODY)));
        head.extend_from_slice(format!("xxh3 {sum:032x}\n\n").as_bytes());
        head.extend_from_slice(BODY);
        head
    }

    /// Issue 17: the checksum does not make `built` trustworthy (anyone
    /// who can write the file can recompute it). A `built` past what a
    /// time or an HTTP date can hold, or ahead of the clock by more than a
    /// day, is refused, never a panic.
    #[test]
    fn built_outside_the_window_is_refused_without_panicking() {
        let now_secs = 1_764_700_000 + 86_400;
        let refused = [
            "253402300800".to_string(),
            "253402300799".to_string(),
            u64::MAX.to_string(),
            (now_secs + 86_400 + 1).to_string(),
        ];
        for built in &refused {
            let err = decode(Bytes::from(built_at_text(built)), now()).unwrap_err();
            assert!(
                err.contains(&format!("built {built} is more than a day ahead")),
                "{err}"
            );
        }
        for built in [0, now_secs, now_secs + 86_400] {
            let p = decode(Bytes::from(built_at_text(&built.to_string())), now()).unwrap();
            assert_eq!(p.built_at, UNIX_EPOCH + Duration::from_secs(built));
        }
        let err = decode(Bytes::from(built_at_text("-1")), now()).unwrap_err();
        assert!(err.contains("is not a number"), "{err}");
    }

    /// [`read`] in a thread: a read that blocks fails the test instead of
    /// hanging it.
    fn read_soon(path: &Path, max_body: u64) -> Result<Option<Persisted>, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(read(&path, max_body, now()));
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("reading blocked"))
    }

    /// Issue 17: a FIFO, a symlink (even to a good file, or to
    /// `/dev/zero`), a directory, a sparse file over the limit or a header
    /// whose length does not match the file: refused before the body is
    /// read, without blocking.
    #[test]
    fn read_takes_only_regular_files_within_the_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let at = |name: &str| tmp.path().join(name);
        let good = file("j");
        std::fs::write(at("good"), &good).unwrap();
        let p = read_soon(&at("good"), BODY.len() as u64).unwrap().unwrap();
        assert_eq!(&p.body[..], BODY);
        assert_eq!(read_soon(&at("missing"), 1 << 20), Ok(None));

        std::os::unix::fs::symlink(at("good"), at("link")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", at("zero")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            at("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::create_dir(at("dir")).unwrap();
        // Sparse: 8 GiB that take no disk, and would take 8 GiB of memory.
        let sparse = std::fs::File::create(at("sparse")).unwrap();
        sparse.set_len(8 << 30).unwrap();
        std::fs::write(at("longer"), [&good[..], b"x"].concat()).unwrap();
        let longer = format!(
            "the header says {} body bytes, the file has {}",
            BODY.len(),
            BODY.len() + 1
        );
        let cases = [
            ("fifo", "not a regular file (a FIFO)"),
            ("link", "a symbolic link"),
            ("dir", "not a regular file (a directory)"),
            (
                "sparse",
                "8589934592 bytes, more than a header and limits.max_input_size",
            ),
            ("longer", &longer),
            ("zero", "a symbolic link"),
        ];
        for (name, want) in cases {
            let err = read_soon(&at(name), 1 << 20).unwrap_err();
            assert!(err.contains(want), "{name}: want {want:?}, got {err:?}");
        }
        let err = read_soon(&at("good"), BODY.len() as u64 - 1).unwrap_err();
        assert!(
            err.contains(&format!(
                "a body of {} bytes is larger than limits.max_input_size",
                BODY.len()
            )),
            "{err}"
        );
    }

    #[test]
    fn a_file_reads_back_as_written() {
        let job = "my \"job\"\n서비스";
        let p = decode(Bytes::from(file(job)), now()).unwrap();
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
            let err = decode(Bytes::from(bytes.clone()), now()).unwrap_err();
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
        assert!(decode(Bytes::from(f), now())
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
