//! Accepting and driving connections: how many are served at once, and
//! how long one may hold its place without asking for anything.
//!
//! - At most [`MAX_CONNECTIONS`] connections are served; more wait in the
//!   kernel's accept queue. When all are taken, up to
//!   [`PROBE_CONNECTIONS`] more are accepted for `/-/healthy` and
//!   `/-/ready` only (anything else gets `503`), one request each, so an
//!   orchestrator's probes still answer on a full server.
//! - A connection with no request in progress is closed after
//!   [`IDLE_TIMEOUT`]: from accept to its first request (the TLS handshake
//!   included; hyper-util's protocol sniffing has no timer of its own),
//!   and between requests (hyper's HTTP/1 header timer covers only the
//!   head once a byte arrived; HTTP/2 has no idle limit at all). HTTP/2
//!   connections are also pinged, so a dead peer of a long answer goes.
//! - Shutdown: connections finish what they are answering, for at most
//!   [`GRACE`], then are dropped.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONNECTION, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{error, respond, AppState};
use crate::chain::ChainBody;

/// Most connections served at once; more wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections accepted past [`MAX_CONNECTIONS`] for probes only.
pub const PROBE_CONNECTIONS: usize = 64;
/// How long a connection may go without a request in progress.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a probe-only connection may stay silent.
const PROBE_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request head may take once its first byte arrived.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings: how often when quiet, and how long an answer may take.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Largest request head (request line and headers) read.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// First pause after a failed `accept` (out of file descriptors).
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// Longest pause between `accept` retries.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish on shutdown, or on an idle
/// close.
pub const GRACE: Duration = Duration::from_secs(5);

/// The bounds `run` keeps (`limits:` in the config).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections served at once, besides the probe-only ones.
    pub max_connections: usize,
    /// How long a connection may go without a request in progress.
    pub idle_timeout: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_connections: MAX_CONNECTIONS,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then lets in-flight
/// connections finish for a short grace period.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    bounds: Bounds,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let max_connections = bounds.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max_connections));
    let probe_permits = Arc::new(Semaphore::new(PROBE_CONNECTIONS));
    let stop = CancellationToken::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // Request heads over 64 KiB get 431 (CONTRACT section 4).
        .max_buf_size(MAX_REQUEST_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE)
        .max_header_list_size(MAX_REQUEST_HEAD as u32);
    let mut probe_builder = builder.clone();
    probe_builder.http1().keep_alive(false);
    tokio::pin!(shutdown);
    let mut accept_delay: Option<Duration> = None;
    loop {
        let slot = tokio::select! {
            slot = Slot::acquire(&permits, &probe_permits) => slot,
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    if accept_delay.is_some() {
                        tracing::info!("accepting connections again");
                        accept_delay = None;
                    }
                    conn
                }
                Err(e) => {
                    // Usually EMFILE: the pending connection stays queued,
                    // so retrying at once would spin. Back off, doubling.
                    let delay = accept_delay.map_or(ACCEPT_BACKOFF_FIRST, |d| (d * 2).min(ACCEPT_BACKOFF_MAX));
                    if accept_delay != Some(delay) {
                        tracing::warn!(error = %e, retry_in = ?delay, "accept failed");
                    }
                    accept_delay = Some(delay);
                    drop(slot);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        // A body goes out in several writes (a chain of parts, TLS
        // records): without TCP_NODELAY, Nagle's algorithm holds a short
        // last write (the closing `]`) until the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let web = state.web.load_full();
        let probes_only = slot.probes_only();
        let mut builder = if probes_only {
            probe_builder.clone()
        } else {
            builder.clone()
        };
        if !web.http2 {
            builder = builder.http1_only();
        }
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let activity = Arc::new(Activity::new());
            let service = {
                let activity = activity.clone();
                service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    let _active = activity.begin();
                    async move {
                        let _active = _active;
                        if probes_only && !super::is_probe(req.uri().path()) {
                            return Ok::<_, Infallible>(busy());
                        }
                        Ok(respond(&state, req).await)
                    }
                })
            };
            let idle = if probes_only {
                PROBE_IDLE_TIMEOUT.min(bounds.idle_timeout)
            } else {
                bounds.idle_timeout
            };
            // The handshake runs here, not in the accept loop, so a slow
            // client holds up only itself.
            let served = match &web.tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    drive(connection, &activity, idle, &stop).await
                }
                Some(tls) => {
                    let accept = tokio_rustls::TlsAcceptor::from(tls.clone()).accept(stream);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT.min(idle), accept).await {
                        Ok(Ok(stream)) => {
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service);
                            drive(connection, &activity, idle, &stop).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    stop.cancel();
    // Every connection holds a permit until it is done.
    let all_done = async {
        let _ = permits.acquire_many(max_connections as u32).await;
        let _ = probe_permits.acquire_many(PROBE_CONNECTIONS as u32).await;
    };
    tokio::select! {
        () = all_done => {}
        () = tokio::time::sleep(GRACE) => tracing::warn!("shutdown grace period over; closing connections"),
    }
    Ok(())
}

/// A connection's place: one of the [`MAX_CONNECTIONS`], or a probe-only
/// one when those are all taken.
struct Slot {
    /// Given back when the connection ends.
    _permit: OwnedSemaphorePermit,
    probes_only: bool,
}

impl Slot {
    async fn acquire(full: &Arc<Semaphore>, probe: &Arc<Semaphore>) -> Slot {
        let slot = |permit, probes_only| Slot {
            _permit: permit,
            probes_only,
        };
        if let Ok(permit) = full.clone().try_acquire_owned() {
            return slot(permit, false);
        }
        tokio::select! {
            biased;
            Ok(permit) = full.clone().acquire_owned() => slot(permit, false),
            Ok(permit) = probe.clone().acquire_owned() => slot(permit, true),
        }
    }

    fn probes_only(&self) -> bool {
        self.probes_only
    }
}

/// The answer on a probe-only connection to anything but a probe.
fn busy() -> Response<ChainBody> {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many connections; only /-/healthy and /-/ready are answered now",
    );
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Whether a connection is answering, and since when it is not.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` when the last request ended (0: none).
    quiet_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> Active {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Active(self.clone())
    }

    /// When the connection goes idle for good, unless a request starts.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.quiet_since.load(Ordering::SeqCst));
        Some(self.epoch + since + idle)
    }
}

/// A request in progress; its drop marks the end.
struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.quiet_since.store(ms.max(1), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one connection until it ends, it idles past `idle`, or the server
/// stops; the last two shut it down gracefully, then drop it after
/// [`GRACE`].
async fn drive<C: GracefulConnection>(
    connection: C,
    activity: &Activity,
    idle: Duration,
    stop: &CancellationToken,
) -> Result<(), C::Error> {
    tokio::pin!(connection);
    // How often an idle deadline is looked at again while requests run.
    const RECHECK: Duration = Duration::from_secs(1);
    let mut closing: Option<Instant> = None;
    loop {
        let wake = match closing {
            Some(deadline) => deadline,
            None => activity
                .idle_deadline(idle)
                .unwrap_or_else(|| Instant::now() + RECHECK),
        };
        tokio::select! {
            served = connection.as_mut() => return served,
            () = stop.cancelled(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + GRACE);
            }
            () = tokio::time::sleep_until(wake) => match closing {
                Some(_) => return Ok(()),
                None => {
                    if activity.idle_deadline(idle).is_some_and(|d| d <= Instant::now()) {
                        tracing::debug!(?idle, "closing an idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + GRACE);
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_deadline_waits_for_requests_in_progress() {
        let activity = Arc::new(Activity::new());
        let start = Instant::now();
        assert_eq!(
            activity.idle_deadline(IDLE_TIMEOUT),
            Some(start + IDLE_TIMEOUT)
        );
        let active = activity.begin();
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(activity.idle_deadline(IDLE_TIMEOUT), None);
        drop(active);
        let deadline = activity.idle_deadline(IDLE_TIMEOUT).unwrap();
        assert!(deadline >= start + Duration::from_secs(100) + IDLE_TIMEOUT);
    }
}
