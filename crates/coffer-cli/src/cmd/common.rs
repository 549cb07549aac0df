//! What the client commands share: the home folder, opening a sync root's
//! engine, reading a password, logging.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use coffer_crypto::login::KsfParams;
use coffer_engine::fs::{RealFs, SystemClock};
use coffer_engine::home::Home;
use coffer_engine::index::Index;
use coffer_engine::model::STATE_DIR;
use coffer_engine::remote::{HttpRemote, RetryRemote};
use coffer_engine::sync::{init_root, Engine, EngineConfig, EngineRng};
use rand_core::SeedableRng;

/// The engine type of the CLI: the store over HTTP, single failed requests
/// retried with backoff.
pub type CliEngine = Engine<RetryRemote<HttpRemote>>;

/// The store and account a signup or login names.
#[derive(Debug, clap::Args)]
pub struct AccountArgs {
    /// The store's URL, e.g. http://127.0.0.1:7878.
    #[arg(long, env = "COFFER_SERVER_URL")]
    pub server: String,
    /// Account name (an email address, for example).
    #[arg(long)]
    pub email: String,
    /// Read the password from standard input instead of a prompt.
    #[arg(long)]
    pub password_stdin: bool,
}

/// Argon2 cost for OPAQUE. `COFFER_INSECURE_FAST_KDF=1` selects cheap
/// parameters for tests (an account made with them must log in with them).
pub fn ksf() -> KsfParams {
    if std::env::var("COFFER_INSECURE_FAST_KDF").is_ok_and(|v| v == "1") {
        KsfParams::INSECURE_FAST
    } else {
        KsfParams::INTERACTIVE
    }
}

/// Logs to stderr at `RUST_LOG` (default: warnings, and info from Coffer).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,coffer_engine=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// A tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// The password: from stdin (one line) with `--password-stdin`, else a
/// prompt on the terminal.
pub fn read_password(from_stdin: bool, confirm: bool) -> anyhow::Result<String> {
    let pw = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let pw = rpassword::prompt_password("Password: ")?;
        if confirm && rpassword::prompt_password("Repeat password: ")? != pw {
            bail!("the passwords do not match");
        }
        pw
    };
    if pw.is_empty() {
        bail!("the password is empty");
    }
    Ok(pw)
}

/// The default sync folder: the first one set up, else `~/Coffer`.
pub fn default_root(home: &Home) -> anyhow::Result<PathBuf> {
    if let Some((root, _)) = home.roots()?.into_iter().next() {
        return Ok(root);
    }
    let base = directories::BaseDirs::new().context("cannot find your home folder; pass DIR")?;
    Ok(base.home_dir().join("Coffer"))
}

/// Absolute, lexically clean form of `dir` (it may not exist yet): the
/// same folder always has the same name in `roots.json`.
pub fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::path::Component;
    let joined = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir()?.join(dir) };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Opens the engine of `root`, setting the root up if this device never
/// synced it. A root set up before whose marker is gone is refused (an
/// unmounted disk must never read as "everything deleted").
pub fn open_engine(home: &Home, root: &Path) -> anyhow::Result<CliEngine> {
    let creds =
        home.credentials()?.context("not logged in: run `coffer login` (or `coffer signup`) first")?;
    let device = home.device()?;
    let root = absolute(root)?;
    let known = home.roots()?.contains_key(&root);
    let fs = Arc::new(RealFs);
    if known {
        if !root.join(STATE_DIR).join(coffer_engine::sync::ROOT_MARKER).exists() {
            bail!(
                "the sync folder {} is missing or lost its .coffer folder (is the disk mounted?); sync is stopped and nothing was changed",
                root.display()
            );
        }
    } else {
        let id = home.add_root(&root)?;
        init_root(fs.as_ref(), &root, &id)?;
    }
    let index = Index::open(&root.join(STATE_DIR).join("index.db"))
        .map_err(|e| coffer_engine::sync::explain_disk_full(fs.as_ref(), &root, e.into()))?;
    let remote = RetryRemote::new(HttpRemote::new(&creds.server, creds.token)?);
    let mut config = EngineConfig::new(root, device.id, device.name);
    config.chunker = creds.settings.chunker;
    Ok(Engine::new(
        remote,
        creds.master.derive(),
        index,
        fs,
        Arc::new(SystemClock),
        EngineRng::from_entropy(),
        config,
    ))
}

/// Opens the engine of a root this device already set up; anything else
/// is refused (a status or exclude must not turn a random folder into a
/// sync root).
pub fn open_set_up(home: &Home, root: &Path) -> anyhow::Result<CliEngine> {
    let root = absolute(root)?;
    if !home.roots()?.contains_key(&root) {
        bail!(
            "{} is not a Coffer folder on this device; `coffer sync {}` sets it up",
            root.display(),
            root.display()
        );
    }
    open_engine(home, &root)
}

/// The sync root named by `dir`, or the default one.
pub fn root_arg(home: &Home, dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match dir {
        Some(d) => absolute(&d),
        None => default_root(home),
    }
}
