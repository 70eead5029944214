//! Who may ask: basic auth with bcrypt hashes, as exporter-toolkit's
//! `webHandler` does it, and sdbridge's bearer tokens file.
//!
//! - A bcrypt check costs milliseconds of CPU by design. Its outcome, good
//!   or bad, is cached under a SHA-256 of (user, hash, password) as
//!   exporter-toolkit does, so a scraper polling every few seconds pays it
//!   once; a changed hash or password misses the cache.
//! - Checks that miss run on the blocking pool, at most
//!   [`bcrypt_slots`] at once, so a flood of wrong passwords queues behind
//!   itself while cached and token requests, and the async workers, go on.
//! - An unknown user is checked against a fixed hash, so timing does not
//!   tell which users exist (exporter-toolkit's "fakepassword" hash).
//! - Tokens are kept only as SHA-256 digests and compared in constant time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::config::WebConfig;
use super::watched::Watched;

/// exporter-toolkit's bcrypt hash of "fakepassword", checked for unknown
/// users so they take as long as known ones.
const UNKNOWN_USER_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// Cached bcrypt outcomes kept; past it a tenth is dropped.
const CACHE_SIZE: usize = 1024;

/// How many bcrypt checks run at once: half the cores, at least one, so
/// the other half keeps answering.
pub fn bcrypt_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

type Digest = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Digest {
    // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    let mut input = Vec::new();
    for part in parts {
        input.extend_from_slice(&(part.len() as u64).to_be_bytes());
        input.extend_from_slice(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, &input).as_ref());
    out
}

/// The accepted bearer tokens, as digests.
#[derive(Debug, Default)]
pub struct Tokens(Vec<Digest>);

impl Tokens {
    /// One token per line; blank lines and lines starting with `#` are
    /// skipped, surrounding whitespace is not part of a token.
    pub fn parse(contents: &[Vec<u8>]) -> Result<Tokens, String> {
        let text = contents.first().map(Vec::as_slice).unwrap_or_default();
        Ok(Tokens(
            text.split(|&b| b == b'\n')
                .map(<[u8]>::trim_ascii)
                .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
                .map(|token| sha256(&[token]))
                .collect(),
        ))
    }

    fn accepts(&self, token: &[u8]) -> bool {
        let presented = sha256(&[token]);
        // Look at every entry, whatever matches, in constant time each.
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, t| {
                found | t.ct_eq(&presented)
            })
            .into()
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The credentials a request must carry; built from `web:` at start and
/// on every reload.
#[derive(Debug)]
pub struct Auth {
    users: HashMap<String, String>,
    tokens: Option<Watched<Tokens>>,
    cache: Mutex<HashMap<Digest, bool>>,
    /// Shared across reloads so the bound holds whatever reloads happen.
    bcrypt: Arc<Semaphore>,
    /// Checks running now and the most seen at once (the bound's proof).
    running: Arc<Running>,
    challenges: Vec<HeaderValue>,
}

/// Counts bcrypt checks in progress and the most at once.
#[derive(Debug, Default)]
pub struct Running {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Running {
    fn enter(self: &Arc<Self>) -> RunningGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        RunningGuard(self.clone())
    }

    /// The most checks that ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

struct RunningGuard(Arc<Running>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Auth {
    /// `None` when `web` asks for no authentication. Reads the tokens
    /// file; an error names it.
    pub fn new(web: &WebConfig, bcrypt: Arc<Semaphore>) -> Result<Option<Auth>, String> {
        if !web.auth_enabled() {
            return Ok(None);
        }
        let tokens = match &web.bearer_tokens_file {
            Some(path) => {
                let tokens = Watched::open(vec![PathBuf::from(path)], Tokens::parse)
                    .map_err(|e| format!("bearer_tokens_file: {e}"))?;
                if tokens.get().is_empty() {
                    tracing::warn!(file = %path, "bearer_tokens_file holds no token");
                }
                Some(tokens)
            }
            None => None,
        };
        let mut challenges = Vec::new();
        if !web.basic_auth_users.is_empty() {
            challenges.push(HeaderValue::from_static("Basic realm=\"sdbridge\""));
        }
        if tokens.is_some() {
            challenges.push(HeaderValue::from_static("Bearer realm=\"sdbridge\""));
        }
        Ok(Some(Auth {
            users: web
                .basic_auth_users
                .iter()
                .map(|(user, hash)| (user.clone(), hash.0.clone()))
                .collect(),
            tokens,
            cache: Mutex::new(HashMap::new()),
            bcrypt,
            running: Arc::default(),
            challenges,
        }))
    }

    /// The most bcrypt checks that ran at once since this was built.
    pub fn bcrypt_peak(&self) -> usize {
        self.running.peak()
    }

    /// The `WWW-Authenticate` values of a 401.
    pub fn challenges(&self) -> &[HeaderValue] {
        &self.challenges
    }

    /// Whether the request's `Authorization` is good.
    pub async fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes) else {
            return false;
        };
        // HTTP/2 keeps the leading space of an empty `type`.
        let value = value.trim_ascii();
        let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
            Some(space) => (&value[..space], &value[space + 1..]),
            // Debian's Prometheus 2.42 sends an http_sd_configs
            // `authorization` without `type:` as the bare credentials.
            None => (&b"bearer"[..], value),
        };
        if scheme.eq_ignore_ascii_case(b"basic") && !self.users.is_empty() {
            match basic_credentials(rest) {
                Some((user, password)) => self.basic(&user, &password).await,
                None => false,
            }
        } else if scheme.eq_ignore_ascii_case(b"bearer") {
            self.tokens
                .as_ref()
                .is_some_and(|tokens| tokens.get().accepts(rest.trim_ascii()))
        } else {
            false
        }
    }

    async fn basic(&self, user: &str, password: &[u8]) -> bool {
        let (known, hash) = match self.users.get(user) {
            Some(hash) => (true, hash.as_str()),
            None => (false, UNKNOWN_USER_HASH),
        };
        let key = sha256(&[user.as_bytes(), hash.as_bytes(), password]);
        if let Some(&ok) = self.cached().get(&key) {
            return ok && known;
        }
        let Ok(slot) = self.bcrypt.clone().acquire_owned().await else {
            return false;
        };
        // Another request with the same credentials may have finished
        // while this one waited.
        if let Some(&ok) = self.cached().get(&key) {
            return ok && known;
        }
        // Copied only for a check that misses the cache. The slot moves
        // into the check: a client that hangs up drops this future, not
        // the check, so the slot is held as long as bcrypt runs.
        let (password, hash) = (password.to_vec(), hash.to_string());
        let running = self.running.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _running = running.enter();
            bcrypt::verify(password, &hash)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
        let ok = verified && known;
        let mut cache = self.cached();
        if cache.len() >= CACHE_SIZE {
            let drop: Vec<Digest> = cache.keys().take(CACHE_SIZE / 10).copied().collect();
            for k in drop {
                cache.remove(&k);
            }
        }
        cache.insert(key, ok);
        ok
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, bool>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `user:password` from the base64 after `Basic `, as Go's
/// `Request.BasicAuth` reads it (split at the first colon).
fn basic_credentials(encoded: &[u8]) -> Option<(String, Vec<u8>)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(yaml: &str) -> Auth {
        let web: WebConfig = crate::yaml::from_str(yaml).unwrap();
        Auth::new(&web, Arc::new(Semaphore::new(1)))
            .unwrap()
            .unwrap()
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        with(&format!("Basic {encoded}"))
    }

    /// Regression: the slot was held by the request future, so a client
    /// that hung up freed it while its bcrypt check went on running, and
    /// every new wrong password started another check.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_that_hang_up_do_not_lift_the_bcrypt_bound() {
        let hash = bcrypt::hash("right", 10).unwrap();
        let a = Arc::new(auth(&format!("basic_auth_users: {{alice: '{hash}'}}")));
        for round in 0..3 {
            let checks: Vec<_> = (0..16)
                .map(|i| {
                    let a = a.clone();
                    tokio::spawn(async move {
                        let wrong = basic("alice", &format!("wrong-{round}-{i}"));
                        // The client hangs up long before bcrypt is done.
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_millis(5),
                            a.allows(&wrong),
                        )
                        .await;
                    })
                })
                .collect();
            for check in checks {
                check.await.unwrap();
            }
        }
        // Let the checks already started finish.
        let _ = a.bcrypt.acquire().await;
        assert!(a.bcrypt_peak() >= 1, "no check ran at all");
        assert_eq!(a.bcrypt_peak(), 1, "more checks ran at once than slots");
    }

    #[tokio::test]
    async fn basic_auth_checks_the_bcrypt_hash_and_caches_the_outcome() {
        let hash = bcrypt::hash("s3cret:x", 4).unwrap();
        let a = auth(&format!("basic_auth_users: {{alice: '{hash}'}}"));
        assert!(a.allows(&basic("alice", "s3cret:x")).await);
        assert!(
            a.allows(&with(&format!(
                "bAsIc {}",
                base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x")
            )))
            .await
        );
        assert!(!a.allows(&basic("alice", "s3cret")).await);
        assert!(!a.allows(&basic("bob", "s3cret:x")).await);
        assert!(!a.allows(&HeaderMap::new()).await);
        assert!(!a.allows(&with("Basic !!!")).await);
        assert!(!a.allows(&with("Bearer s3cret:x")).await);
        // Good, bad and unknown outcomes were cached; a cached bad one
        // stays bad.
        assert_eq!(a.cached().len(), 3);
        assert!(!a.allows(&basic("bob", "s3cret:x")).await);
    }

    #[tokio::test]
    async fn an_unknown_user_never_passes_even_with_the_decoy_password() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let a = auth(&format!("basic_auth_users: {{alice: '{hash}'}}"));
        assert!(!a.allows(&basic("mallory", "fakepassword")).await);
    }

    #[tokio::test]
    async fn tokens_are_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# rotated monthly\n  tok-a  \n\ntok-b\n").unwrap();
        let a = auth(&format!("bearer_tokens_file: {}", path.display()));
        assert!(a.allows(&with("Bearer tok-a")).await);
        assert!(a.allows(&with("bearer tok-b")).await);
        assert!(!a.allows(&with("Bearer tok-c")).await);
        assert!(!a.allows(&with("Bearer # rotated monthly")).await);
        assert!(!a.allows(&with("Bearer ")).await);
        // No scheme: taken as a token (Debian's Prometheus 2.42 sends so).
        assert!(a.allows(&with("tok-a")).await);
        assert!(!a.allows(&with("tok-c")).await);
        // What HTTP/2 delivers of `type: ""` (a header value cannot start
        // with a space on HTTP/1, so build it by hand).
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_bytes(b" tok-a").unwrap());
        assert!(a.allows(&h).await);
        // No basic users configured: basic credentials are not looked at.
        assert!(!a.allows(&basic("tok-a", "tok-a")).await);
        assert_eq!(a.challenges().len(), 1);
    }
}
