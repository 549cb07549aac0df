//! `coffer ui`: the address of the running daemon's web UI, with a fresh
//! one-time login link (so a person never copies a token), or `--open` to
//! open it in the default browser. The daemon (`coffer sync --ui` or
//! `coffer up`) records its address in the sync root's `.coffer/ui.json`;
//! the link's code is minted in the home folder, which the daemon reads.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use coffer_engine::control::http::{load_address, login_url};
use coffer_engine::home::Home;

use super::common::root_arg;

/// Print (or open) the web UI's address.
#[derive(Debug, Parser)]
pub struct Args {
    /// The sync folder (default: the one set up before).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Open it in the default browser too.
    #[arg(long)]
    pub open: bool,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<()> {
    let root = root_arg(home, args.dir)?;
    let Some(addr) = load_address(&root)? else {
        bail!("no daemon serves the UI for {}: start `coffer sync --ui` or `coffer up`", root.display());
    };
    let sock: SocketAddr = addr
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("{} names no address", addr.url))?;
    if TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_err() {
        bail!(
            "the daemon that served the UI at {} is gone: start `coffer sync --ui` or `coffer up`",
            addr.url
        );
    }
    let link = login_url(home, &addr.url)?;
    println!("{link}");
    eprintln!("(a one-time link: it signs this browser in, then stops working)");
    if args.open {
        let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
        if let Err(e) = std::process::Command::new(opener).arg(&link).spawn() {
            eprintln!("could not start {opener} ({e}); open the link above by hand");
        }
    }
    Ok(())
}
