//! The command line (CONTRACT section 2).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::daemon;
use crate::source::file::Scanner;

/// Serves static lists, file_sd directories, Consul catalogs (consul_sd),
/// DNS records (dns_sd), SQL inventory databases (sql_sd) and upstream
/// HTTP SD servers (http_sd) as one Prometheus HTTP SD endpoint.
#[derive(Debug, Parser)]
#[command(name = "sdbridge", version, about)]
pub struct Cli {
    /// Log format on stderr (level via RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// Listen address, overriding the config's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a config and every file_sd file it points at; prints
    /// `file:line:col: message` errors and exits non-zero if any.
    Check {
        /// The config file.
        file: PathBuf,
    },
    /// Run one discovery round of every source and print the HTTP SD JSON
    /// that would be served.
    Dump {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// Only this job (default: all jobs, as /http_sd).
        #[arg(long)]
        job: Option<String>,
        /// Seconds to wait for every source's first round.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Move a Prometheus/vmagent scrape config's file_sd, static and
    /// Consul blocks into an sdbridge config, pointing the jobs at the
    /// bridge with http_sd_configs.
    Migrate(crate::migrate::Args),
    /// Print a shell completion script (bash: `source <(sdbridge
    /// completions bash)`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a
    /// directory.
    Manpage {
        /// Write `sdbridge.1` and `sdbridge-<command>.1` here instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--version` says which commit, as Prometheus's does; clap's
        // version string stays the bare version (the man page's).
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => {
            print!("{}", crate::version::long());
            return ExitCode::SUCCESS;
        }
        Err(e) => e.exit(),
    };
    init_logging(cli.log_format);
    match cli.command {
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sdbridge", &mut out);
            write_stdout(&out)
        }
        Command::Manpage { dir } => manpage(dir.as_deref()),
        Command::Check { file } => check(&file),
        Command::Migrate(args) => crate::migrate::main(&args),
        Command::Serve { config, listen } => with_runtime(|| async move {
            let loaded = Config::load(&config).map_err(|e| e.to_string())?;
            daemon::serve(config, loaded, listen)
                .await
                .map_err(|e| e.to_string())
        }),
        Command::Dump {
            config,
            job,
            timeout,
        } => with_runtime(|| async move {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let body = daemon::dump(config, job.as_deref(), Duration::from_secs(timeout))
                .await
                .map_err(|e| e.to_string())?;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&body)
                .and_then(|()| stdout.write_all(b"\n"))
                .map_err(|e| format!("writing output: {e}"))
        }),
    }
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdbridge: writing output: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `sdbridge manpage`: the page of `sdbridge` on stdout, or with `dir`
/// a page per command there (the top page refers to them as
/// `sdbridge-serve(1)` and so on). `help` is no page of its own.
fn manpage(dir: Option<&std::path::Path>) -> ExitCode {
    let command = Cli::command().disable_help_subcommand(true);
    let Some(dir) = dir else {
        let mut out = Vec::new();
        if let Err(e) = clap_mangen::Man::new(command).render(&mut out) {
            eprintln!("sdbridge: rendering the man page: {e}");
            return ExitCode::FAILURE;
        }
        return write_stdout(&out);
    };
    match std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(command, dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdbridge: writing man pages to {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn with_runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sdbridge: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(f());
    // A file_sd read blocked on a FIFO or a hung NFS mount must not keep
    // the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sdbridge: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `sdbridge check`: every error in the config, then in every file_sd
/// file of each job that is valid on its own, each as `file:line:col:`;
/// warnings (`file: warning: ...`) do not fail it.
fn check(file: &std::path::Path) -> ExitCode {
    let (jobs, config_errors) = Config::check(file);
    for error in &config_errors {
        println!("{error}");
    }
    let mut file_errors = 0;
    let mut files = 0;
    for job in &jobs {
        for (i, sql) in job.sql_sd_configs.iter().enumerate() {
            for warning in sql.warnings() {
                println!(
                    "{}: warning: job {:?}: sql_sd_configs[{i}]: {warning}",
                    file.display(),
                    job.job_name
                );
            }
        }
        for file_sd in &job.file_sd_configs {
            let scan = Scanner::new(&file_sd.files)
                .with_limit(file_sd.max_input_size)
                .scan(true);
            files += scan.parts.len() + scan.new_errors.len();
            for error in &scan.new_errors {
                println!("{error}");
                file_errors += 1;
            }
        }
    }
    // What only a whole, valid config can tell: the `state_dir`, and the
    // files `web:` names (certificate, key, CAs, tokens).
    let mut other_errors = 0;
    if config_errors.is_empty() {
        if let Ok(config) = Config::load(file) {
            if let Some(dir) = &config.state_dir {
                if let Err(e) = crate::state::check_dir(dir) {
                    println!("{}: {e}", file.display());
                    other_errors += 1;
                }
            }
            let bcrypt = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
            if let Err(e) = crate::web::Web::new(&config.web, bcrypt) {
                println!("{}: web: {e}", file.display());
                other_errors += 1;
            }
        }
    }
    if !config_errors.is_empty() || file_errors > 0 || other_errors > 0 {
        println!(
            "{}: {} error(s) in the config, {file_errors} invalid file_sd file(s)",
            file.display(),
            config_errors.len() + other_errors
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{}: OK ({} jobs, {files} file_sd files)",
        file.display(),
        jobs.len()
    );
    ExitCode::SUCCESS
}
