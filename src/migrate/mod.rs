//! `sdbridge migrate` (CONTRACT section 2): moves the `file_sd_configs`,
//! `static_configs`, `consul_sd_configs` and `dns_sd_configs` of a
//! Prometheus/vmagent scrape config into an sdbridge config, and points
//! the scrape jobs at the bridge with `http_sd_configs`. The scrape config is edited as text
//! (comments and layout kept); the result is parsed back and compared with
//! the expected tree before anything is written.

pub mod diff;
pub mod locate;
pub mod paths;
pub mod plan;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::duration::PromDuration;
use crate::gopath;
use paths::Rebase;
pub use plan::{plan, Client, Outcome, Plan};

/// `sdbridge migrate`'s command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Prometheus or vmagent scrape config to migrate.
    pub input: PathBuf,
    /// Where to write `sdbridge.yml` and the migrated scrape config (same
    /// file name as the input); created if missing.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// The bridge's base URL as the scrapers reach it (jobs get
    /// `URL/http_sd/<job>`).
    #[arg(long)]
    pub url: String,
    /// `refresh_interval` of the generated `http_sd_configs`.
    #[arg(long, default_value = "15s")]
    pub refresh_interval: String,
    /// Write no `refresh_interval` (vmagent rejects the field: it takes
    /// `-promscrape.httpSDCheckInterval` instead).
    #[arg(long, conflicts_with = "refresh_interval")]
    pub no_refresh_interval: bool,
    /// `basic_auth.username` for a bridge with `web.basic_auth_users`.
    #[arg(long, requires = "basic_auth_password_file")]
    pub basic_auth_user: Option<String>,
    /// `basic_auth.password_file` (read by the scraper).
    #[arg(long, requires = "basic_auth_user")]
    pub basic_auth_password_file: Option<PathBuf>,
    /// `authorization.credentials_file`: a bearer token for a bridge with
    /// `web.bearer_tokens_file`.
    #[arg(long, conflicts_with = "basic_auth_user")]
    pub bearer_token_file: Option<PathBuf>,
    /// `tls_config.ca_file`: the CA that signed the bridge's certificate.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// `tls_config.cert_file`: a client certificate, for a bridge that
    /// asks for one.
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// `tls_config.key_file`: the client certificate's key.
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Write even when `--out-dir` is the input's directory (the input is
    /// replaced), holds a different `sdbridge.yml` or scrape config, or a
    /// symlink where an output goes (the link is replaced).
    #[arg(long)]
    pub force: bool,
    /// Print the changes as a unified diff and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `path` as a clean absolute string (lexical, as Go's `filepath.Abs`).
fn absolute(path: &Path) -> Result<String, String> {
    let abs = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    abs.to_str()
        .map(gopath::clean)
        .ok_or_else(|| format!("{}: not a UTF-8 path", path.display()))
}

/// `sdbridge migrate`.
pub fn main(args: &Args) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sdbridge migrate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let url = args.url.trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len()
    {
        return Err(format!(
            "--url {:?}: expected http://HOST:PORT or https://HOST:PORT",
            args.url
        ));
    }
    PromDuration::parse(&args.refresh_interval).map_err(|e| format!("--refresh-interval: {e}"))?;
    let file_name = args
        .input
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a file name", args.input.display()))?;
    if file_name == "sdbridge.yml" {
        return Err(format!("{}: the input is named sdbridge.yml, which is the name of the generated sdbridge config; rename it first", args.input.display()));
    }
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let input_abs = absolute(&args.input)?;
    let rebase = Rebase {
        from: gopath::dir(&input_abs),
        to: absolute(&args.out_dir)?,
    };
    let out_file = args.out_dir.join(file_name);
    let same = rebase.from == rebase.to
        || std::fs::canonicalize(&out_file).ok() == std::fs::canonicalize(&args.input).ok();
    if same && !args.force && !args.dry_run {
        return Err(format!(
            "{} is the input; choose another --out-dir or pass --force to replace it",
            out_file.display()
        ));
    }
    // Paths given here are relative to the working directory.
    let cwd = Rebase {
        from: absolute(Path::new("."))?,
        to: rebase.to.clone(),
    };
    let option_path = |p: &Option<PathBuf>| -> Result<Option<String>, String> {
        p.as_ref()
            .map(|p| {
                p.to_str()
                    .map(|s| cwd.path(s))
                    .ok_or_else(|| format!("{}: not a UTF-8 path", p.display()))
            })
            .transpose()
    };
    let client = Client {
        url: url.to_string(),
        refresh_interval: (!args.no_refresh_interval).then(|| args.refresh_interval.clone()),
        basic_auth: match (
            &args.basic_auth_user,
            option_path(&args.basic_auth_password_file)?,
        ) {
            (Some(user), Some(file)) => Some((user.clone(), file)),
            _ => None,
        },
        bearer_token_file: option_path(&args.bearer_token_file)?,
        ca_file: option_path(&args.ca_file)?,
        cert_file: option_path(&args.cert_file)?,
        key_file: option_path(&args.key_file)?,
    };
    let plan = plan(&text, &args.input, &rebase, &client)?;
    let sdbridge_file = args.out_dir.join("sdbridge.yml");
    let mut report = String::new();
    for line in plan
        .outcomes
        .iter()
        .map(ToString::to_string)
        .chain(plan.notes.iter().cloned())
    {
        let _ = writeln!(report, "{line}");
    }
    if args.dry_run {
        let mut stdout = String::new();
        stdout.push_str(&diff::unified(
            &text,
            &plan.scrape_config,
            Some(&args.input.display().to_string()),
            &out_file.display().to_string(),
        ));
        stdout.push_str(&diff::unified(
            "",
            &plan.sdbridge,
            None,
            &sdbridge_file.display().to_string(),
        ));
        print!("{stdout}");
        eprintln!("{report}(dry run: nothing written)");
        return Ok(());
    }
    let mode = std::fs::metadata(&args.input)
        .map(|m| m.permissions().mode() & 0o777)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let sdbridge_existing = existing(&sdbridge_file, &plan.sdbridge, args.force)?;
    // A second run over an already migrated config moves nothing: it must
    // not replace the sdbridge.yml of the first one.
    let moved = plan
        .outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Moved { .. }));
    if sdbridge_existing == Existing::Differs && !moved {
        eprint!("{report}");
        return Err(format!(
            "nothing to move (already migrated?): {} left as it is, nothing written",
            sdbridge_file.display()
        ));
    }
    let out_existing = existing(&out_file, &plan.scrape_config, args.force)?;
    for (path, found) in [
        (&sdbridge_file, sdbridge_existing),
        (&out_file, out_existing),
    ] {
        if found == Existing::Differs && !args.force {
            return Err(format!(
                "{} exists and differs from the one this run would write; pass --force to replace it (see --dry-run)",
                path.display()
            ));
        }
    }
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| format!("{}: {e}", args.out_dir.display()))?;
    for (path, content, found) in [
        (&sdbridge_file, &plan.sdbridge, sdbridge_existing),
        (&out_file, &plan.scrape_config, out_existing),
    ] {
        if found != Existing::Same {
            write_file(path, content, mode)?;
        }
    }
    print!("{report}");
    println!(
        "wrote {} and {}",
        sdbridge_file.display(),
        out_file.display()
    );
    Ok(())
}

/// What an output path holds already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Nothing.
    Absent,
    /// A regular file with the bytes this run would write: left as it is.
    Same,
    /// Anything else (with `--force`, a symlink: the link is replaced).
    Differs,
}

/// What `path` holds compared with `content`. A symlink is refused
/// without `force` (writing would replace the link, not its target), and
/// so is anything else that is not a regular file, always.
fn existing(path: &Path, content: &str, force: bool) -> Result<Existing, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if meta.file_type().is_symlink() {
        return if force {
            Ok(Existing::Differs)
        } else {
            Err(format!(
                "{} is a symbolic link; pass --force to replace the link (not its target) with a regular file",
                path.display()
            ))
        };
    }
    if !meta.is_file() {
        return Err(format!(
            "{} exists and is not a regular file",
            path.display()
        ));
    }
    if meta.len() != content.len() as u64 {
        return Ok(Existing::Differs);
    }
    let mut found = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(meta.len() + 1).read_to_end(&mut found))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(if found == content.as_bytes() {
        Existing::Same
    } else {
        Existing::Differs
    })
}

/// Writes through a temporary file and a rename, so a reader never sees
/// half a config, with mode `mode` (the input's: a config may hold a
/// Consul token), fsyncing the file and then its directory so the rename
/// survives a crash.
fn write_file(path: &Path, content: &str, mode: u32) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.migrate-tmp", std::process::id()));
    let written = (|| {
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Owner-only until it has its final mode; never through a link.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(content.as_bytes())?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
