//! `coffer`: the command line face of Coffer. Every command a script would
//! use has a non-interactive form and an exit code that tells success from
//! failure (0 success, 1 error, 2 synced with some paths left out). One file
//! per command under `cmd/`; each has an `Args` (clap) and a `run`.

use coffer_cli::cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coffer_engine::home::Home;

/// Coffer: end-to-end encrypted file sync.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about, long_about = None)]
struct Cli {
    /// Where this client keeps its keys, device id and settings (default:
    /// the platform's data folder, e.g. ~/.local/share/coffer).
    #[arg(long, global = true, env = "COFFER_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Coffer on this machine: a local store and a synced folder.
    Up(cmd::up::Args),
    /// Run the cloud store that devices sync against.
    Server(Box<cmd::server::Args>),
    /// Create an account and log this device in.
    Signup(cmd::signup::Args),
    /// Log this device in to an account.
    Login(cmd::login::Args),
    /// Log this device out.
    Logout(cmd::login::LogoutArgs),
    /// Keep a folder in sync (the daemon), or `--once`.
    Sync(cmd::sync::Args),
    /// Show what a sync folder is doing.
    Status(cmd::status::Args),
    /// List unresolved conflicts.
    Conflicts(cmd::conflicts::Args),
    /// Settle a conflict: keep mine, theirs, or both.
    Resolve(cmd::conflicts::ResolveArgs),
    /// Stop syncing a folder to this device (selective sync).
    Exclude(cmd::selective::Args),
    /// Sync an excluded folder to this device again.
    Include(cmd::selective::Args),
    /// List the kept versions of a file.
    Versions(cmd::versions::Args),
    /// Make an old version of a file current again.
    Restore(cmd::versions::RestoreArgs),
    /// Pause syncing.
    Pause(cmd::pause::Args),
    /// Resume syncing.
    Resume(cmd::pause::Args),
    /// List or restore what sync moved to the folder's trash.
    Trash(cmd::trash::Args),
    /// Print (or open) the running daemon's web UI, with a one-time login link.
    Ui(cmd::ui::Args),
}

fn main() -> ExitCode {
    // Only in the crash tests' build (`--features failpoints`).
    #[cfg(feature = "failpoints")]
    let _failpoints = coffer_engine::failpoints::install_from_env();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Server(_)) {
        cmd::common::init_logging();
    }
    let result = match cli.command {
        Command::Server(args) => cmd::server::run(*args).map(|()| ExitCode::SUCCESS),
        other => Home::resolve(cli.home).map_err(anyhow::Error::from).and_then(|home| client(&home, other)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("coffer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client(home: &Home, command: Command) -> anyhow::Result<ExitCode> {
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    match command {
        Command::Server(_) => unreachable!("handled before a home is resolved"),
        Command::Up(a) => cmd::up::run(home, a),
        Command::Signup(a) => ok(cmd::signup::run(home, a)),
        Command::Login(a) => ok(cmd::login::run(home, a)),
        Command::Logout(a) => ok(cmd::login::logout(home, a)),
        Command::Sync(a) => cmd::sync::run(home, a),
        Command::Status(a) => ok(cmd::status::run(home, a)),
        Command::Conflicts(a) => ok(cmd::conflicts::list(home, a)),
        Command::Resolve(a) => ok(cmd::conflicts::resolve(home, a)),
        Command::Exclude(a) => ok(cmd::selective::exclude(home, a)),
        Command::Include(a) => ok(cmd::selective::include(home, a)),
        Command::Versions(a) => ok(cmd::versions::list(home, a)),
        Command::Restore(a) => ok(cmd::versions::restore(home, a)),
        Command::Pause(a) => ok(cmd::pause::set(home, a, true)),
        Command::Resume(a) => ok(cmd::pause::set(home, a, false)),
        Command::Trash(a) => ok(cmd::trash::run(home, a)),
        Command::Ui(a) => ok(cmd::ui::run(home, a)),
    }
}
