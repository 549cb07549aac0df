//! `coffer up`: Coffer on one machine with nothing to set up. Starts an
//! embedded store (SQLite + a folder, under the home folder) on loopback,
//! creates a local account on first run (printing its recovery key once),
//! and keeps `~/Coffer` (or `--dir`) in sync against it until stopped,
//! serving the web UI on 127.0.0.1 and printing its address (`--no-ui` to
//! skip).
//!
//! The store keeps its port across runs (`up.json` in the home folder,
//! mode 0600, with the local account's generated password), so the
//! device's credentials stay valid.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use coffer_crypto::{MasterKey, RecoveryKey};
use coffer_engine::home::{Credentials, Home};
use coffer_engine::remote::Accounts;
use coffer_server::http::HttpConfig;
use coffer_server::server::{open_embedded, serve, ListenConfig};
use coffer_server::ServiceConfig;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use super::common::{default_root, ksf, open_engine, runtime};

/// Run Coffer on this machine: a local store and a synced folder.
#[derive(Debug, Parser)]
pub struct Args {
    /// The folder to sync (default: ~/Coffer).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Sync until nothing is left to do, then stop (for scripts).
    #[arg(long)]
    pub once: bool,
    /// Do not serve the web UI.
    #[arg(long)]
    pub no_ui: bool,
    /// The web UI's port (default: any free one).
    #[arg(long, default_value_t = 0)]
    pub ui_port: u16,
}

#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct UpState {
    port: u16,
    username: String,
    password: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

fn load_state(home: &Home) -> anyhow::Result<UpState> {
    let path = home.path("up.json");
    if let Ok(b) = std::fs::read(&path) {
        return serde_json::from_slice(&b).with_context(|| format!("{} is damaged", path.display()));
    }
    let mut pw = [0u8; 24];
    OsRng.fill_bytes(&mut pw);
    let device = home.device()?;
    let state =
        UpState { port: free_port()?, username: format!("local@{}", device.name), password: hex::encode(pw) };
    save_state(home, &state)?;
    Ok(state)
}

fn save_state(home: &Home, state: &UpState) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.path("up.json");
    let tmp = home.path(".up.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state)?)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let mut state = load_state(home)?;
    let root = match args.dir {
        Some(d) => super::common::absolute(&d)?,
        None => default_root(home)?,
    };
    let data = home.path("store");
    let rt = runtime()?;
    let server = rt.block_on(async {
        let service = open_embedded(&data, ServiceConfig::default())
            .await
            .with_context(|| format!("opening the local store in {}", data.display()))?;
        let listen = |port| ListenConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            tls: None,
            insecure_plain_http: false,
            maintenance_every: Duration::from_secs(600),
        };
        match serve(service.clone(), HttpConfig::default(), listen(state.port)).await {
            Ok(s) => Ok::<_, anyhow::Error>(s),
            Err(_) => {
                // The remembered port is taken: take another.
                state.port = free_port()?;
                save_state(home, &state)?;
                Ok(serve(service, HttpConfig::default(), listen(state.port)).await?)
            }
        }
    })?;
    let url = server.base_url();
    let creds = home.credentials()?;
    if creds.as_ref().is_none_or(|c| c.server != url || c.username != state.username) {
        let device = home.device()?;
        let accounts = Accounts::new(&url)?;
        let logged = rt.block_on(async {
            if let Ok(l) =
                accounts.login(&mut OsRng, &state.username, &state.password, device.id, &ksf()).await
            {
                return Ok::<_, anyhow::Error>(l);
            }
            let master = MasterKey::generate(&mut OsRng);
            accounts.signup(&mut OsRng, &state.username, &state.password, &master, &ksf()).await?;
            println!("Created a local account. Your recovery key (shown once; keep it safe):");
            println!("\n    {}\n", RecoveryKey::from_master(&master));
            Ok(accounts.login(&mut OsRng, &state.username, &state.password, device.id, &ksf()).await?)
        })?;
        home.save_credentials(&Credentials {
            server: url.clone(),
            username: state.username.clone(),
            token: logged.remote.token().clone(),
            master: logged.master,
        })?;
    }
    println!("Coffer is up: store on {url}, syncing {}", root.display());
    let engine = Arc::new(open_engine(home, &root)?);
    let ui = (!args.no_ui && !args.once)
        .then(|| super::sync::UiOptions { home: home.clone(), port: args.ui_port });
    let code = rt.block_on(super::sync::drive(engine, args.once, false, Duration::from_secs(600), ui));
    rt.block_on(server.shutdown(Duration::from_secs(5)))?;
    code
}
