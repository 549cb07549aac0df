//! `coffer sync [DIR]`: the daemon. Keeps DIR in sync until stopped (Ctrl-C
//! or SIGTERM), with a live progress line on a terminal. `--once` syncs
//! until nothing is left to do and exits: 0 when everything synced, 2 when
//! some paths could not be (they are listed), 1 on an error.
//!
//! While it runs, it keeps `.coffer/status.json` (the engine's status) and
//! `.coffer/daemon.pid` up to date for `coffer status`. With `--ui` it also
//! serves the web UI on 127.0.0.1, prints its address with a one-time
//! login link, and records the address in `.coffer/ui.json` for `coffer ui`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use coffer_engine::control::http::{self, HttpOptions};
use coffer_engine::control::Control;
use coffer_engine::home::Home;
use coffer_engine::model::STATE_DIR;
use coffer_engine::sync::{RoundReport, Status, SyncState};
use coffer_engine::watch::Watcher;

use super::common::{open_engine, root_arg, runtime, CliEngine};

/// Keep a folder in sync.
#[derive(Debug, Parser)]
pub struct Args {
    /// The folder (default: the one set up before, else ~/Coffer).
    pub dir: Option<PathBuf>,
    /// Sync until nothing is left to do, then exit.
    #[arg(long)]
    pub once: bool,
    /// Go ahead with a round that deletes many files (see `coffer status`).
    #[arg(long)]
    pub confirm_deletions: bool,
    /// Full rescan interval, as a safety net for lost watcher events.
    #[arg(long, default_value_t = 600)]
    pub rescan_secs: u64,
    /// No progress display.
    #[arg(long)]
    pub quiet: bool,
    /// Serve the web UI on 127.0.0.1 (see `coffer ui`); the UI's "serve
    /// the web UI" setting turns this on for every start.
    #[arg(long)]
    pub ui: bool,
    /// The UI's port (default: any free one).
    #[arg(long, default_value_t = 0)]
    pub ui_port: u16,
}

/// Serve the web UI for this home, on this port (0: any free one).
#[derive(Debug, Clone)]
pub struct UiOptions {
    pub home: Home,
    pub port: u16,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let root = root_arg(home, args.dir.clone())?;
    let engine = Arc::new(open_engine(home, &root)?);
    if args.confirm_deletions {
        engine.confirm_deletions();
    }
    let wanted = args.ui || coffer_engine::control::ui_enabled(&engine);
    let ui = (wanted && !args.once).then(|| UiOptions { home: home.clone(), port: args.ui_port });
    runtime()?.block_on(drive(
        engine,
        args.once,
        args.quiet,
        Duration::from_secs(args.rescan_secs.max(5)),
        ui,
    ))
}

/// Runs an engine: to quiescence with `once`, else as the daemon until
/// Ctrl-C or SIGTERM.
pub async fn drive(
    engine: Arc<CliEngine>,
    once_only: bool,
    quiet: bool,
    rescan: Duration,
    ui: Option<UiOptions>,
) -> anyhow::Result<std::process::ExitCode> {
    // The control API applies the stored settings (bandwidth limits) even
    // when no UI is served.
    let control = Arc::new(Control::new(engine.clone(), ui.as_ref().map(|u| u.home.clone())));
    let root = engine.config().root.clone();
    let server = match ui {
        Some(u) => {
            let server = http::serve(control, HttpOptions { port: u.port, ui_dir: None })
                .await
                .context("starting the web UI")?;
            http::save_address(&root, &server.url()).context("recording the UI's address")?;
            println!("Web UI: {} (sign in with this one-time link: {})", server.url(), server.login_url()?);
            Some(server)
        }
        None => None,
    };
    let show = !quiet && std::io::stderr().is_terminal();
    let progress = show.then(|| tokio::spawn(show_progress(engine.clone())));
    let code = if once_only {
        let status_task = tokio::spawn(keep_status_file(engine.clone()));
        let code = once(&engine).await;
        status_task.abort();
        write_status(&engine, &engine.status());
        code
    } else {
        run_daemon(engine.clone(), rescan, shutdown_signal()).await.map(|()| std::process::ExitCode::SUCCESS)
    };
    if let Some(p) = progress {
        p.abort();
    }
    if server.is_some() {
        http::remove_address(&root);
    }
    drop(server);
    code
}

/// Keeps an engine syncing (file watcher, periodic full rescans every
/// `rescan`) until `stop` completes, keeping `.coffer/status.json` and
/// `.coffer/daemon.pid` up to date for `coffer status`. The round at hand
/// ends cleanly before this returns.
pub async fn run_daemon(
    engine: Arc<CliEngine>,
    rescan: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let root = engine.config().root.clone();
    let pid_file = root.join(STATE_DIR).join("daemon.pid");
    if let Err(e) = std::fs::write(&pid_file, std::process::id().to_string()) {
        let e = anyhow::Error::new(e).context("writing the daemon's pid file");
        write_stopped(&engine, Some(&e));
        return Err(e);
    }
    let status_task = tokio::spawn(keep_status_file(engine.clone()));
    let result = async {
        let (_watch, changes) = Watcher::start(&root, Duration::from_millis(100))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut run = tokio::spawn(engine.clone().run(changes, rescan, stop_rx));
        // The engine's loop ends only when told to. If it ends on its own
        // (a panic: a bug), the daemon must not stay up looking alive while
        // nothing syncs: it exits with the reason, for whatever started it
        // to see and restart it.
        tokio::select! {
            () = stop => {
                let _ = stop_tx.send(true);
                let _ = run.await;
                Ok::<_, anyhow::Error>(())
            }
            ended = &mut run => Err(match ended {
                Err(e) if e.is_panic() => {
                    let why = e.into_panic();
                    let why = why
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| why.downcast_ref::<&str>().copied())
                        .unwrap_or("no message");
                    anyhow::anyhow!("the sync engine stopped unexpectedly (a bug): {why}")
                }
                _ => anyhow::anyhow!("the sync engine stopped unexpectedly"),
            }),
        }
    }
    .await;
    status_task.abort();
    write_stopped(&engine, result.as_ref().err());
    let _ = std::fs::remove_file(&pid_file);
    result
}

/// The daemon's last status file: on an error, it says that sync stopped
/// and why, instead of the state it was in ("syncing", "up to date") while
/// nothing syncs.
fn write_stopped(engine: &CliEngine, error: Option<&anyhow::Error>) {
    if let Some(e) = error {
        engine.report_stopped(format!("Sync stopped: {e:#}"));
    }
    write_status(engine, &engine.status());
}

async fn once(engine: &CliEngine) -> anyhow::Result<std::process::ExitCode> {
    let reports = engine.sync_until_quiet(100).await.context("sync failed")?;
    let total = reports.iter().fold(RoundReport::default(), |mut a, r| {
        a.pulled += r.pulled;
        a.uploaded += r.uploaded;
        a.downloaded += r.downloaded;
        a.deleted += r.deleted;
        a.conflicts += r.conflicts;
        a.sent_bytes += r.sent_bytes;
        a
    });
    let problems = reports.last().map(|r| r.problems.clone()).unwrap_or_default();
    println!(
        "synced: {} uploaded, {} downloaded, {} deleted, {} conflicts, {} bytes sent ({} rounds)",
        total.uploaded,
        total.downloaded,
        total.deleted,
        total.conflicts,
        total.sent_bytes,
        reports.len()
    );
    for p in &problems {
        eprintln!("not synced: {}: {}", p.path, p.message);
    }
    Ok(if problems.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(2) })
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn write_status(engine: &CliEngine, status: &Status) {
    let dir = engine.config().root.join(STATE_DIR);
    let tmp = dir.join("status.json.tmp");
    if let Ok(json) = serde_json::to_vec_pretty(status) {
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join("status.json"));
        }
    }
}

async fn keep_status_file(engine: Arc<CliEngine>) {
    let mut rx = engine.subscribe();
    loop {
        let status = rx.borrow_and_update().clone();
        write_status(&engine, &status);
        if rx.changed().await.is_err() {
            return;
        }
        // At most a few writes a second.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn show_progress(engine: Arc<CliEngine>) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut rx = engine.subscribe();
    loop {
        let s = rx.borrow_and_update().clone();
        let line = match s.state {
            SyncState::UpToDate => "up to date".to_string(),
            SyncState::Syncing => format!(
                "syncing {}/{} files, {}/{} {}",
                s.files_done,
                s.files_total,
                indicatif::HumanBytes(s.bytes_done),
                indicatif::HumanBytes(s.bytes_total),
                s.current.first().map(String::as_str).unwrap_or("")
            ),
            SyncState::Paused => "paused".to_string(),
            SyncState::Offline => format!("offline, retrying: {}", s.last_error.as_deref().unwrap_or("")),
            SyncState::Error => format!("error: {}", s.last_error.as_deref().unwrap_or("")),
            SyncState::NeedsConfirmation => format!(
                "waiting: {} deletions need confirmation (coffer sync --confirm-deletions)",
                s.pending_deletions
            ),
        };
        bar.set_message(line);
        if rx.changed().await.is_err() {
            return;
        }
    }
}
