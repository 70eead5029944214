//! Connection and request slots shared per server, across every source and
//! watcher that talks to it. Consul agents refuse more than 200
//! connections per client address, so seven `consul_sd_configs` with 32
//! each must not open 224: the bound is per server, not per config.
//!
//! A server is (scheme, host and port, TLS server name). When configs give
//! different limits for one server, the smallest wins: the first client
//! creates the slots, a client with a smaller limit shrinks them (waiting
//! for slots in use to come back). They grow again only once every client
//! of that server is gone (a restart, or a reload that replaces them all).
//!
//! Each client has a pool of its own (clients' TLS settings may differ),
//! so a connection left idle in one pool would keep its slot from every
//! other client of the server: with 4 slots, 12 http_sd sources of one
//! upstream saw 4 of them sync and the others fail for ever with "no free
//! connection slot" (issue 17). So the server also knows its open
//! connections ([`Lease`]), and a connect that finds no free slot closes
//! the one idle longest, whatever pool holds it
//! ([`ServerSlots::evict_idle`]): slots are handed over, never kept by a
//! connection nobody uses.
//!
//! Slots are per server as written: `localhost:80` and `127.0.0.1:80`
//! are two servers with slots of their own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// How long a connection must have been idle before it may be closed for
/// another: one just opened or just handed back is about to carry a
/// request (the pool gives it out before the request is written).
pub const IDLE_GRACE: Duration = Duration::from_millis(250);

/// Which server slots are shared for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    /// `http` or `https`.
    pub scheme: String,
    /// `host:port` as configured.
    pub authority: String,
    /// The TLS server name, when set apart from the host.
    pub server_name: String,
}

/// The slots of one server.
#[derive(Debug)]
pub struct ServerSlots {
    /// One permit per open connection.
    pub connections: Arc<Semaphore>,
    /// One permit per request in flight, as many as connection slots: a
    /// request holding one always finds an idle connection in its pool, a
    /// free slot, or an idle connection of another pool to close for one,
    /// so it never waits long inside the pool.
    pub requests: Arc<Semaphore>,
    limit: Mutex<usize>,
    /// The open connections, whatever client's pool holds them, so that an
    /// idle one can be closed for a connect that finds no free slot.
    open: Mutex<Vec<Weak<Lease>>>,
}

/// What the server knows of one open connection: whether a request is on
/// it, and a way to close it from outside its pool.
#[derive(Debug)]
pub struct Lease {
    /// A request is on it: set when one is written, cleared once its
    /// answer has been read ([`Lease::idle`]).
    busy: AtomicBool,
    /// Since when it has been idle (opened or handed back).
    idle_since: Mutex<Instant>,
    /// Asked to close: its next read or write fails, so its pool drops it
    /// (and its slot).
    evicted: AtomicBool,
    /// The task reading it (an idle connection's keeps reading, to see
    /// the server close it), woken when it is evicted.
    reader: Mutex<Option<Waker>>,
}

impl Lease {
    fn new() -> Lease {
        Lease {
            busy: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            evicted: AtomicBool::new(false),
            reader: Mutex::new(None),
        }
    }

    /// A request is being written on it.
    pub fn busy(&self) {
        self.busy.store(true, Ordering::SeqCst);
    }

    /// Its answer has been read (or abandoned): it may go to another.
    pub fn idle(&self) {
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.busy.store(false, Ordering::SeqCst);
    }

    /// Whether it was asked to close; `reader` is woken when it is.
    pub fn evicted(&self, reader: &Waker) -> bool {
        let mut slot = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(reader)) {
            *slot = Some(reader.clone());
        }
        self.evicted.load(Ordering::SeqCst)
    }

    /// Whether it was asked to close.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Since when it has been idle, if it is and has not been evicted.
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.busy.load(Ordering::SeqCst) || self.evicted.load(Ordering::SeqCst) {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        Some(now.saturating_duration_since(since))
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = reader {
            w.wake();
        }
    }
}

impl ServerSlots {
    /// The limit in force.
    pub fn limit(&self) -> usize {
        *self.limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection just opened (holding one of the slots).
    pub fn opened(&self) -> Arc<Lease> {
        let lease = Arc::new(Lease::new());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|w| w.strong_count() > 0);
        open.push(Arc::downgrade(&lease));
        lease
    }

    /// Closes the connection idle longest (for at least [`IDLE_GRACE`]),
    /// whichever pool holds it, so its slot comes free. Returns whether
    /// there was one.
    pub fn evict_idle(&self) -> bool {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|w| w.strong_count() > 0);
        let oldest = open
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|l| l.idle_for(now).map(|d| (d, l)))
            .filter(|(d, _)| *d >= IDLE_GRACE)
            .max_by_key(|(d, _)| *d);
        match oldest {
            Some((_, lease)) => {
                lease.evict();
                true
            }
            None => false,
        }
    }

    fn shrink_to(&self, limit: usize) {
        let mut current = self.limit.lock().unwrap_or_else(|e| e.into_inner());
        if limit >= *current {
            return;
        }
        let excess = (*current - limit) as u32;
        *current = limit;
        for semaphore in [&self.connections, &self.requests] {
            match semaphore.clone().try_acquire_many_owned(excess) {
                Ok(permits) => permits.forget(),
                Err(_) => {
                    // Some are in use: take them as they come back.
                    let semaphore = semaphore.clone();
                    tokio::spawn(async move {
                        if let Ok(permits) = semaphore.acquire_many_owned(excess).await {
                            permits.forget();
                        }
                    });
                }
            }
        }
    }
}

type Registry = Mutex<HashMap<ServerKey, Weak<ServerSlots>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The slots of `server`, with at most `limit` connections and requests
/// (or fewer, if another client asked for fewer). Must run inside a tokio
/// runtime (shrinking may wait for slots in use).
pub fn for_server(server: ServerKey, limit: usize) -> Arc<ServerSlots> {
    let limit = limit.max(1);
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(slots) = map.get(&server).and_then(Weak::upgrade) {
        slots.shrink_to(limit);
        return slots;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let slots = Arc::new(ServerSlots {
        connections: Arc::new(Semaphore::new(limit)),
        requests: Arc::new(Semaphore::new(limit)),
        limit: Mutex::new(limit),
        open: Mutex::default(),
    });
    map.insert(server, Arc::downgrade(&slots));
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> ServerKey {
        ServerKey {
            scheme: "http".into(),
            authority: format!("127.0.0.1:{port}"),
            server_name: String::new(),
        }
    }

    #[tokio::test]
    async fn one_server_shares_slots_and_the_smallest_limit_wins() {
        let a = for_server(key(1), 8);
        let b = for_server(key(1), 4);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.limit(), 4);
        assert_eq!(a.connections.available_permits(), 4);
        let c = for_server(key(1), 16);
        assert_eq!(c.limit(), 4, "a larger limit does not grow it");
        let other = for_server(key(2), 8);
        assert_eq!(other.limit(), 8, "another server has its own");
        drop((a, b, c));
        assert_eq!(
            for_server(key(1), 16).limit(),
            16,
            "fresh once all are gone"
        );
    }

    #[tokio::test]
    async fn shrinking_waits_for_slots_in_use() {
        let a = for_server(key(3), 4);
        let held = a.connections.clone().acquire_many_owned(4).await.unwrap();
        let b = for_server(key(3), 2);
        assert_eq!(b.limit(), 2);
        drop(held);
        tokio::task::yield_now().await;
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while a.connections.available_permits() != 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("two slots taken back");
    }
}
