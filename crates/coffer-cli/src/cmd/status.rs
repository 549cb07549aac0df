//! `coffer status [DIR] [--json]`: what the sync folder is doing (from the
//! daemon's status file), what the index holds, and the account's quota.

use std::path::PathBuf;

use clap::Parser;
use coffer_engine::home::Home;
use coffer_engine::model::STATE_DIR;
use coffer_engine::remote::Remote;
use coffer_engine::sync::Status;
use serde::Serialize;

use super::common::{open_set_up, root_arg, runtime};

/// Show the state of a sync folder.
#[derive(Debug, Parser)]
pub struct Args {
    /// The folder (default: the one set up before).
    pub dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    root: PathBuf,
    account: String,
    device: String,
    daemon_running: bool,
    paused: bool,
    status: Option<Status>,
    synced_entries: usize,
    conflicts: usize,
    excluded: Vec<String>,
    used_bytes: Option<u64>,
    quota_bytes: Option<u64>,
    store_error: Option<String>,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<()> {
    let root = root_arg(home, args.dir)?;
    let engine = open_set_up(home, &root)?;
    let creds = home.credentials()?.map(|c| c.username).unwrap_or_default();
    let state = root.join(STATE_DIR);
    let daemon_running = std::fs::read_to_string(state.join("daemon.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
    let status: Option<Status> = std::fs::read(state.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| serde_json::from_value(v).ok());
    let usage = runtime()?.block_on(engine.remote().usage());
    let index = engine.index();
    let report = Report {
        root: root.clone(),
        account: creds,
        device: home.device()?.name,
        daemon_running,
        paused: index.get_meta("paused")?.as_deref() == Some("1"),
        status,
        synced_entries: index.synced()?.len(),
        conflicts: index.conflicts()?.len(),
        excluded: index.excluded()?.iter().map(ToString::to_string).collect(),
        used_bytes: usage.as_ref().ok().map(|u| u.used_bytes),
        quota_bytes: usage.as_ref().ok().map(|u| u.quota_bytes),
        store_error: usage.as_ref().err().map(ToString::to_string),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("Folder:   {}", report.root.display());
    println!("Account:  {} (device {})", report.account, report.device);
    let state = match (&report.status, report.daemon_running, report.paused) {
        (_, _, true) => "paused".to_string(),
        (Some(s), true, _) => format!("{:?}", s.state).to_lowercase(),
        (_, false, _) => "not running (start it with `coffer sync`)".to_string(),
        (None, true, _) => "starting".to_string(),
    };
    println!("State:    {state}");
    println!("Synced:   {} files and folders", report.synced_entries);
    if report.conflicts > 0 {
        println!("Conflicts: {} (see `coffer conflicts`)", report.conflicts);
    }
    if !report.excluded.is_empty() {
        println!("Excluded: {}", report.excluded.join(", "));
    }
    match (report.used_bytes, report.quota_bytes, &report.store_error) {
        (Some(u), Some(q), _) => {
            println!("Quota:    {} of {} used", indicatif::HumanBytes(u), indicatif::HumanBytes(q))
        }
        (_, _, Some(e)) => println!("Store:    {e}"),
        _ => {}
    }
    if let Some(e) = report.status.as_ref().and_then(|s| s.last_error.clone()) {
        println!("Last problem: {e}");
    }
    Ok(())
}
