//! `/etc/resolv.conf` as Prometheus's DNS client reads it (miekg/dns
//! 1.1.50's `ClientConfigFromReader`), and the names one lookup tries
//! (`ClientConfig.NameList`, with miekg's `CountLabel`, `IsFqdn` and
//! `Fqdn`), ported line by line so the search-list rules are the same.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Where the system's resolver configuration lives.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Largest resolv.conf read (real ones are a few hundred bytes).
const MAX_SIZE: u64 = 64 * 1024;
/// `options timeout:` above this is taken as this (glibc's
/// `RES_MAXRETRANS`): one lookup stays bounded.
const MAX_TIMEOUT: i64 = 30;
/// `options attempts:` above this is taken as this (glibc's `RES_MAXRETRY`).
const MAX_ATTEMPTS: i64 = 5;

/// What a lookup needs from `/etc/resolv.conf` (or from `nameservers:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` values as written, in order (the port is
    /// [`ResolvConf::port`]).
    pub servers: Vec<String>,
    /// `search` (or `domain`) suffixes, in order.
    pub search: Vec<String>,
    /// A name with more labels than this is tried as given before the
    /// search suffixes (default 1, at most 15).
    pub ndots: usize,
    /// How long one query waits for its answer (default 5 s).
    pub timeout: Duration,
    /// How many times every server is asked before a name fails
    /// (default 2).
    pub attempts: usize,
}

impl Default for ResolvConf {
    /// miekg's (and Go's) defaults, with no server and no search list.
    fn default() -> Self {
        ResolvConf {
            servers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

impl ResolvConf {
    /// The port every `nameserver` is asked on.
    pub const PORT: u16 = 53;

    /// Reads `path`: a regular file of at most 64 KiB. Blocking.
    pub fn load(path: &Path) -> Result<ResolvConf, String> {
        let fail =
            |e: std::io::Error| format!("could not load resolv.conf: {}: {e}", path.display());
        let file = std::fs::File::open(path).map_err(fail)?;
        let meta = file.metadata().map_err(fail)?;
        if !meta.is_file() {
            return Err(format!(
                "could not load resolv.conf: {}: not a regular file",
                path.display()
            ));
        }
        let mut bytes = Vec::new();
        file.take(MAX_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(fail)?;
        if bytes.len() as u64 > MAX_SIZE {
            return Err(format!(
                "could not load resolv.conf: {}: larger than {} KiB",
                path.display(),
                MAX_SIZE / 1024
            ));
        }
        Ok(ResolvConf::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// Parses resolv.conf text as miekg's `ClientConfigFromReader` does:
    /// `nameserver`, `domain`, `search`, `options ndots: timeout:
    /// attempts:`; anything else (comments included) is skipped.
    pub fn parse(text: &str) -> ResolvConf {
        let mut c = ResolvConf::default();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.first().copied() {
                Some("nameserver") => {
                    if let Some(server) = f.get(1) {
                        c.servers.push(server.to_string());
                    }
                }
                Some("domain") => c.search = f.get(1).map(|d| d.to_string()).into_iter().collect(),
                Some("search") => c.search = f[1..].iter().map(|s| s.to_string()).collect(),
                Some("options") => {
                    for s in &f[1..] {
                        if let Some(n) = s.strip_prefix("ndots:") {
                            c.ndots = atoi(n).clamp(0, 15) as usize;
                        } else if let Some(n) = s.strip_prefix("timeout:") {
                            let n = atoi(n).clamp(1, MAX_TIMEOUT);
                            c.timeout = Duration::from_secs(n as u64);
                        } else if let Some(n) = s.strip_prefix("attempts:") {
                            c.attempts = atoi(n).clamp(1, MAX_ATTEMPTS) as usize;
                        }
                    }
                }
                _ => {}
            }
        }
        c
    }

    /// The names tried for `name`, in order (miekg's `NameList`): a fully
    /// qualified name alone; otherwise the name itself first when it has
    /// more labels than `ndots`, then with each search suffix, then the
    /// name itself when it had not enough labels. All fully qualified.
    pub fn name_list(&self, name: &str) -> Vec<String> {
        if is_fqdn(name) {
            return vec![name.to_string()];
        }
        let has_ndots = count_label(name) > self.ndots;
        let name = fqdn(name);
        let mut names = Vec::new();
        if has_ndots {
            names.push(name.clone());
        }
        for s in &self.search {
            names.push(fqdn(&format!("{name}{s}")));
        }
        if !has_ndots {
            names.push(name);
        }
        names
    }
}

/// Go's `strconv.Atoi` as miekg uses it (its error ignored): an optional
/// sign and decimal digits, saturating on overflow; anything else is 0.
fn atoi(s: &str) -> i64 {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    match digits.parse::<i64>() {
        Ok(n) if negative => -n,
        Ok(n) => n,
        Err(_) if negative => i64::MIN,
        Err(_) => i64::MAX,
    }
}

/// miekg's `IsFqdn`: ends with a dot that is not escaped.
pub fn is_fqdn(s: &str) -> bool {
    let Some(s2) = s.strip_suffix('.') else {
        return false;
    };
    // Go's strings.LastIndexFunc(s2, r != '\\'): the byte index where the
    // last rune that is not a backslash starts, or -1.
    let i = s2
        .char_indices()
        .rev()
        .find(|(_, c)| *c != '\\')
        .map_or(-1, |(i, _)| i as i64);
    (s2.len() as i64 - i) % 2 != 0
}

/// miekg's `Fqdn`: the name with a final dot.
pub fn fqdn(s: &str) -> String {
    if is_fqdn(s) {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

/// miekg's `CountLabel`: labels in a presentation-format name, escaped
/// dots (`\.`) not counting as separators; `"."` has none, `""` one.
pub fn count_label(s: &str) -> usize {
    if s == "." {
        return 0;
    }
    let b = s.as_bytes();
    let mut labels = 0;
    let mut off = 0;
    loop {
        let (next, end) = next_label(b, off);
        labels += 1;
        if end {
            return labels;
        }
        off = next;
    }
}

/// miekg's `NextLabel`.
fn next_label(s: &[u8], offset: usize) -> (usize, bool) {
    if s.is_empty() {
        return (0, true);
    }
    let mut i = offset;
    while i + 1 < s.len() {
        if s[i] == b'.' {
            let backslashes = s[..i].iter().rev().take_while(|&&c| c == b'\\').count();
            if backslashes % 2 == 0 {
                return (i + 1, false);
            }
        }
        i += 1;
    }
    (i + 1, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_read_as_miekg_reads_it() {
        let c = ResolvConf::parse(
            "# generated\n; comment\nnameserver 127.0.0.1\nnameserver ::1 # inline\r\nnameserver\n\
             domain first.example\nsearch b.example c.example.\noptions rotate ndots:3 timeout:0 attempts:9\n\
             bogus line\n",
        );
        assert_eq!(c.servers, ["127.0.0.1", "::1"]);
        assert_eq!(c.search, ["b.example", "c.example."]);
        assert_eq!(c.ndots, 3);
        assert_eq!(
            c.timeout,
            Duration::from_secs(1),
            "timeout:0 is 1, as in miekg"
        );
        assert_eq!(c.attempts, MAX_ATTEMPTS as usize);
        // `domain` after `search` replaces it; a bare `search` empties it.
        assert_eq!(ResolvConf::parse("search a b\ndomain d\n").search, ["d"]);
        assert!(ResolvConf::parse("search a b\nsearch\n").search.is_empty());
        assert!(ResolvConf::parse("search a\ndomain\n").search.is_empty());
        // Defaults, and miekg's clamps and Atoi.
        let d = ResolvConf::parse("");
        assert_eq!((d.ndots, d.timeout.as_secs(), d.attempts), (1, 5, 2));
        let c = ResolvConf::parse("options ndots:99 timeout:7 attempts:x\n");
        assert_eq!((c.ndots, c.timeout.as_secs(), c.attempts), (15, 7, 1));
        let c = ResolvConf::parse("options ndots:-2 timeout:99999999999999999999\n");
        assert_eq!((c.ndots, c.timeout.as_secs()), (0, MAX_TIMEOUT as u64));
        assert_eq!(ResolvConf::parse("options ndots:+2\n").ndots, 2);
        assert_eq!(ResolvConf::parse("options ndots:2x\n").ndots, 0);
    }

    #[test]
    fn name_lists_follow_ndots_and_the_search_list() {
        let c = ResolvConf::parse("search a.example b.example.\noptions ndots:2\n");
        assert_eq!(c.name_list("db.internal."), ["db.internal."]);
        assert_eq!(
            c.name_list("db"),
            ["db.a.example.", "db.b.example.", "db."],
            "too few labels: suffixes first"
        );
        assert_eq!(
            c.name_list("_x._tcp.db"),
            [
                "_x._tcp.db.",
                "_x._tcp.db.a.example.",
                "_x._tcp.db.b.example."
            ],
            "more labels than ndots: as given first"
        );
        // Two labels are not more than ndots:2.
        assert_eq!(c.name_list("db.x")[2], "db.x.");
        let none = ResolvConf::default();
        assert_eq!(none.name_list("web"), ["web."]);
        assert_eq!(none.name_list(""), ["."]);
    }

    #[test]
    fn labels_and_dots_are_counted_as_miekg_counts_them() {
        for (name, labels) in [
            (".", 0),
            ("", 1),
            ("a", 1),
            ("a.b", 2),
            ("a.b.", 2),
            ("a\\.b", 1),
            ("a\\\\.b", 2),
            ("a..b", 3),
        ] {
            assert_eq!(count_label(name), labels, "{name:?}");
        }
        for (name, fq) in [
            ("a.", true),
            ("a", false),
            ("a\\.", false),
            ("a\\\\.", true),
            (".", true),
            ("", false),
        ] {
            assert_eq!(is_fqdn(name), fq, "{name:?}");
        }
        assert_eq!(fqdn("a\\."), "a\\..");
        assert_eq!(fqdn("a."), "a.");
        // Go's quirk, kept: the byte index of the last rune that is not a
        // backslash, so an even-sized last rune reads as an escaped dot.
        assert!(!is_fqdn("café."));
        assert!(is_fqdn("서비스."));
    }

    #[test]
    fn a_resolv_conf_that_is_not_a_small_regular_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ResolvConf::load(dir.path()).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; MAX_SIZE as usize + 1]).unwrap();
        assert!(ResolvConf::load(&big)
            .unwrap_err()
            .contains("larger than 64 KiB"));
        let missing = ResolvConf::load(&dir.path().join("none")).unwrap_err();
        assert!(
            missing.starts_with("could not load resolv.conf"),
            "{missing}"
        );
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "nameserver 127.0.0.1\n").unwrap();
        assert_eq!(ResolvConf::load(&ok).unwrap().servers, ["127.0.0.1"]);
    }
}
