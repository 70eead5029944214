//! The merger's gzip thread.

use std::sync::{Arc, Condvar, Mutex};

use crate::snapshot::Rendered;

/// One thread compressing new bodies, latest first in spirit: a body that
/// was superseded before its turn (nobody else holds it) is skipped, so a
/// burst of changes costs one compression per job, not one per change. It
/// sleeps until there is work (no timer), and ends with the merger.
pub(super) struct Compressor {
    queue: Arc<(Mutex<Pending>, Condvar)>,
}

#[derive(Default)]
struct Pending {
    bodies: Vec<Arc<Rendered>>,
    closed: bool,
}

impl Compressor {
    pub(super) fn spawn() -> Compressor {
        let queue: Arc<(Mutex<Pending>, Condvar)> = Arc::default();
        let worker = queue.clone();
        crate::fatal::spawn("gzip", move || {
            let mut chunks = crate::gzip::Chunks::default();
            loop {
                let (lock, ready) = &*worker;
                let mut pending = lock.lock().unwrap_or_else(|e| e.into_inner());
                while pending.bodies.is_empty() && !pending.closed {
                    pending = ready.wait(pending).unwrap_or_else(|e| e.into_inner());
                }
                if pending.bodies.is_empty() {
                    return;
                }
                let batch = std::mem::take(&mut pending.bodies);
                drop(pending);
                crate::fatal::test_panic("gzip");
                for rendered in batch {
                    // Superseded while waiting: nobody can serve it.
                    if Arc::strong_count(&rendered) > 1 {
                        rendered.compress_with(&mut chunks);
                    }
                }
                chunks.rotate();
            }
        });
        Compressor { queue }
    }

    pub(super) fn push(&self, fresh: Vec<Arc<Rendered>>) {
        if fresh.is_empty() {
            return;
        }
        let (lock, ready) = &*self.queue;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .bodies
            .extend(fresh);
        ready.notify_one();
    }
}

impl Drop for Compressor {
    fn drop(&mut self) {
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        ready.notify_one();
    }
}
