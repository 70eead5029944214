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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::Semaphore;

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
    /// One permit per request in flight: a request holding one always finds
    /// an idle connection or a free connection slot, so it never waits
    /// inside the pool.
    pub requests: Arc<Semaphore>,
    limit: Mutex<usize>,
}

impl ServerSlots {
    /// The limit in force.
    pub fn limit(&self) -> usize {
        *self.limit.lock().unwrap_or_else(|e| e.into_inner())
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
