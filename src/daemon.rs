//! Wiring: starts the merger and one task per source, serves HTTP, and
//! runs the one-shot `dump`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{self, AppState, ReloadRequest};
use crate::merge::{Merger, Publisher};
use crate::metrics::Metrics;
use crate::pipeline::{JobLayout, Layout, Message, SourceLayout};
use crate::snapshot::Snapshot;
use crate::source::{self, Outbox, SlotId, SourceConfig, SourceContext};
use crate::state::{self, Persistence};
use crate::web::Web;

/// Queue depth between sources and the merger; sources wait when it is full.
const UPDATE_QUEUE: usize = 1024;

/// Errors that stop the daemon or a one-shot command.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The `web:` block names files that do not load.
    #[error("{path}: web: {message}")]
    Web {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The server loop failed.
    #[error("server: {0}")]
    Serve(std::io::Error),
    /// `dump --job` named a job the config does not have.
    #[error("no job named {0:?} in the config")]
    UnknownJob(String),
    /// `state_dir` cannot be used.
    #[error("{config}: {source}")]
    State {
        /// The config file.
        config: PathBuf,
        /// What is wrong with the directory.
        source: state::DirError,
    },
    /// `dump` gave up waiting for sources to complete a round.
    #[error("not synced after {seconds}s: {waiting}")]
    NotSynced {
        /// How long it waited.
        seconds: u64,
        /// The sources still syncing, with their problems.
        waiting: String,
    },
}

/// An empty, not-ready snapshot to serve before the first publish.
pub fn placeholder() -> Snapshot {
    Snapshot {
        jobs: Vec::new(),
        by_name: Default::default(),
        all: crate::merge::render(std::iter::empty(), &Bytes::new(), None),
        all_ready: false,
        generation: 0,
    }
}

/// The sources running now, and the merger they feed. A reload keeps every
/// source whose configuration is unchanged (same job, same config, secrets
/// included), as Prometheus's discovery manager keeps providers with equal
/// configs: no rescans, no re-sync, no new watches. Only changed and
/// removed sources stop.
pub struct Runtime {
    tx: mpsc::Sender<Message>,
    /// What the sources share (Consul's watchers), across reloads.
    shared: Arc<source::Shared>,
    metrics: Arc<Metrics>,
    running: Vec<Running>,
    next_slot: u64,
}

struct Running {
    job: String,
    name: String,
    config: SourceConfig,
    slot: SlotId,
    stop: CancellationToken,
}

/// What a reload did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Sources kept running.
    pub kept: usize,
    /// Sources started.
    pub started: usize,
    /// Sources stopped.
    pub stopped: usize,
}

impl Runtime {
    /// Starts the merger, publishing through `publisher` (and persisting
    /// through `persistence`), and every source of `config`.
    pub async fn start(
        config: &Config,
        publisher: &Arc<Publisher>,
        metrics: &Arc<Metrics>,
        persistence: Option<Persistence>,
    ) -> Runtime {
        let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
        let merger = Merger::empty(publisher.clone(), metrics.clone());
        match persistence {
            Some(p) => merger.with_state(p),
            None => merger,
        }
        .spawn(rx);
        let mut runtime = Runtime {
            tx,
            shared: Arc::default(),
            metrics: metrics.clone(),
            running: Vec::new(),
            next_slot: 0,
        };
        runtime.apply(config).await;
        runtime
    }

    /// Makes the running sources those of `config`.
    pub async fn apply(&mut self, config: &Config) -> Applied {
        let mut old = std::mem::take(&mut self.running);
        let mut layout = Layout {
            jobs: Vec::new(),
            state_dir: config.state_dir.clone(),
        };
        // Slots are never reused: those from here on are new sources.
        let first_new = SlotId(self.next_slot + 1);
        let mut applied = Applied::default();
        for job in &config.jobs {
            let sources = source::sources_of(job);
            let names = source::source_names(&sources);
            let mut job_layout = JobLayout {
                name: job.job_name.clone(),
                key: state::job_key(&job.job_name, source::key_parts(&sources)),
                sources: Vec::new(),
            };
            for (config, name) in sources.into_iter().zip(names) {
                let same = old.iter().position(|r| {
                    r.job == job.job_name && r.name == name && r.config.same(&*config)
                });
                let running = match same {
                    Some(i) => {
                        applied.kept += 1;
                        old.remove(i)
                    }
                    None => {
                        self.next_slot += 1;
                        Running {
                            job: job.job_name.clone(),
                            name,
                            config,
                            slot: SlotId(self.next_slot),
                            stop: CancellationToken::new(),
                        }
                    }
                };
                job_layout.sources.push(SourceLayout::new(
                    running.slot,
                    running.config.kind(),
                    running.name.clone(),
                    running.config.describe(),
                ));
                self.running.push(running);
            }
            layout.jobs.push(job_layout);
        }
        // The merger learns the slots before any new source can send.
        if self.tx.send(Message::Layout(layout)).await.is_err() {
            tracing::error!("the merger is gone");
        }
        applied.stopped = old.len();
        for running in old {
            running.stop.cancel();
        }
        for running in self.running.iter().filter(|r| r.slot >= first_new) {
            applied.started += 1;
            let ctx = SourceContext {
                out: Outbox::new(
                    running.slot,
                    &running.job,
                    (&running.name, running.config.kind()),
                    self.tx.clone(),
                )
                .with_metrics(self.metrics.clone()),
                shutdown: running.stop.clone(),
                shared: self.shared.clone(),
            };
            tokio::spawn(source::supervise(running.config.clone(), ctx));
        }
        applied
    }

    /// Stops every source; the merger ends once they are gone.
    pub fn stop(self) {
        for running in self.running {
            running.stop.cancel();
        }
    }
}

/// `sdbridge serve`: runs until SIGINT or SIGTERM; SIGHUP and
/// `POST /-/reload` reload the config at `path`.
pub async fn serve(
    path: PathBuf,
    config: Config,
    listen: Option<SocketAddr>,
) -> Result<(), RunError> {
    raise_open_files_limit();
    // Before anything can be seen from outside: a SIGTERM that arrives
    // once the port answers must be handled, not kill the process.
    let (mut term, mut int, mut hup) = (
        listen_for(SignalKind::terminate()),
        listen_for(SignalKind::interrupt()),
        listen_for(SignalKind::hangup()),
    );
    let bcrypt = Arc::new(Semaphore::new(crate::web::auth::bcrypt_slots()));
    let web = Web::new(&config.web, bcrypt.clone()).map_err(|message| RunError::Web {
        path: path.clone(),
        message,
    })?;
    let metrics = Arc::new(Metrics::new());
    // Off the async workers, and abandoned on SIGTERM/SIGINT: a slow or
    // hung disk under state_dir must not keep the daemon from stopping.
    let opening = tokio::task::spawn_blocking({
        let (path, metrics) = (path.clone(), metrics.clone());
        let (dir, jobs, max) = state_of(&config);
        move || open_state(&path, dir.as_deref(), &jobs, max, &metrics)
    });
    let persistence = tokio::select! {
        opened = opening => opened.map_err(|e| RunError::Serve(std::io::Error::other(e)))??,
        Some(()) = recv(&mut term) => {
            tracing::info!("SIGTERM while reading state_dir: stopping");
            return Ok(());
        }
        Some(()) = recv(&mut int) => {
            tracing::info!("SIGINT while reading state_dir: stopping");
            return Ok(());
        }
    };
    let writer = persistence.writer.clone();
    let addr = listen.unwrap_or(config.listen);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let publisher = Publisher::new(placeholder());
    let mut sources = Runtime::start(&config, &publisher, &metrics, Some(persistence)).await;
    let mut state_dir = config.state_dir.clone();
    // What only a restart applies, as the last successful reload had it,
    // to warn once per change.
    let (mut last_listen, mut last_limits) = (config.listen, config.limits);
    tracing::info!(
        addr = %local,
        jobs = config.jobs.len(),
        tls = web.tls.is_some(),
        auth = web.auth.is_some(),
        "listening"
    );
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let state = Arc::new(AppState {
        snapshot: publisher.snapshot.clone(),
        metrics: metrics.clone(),
        reload: Some(reload_tx),
        web: ArcSwap::from_pointee(web),
    });
    let stop = CancellationToken::new();
    let bounds = http::Bounds {
        max_connections: config.limits.max_connections,
        idle_timeout: config.limits.idle_timeout.0,
    };
    let server = tokio::spawn(http::run(
        listener,
        state.clone(),
        bounds,
        stop.clone().cancelled_owned(),
    ));
    loop {
        let reply = tokio::select! {
            Some(()) = recv(&mut term) => {
                tracing::info!("SIGTERM: shutting down");
                break;
            }
            Some(()) = recv(&mut int) => {
                tracing::info!("SIGINT: shutting down");
                break;
            }
            Some(()) = recv(&mut hup) => {
                tracing::info!("SIGHUP: reloading the configuration");
                None
            }
            request = reload_rx.recv() => match request {
                Some(reply) => Some(reply),
                None => continue,
            },
        };
        let loaded = Config::load(&path)
            .and_then(|new| {
                state_dir_for_reload(&path, &state_dir, &new)?;
                Ok(new)
            })
            .map_err(|e| e.to_string())
            .and_then(|new| {
                let web = Web::new(&new.web, bcrypt.clone())
                    .map_err(|e| format!("{}: web: {e}", path.display()))?;
                Ok((new, web))
            });
        let result = match loaded {
            Ok((new, mut web)) => {
                state_dir.clone_from(&new.state_dir);
                if !web.keep_mode_of(&state.web.load()) {
                    tracing::warn!("switching TLS on or off takes a restart; serving as before");
                }
                state.web.store(Arc::new(web));
                // Warned once per change, not on every later reload.
                if listen.is_none() && new.listen != last_listen {
                    tracing::warn!(listen = %new.listen, "the listen address changes only on restart");
                }
                if new.limits.max_connections != last_limits.max_connections
                    || new.limits.idle_timeout != last_limits.idle_timeout
                {
                    tracing::warn!(
                        "limits.max_connections and limits.idle_timeout change only on restart"
                    );
                }
                (last_listen, last_limits) = (new.listen, new.limits);
                let applied = sources.apply(&new).await;
                tracing::info!(
                    jobs = new.jobs.len(),
                    kept = applied.kept,
                    started = applied.started,
                    stopped = applied.stopped,
                    "configuration reloaded"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed; the running configuration stays");
                Err(e)
            }
        };
        metrics.reloaded(result.is_ok());
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
    stop.cancel();
    let result = server.await;
    sources.stop();
    // What is still waiting to be persisted is written now.
    writer.close();
    tracing::info!("stopped");
    match result {
        Ok(served) => served.map_err(RunError::Serve),
        Err(e) => Err(RunError::Serve(std::io::Error::other(e))),
    }
}

/// What [`open_state`] needs of `config`: its `state_dir`, each job's name
/// and key, and `limits.max_input_size`.
fn state_of(config: &Config) -> (Option<PathBuf>, Vec<(String, String)>, u64) {
    let jobs = config
        .jobs
        .iter()
        .map(|job| {
            let sources = source::sources_of(job);
            (
                job.job_name.clone(),
                state::job_key(&job.job_name, source::key_parts(&sources)),
            )
        })
        .collect();
    (
        config.state_dir.clone(),
        jobs,
        config.limits.max_input_size.0,
    )
}

/// The state writer, and the bodies `dir` holds for `jobs` (name, key),
/// each at most `max_body` bytes; an unusable `state_dir` stops the start.
fn open_state(
    path: &std::path::Path,
    dir: Option<&std::path::Path>,
    jobs: &[(String, String)],
    max_body: u64,
    metrics: &Arc<Metrics>,
) -> Result<Persistence, RunError> {
    let mut loaded = state::Loaded::new();
    if let Some(dir) = dir {
        state::prepare(dir).map_err(|source| RunError::State {
            config: path.to_path_buf(),
            source,
        })?;
        loaded = state::load(dir, jobs, max_body);
    }
    Ok(Persistence {
        writer: state::Writer::spawn(metrics.clone()),
        loaded,
    })
}

/// A reload to a new `state_dir` needs it usable, as a start would; it is
/// only written to from then on (bodies are read back only at start).
fn state_dir_for_reload(
    path: &std::path::Path,
    current: &Option<PathBuf>,
    new: &Config,
) -> Result<(), crate::config::ConfigError> {
    match &new.state_dir {
        Some(dir) if new.state_dir != *current => {
            state::prepare(dir).map_err(|e| crate::config::ConfigError::Read {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
            tracing::info!(state_dir = %dir.display(), "state_dir changed: bodies are written there from now on");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Raises the soft open-files limit to the hard one, as Go programs such
/// as Prometheus do at start: the default soft limit (often 1024) is below
/// [`http::MAX_CONNECTIONS`] plus the files and watches sources need.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(limit = ?limit.maximum, "raised the open-files limit"),
        Err(e) => {
            tracing::warn!(error = %e, soft = ?limit.current, "cannot raise the open-files limit")
        }
    }
}

/// A signal stream, or `None` (logged) if it cannot be had.
fn listen_for(kind: SignalKind) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for a signal");
            None
        }
    }
}

/// Receives one signal; pending forever if it cannot be listened for.
async fn recv(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// `sdbridge dump`: one discovery round of every source, then the body
/// that would be served (for `job`, or for all jobs).
pub async fn dump(
    config: Config,
    job: Option<&str>,
    timeout: std::time::Duration,
) -> Result<Bytes, RunError> {
    if let Some(name) = job {
        if !config.jobs.iter().any(|j| j.job_name == name) {
            return Err(RunError::UnknownJob(name.to_string()));
        }
    }
    let metrics = Arc::new(Metrics::new());
    let publisher = Publisher::new(placeholder());
    let sources = Runtime::start(&config, &publisher, &metrics, None).await;
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(10));
    let deadline = tokio::time::Instant::now() + timeout;
    let body = loop {
        ticker.tick().await;
        let snapshot = publisher.snapshot.load();
        if tokio::time::Instant::now() > deadline {
            sources.stop();
            let waiting: Vec<String> = snapshot
                .jobs
                .iter()
                .filter(|j| job.is_none_or(|name| j.name == name))
                .flat_map(|j| {
                    j.sources.iter().filter(|s| !s.synced).map(move |s| {
                        let problem = s.problem.as_deref().unwrap_or("no answer yet");
                        format!("job {:?} {}: {problem}", j.name, s.name)
                    })
                })
                .collect();
            return Err(RunError::NotSynced {
                seconds: timeout.as_secs(),
                waiting: waiting.join("; "),
            });
        }
        let rendered = match job {
            Some(name) => snapshot.job(name).filter(|j| j.ready).map(|j| &j.rendered),
            None => snapshot.all_ready.then_some(&snapshot.all),
        };
        if let Some(rendered) = rendered {
            break rendered.body.to_bytes();
        }
    };
    sources.stop();
    Ok(body)
}

/// The layout of `config` with slots numbered from 0 in order: for a
/// merger no [`Runtime`] feeds (tests, benches, fuzzing).
pub fn sequential_layout(config: &Config) -> Layout {
    let mut next = 0;
    Layout {
        jobs: config
            .jobs
            .iter()
            .map(|job| {
                let sources = source::sources_of(job);
                let names = source::source_names(&sources);
                JobLayout {
                    name: job.job_name.clone(),
                    key: state::job_key(&job.job_name, source::key_parts(&sources)),
                    sources: sources
                        .iter()
                        .zip(names)
                        .map(|(s, name)| {
                            next += 1;
                            SourceLayout::new(SlotId(next - 1), s.kind(), name, s.describe())
                        })
                        .collect(),
                }
            })
            .collect(),
        state_dir: config.state_dir.clone(),
    }
}
