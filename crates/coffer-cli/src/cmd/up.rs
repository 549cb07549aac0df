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
use coffer_crypto::login::LoginError;
use coffer_crypto::{MasterKey, RecoveryKey};
use coffer_engine::home::Home;
use coffer_engine::remote::{Accounts, RemoteError};
use coffer_server::http::HttpConfig;
use coffer_server::server::{open_embedded, serve, ListenConfig, RunningServer};
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

/// The embedded store of `coffer up` and of the desktop app's "this
/// computer" choice: SQLite and a folder under the home folder, served on a
/// loopback port that stays the same across runs, with one local account
/// whose generated password lives in `up.json` (mode 0600).
#[derive(Debug)]
pub struct LocalStore {
    server: RunningServer,
    state: UpState,
}

impl std::fmt::Debug for UpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpState").field("port", &self.port).field("username", &self.username).finish()
    }
}

impl LocalStore {
    /// Opens the store in `home` and serves it on its remembered port (or
    /// a new free one when that is taken).
    pub async fn start(home: &Home) -> anyhow::Result<Self> {
        let mut state = load_state(home)?;
        let data = home.path("store");
        let service = open_embedded(&data, ServiceConfig::default())
            .await
            .with_context(|| format!("opening the local store in {}", data.display()))?;
        let listen = |port| ListenConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            tls: None,
            insecure_plain_http: false,
            maintenance_every: Duration::from_secs(600),
        };
        let server = match serve(service.clone(), HttpConfig::default(), listen(state.port)).await {
            Ok(s) => s,
            Err(_) => {
                // The remembered port is taken: take another.
                state.port = free_port()?;
                save_state(home, &state)?;
                serve(service, HttpConfig::default(), listen(state.port)).await?
            }
        };
        Ok(Self { server, state })
    }

    /// The store's address.
    pub fn url(&self) -> String {
        self.server.base_url()
    }

    /// Logs this device in to the local account, creating the account on
    /// first use. Returns the recovery key when the account is new (show
    /// it once), `None` when this device was already logged in to it.
    pub async fn ensure_account(&self, home: &Home) -> anyhow::Result<Option<RecoveryKey>> {
        let url = self.url();
        let creds = home.credentials()?;
        if creds.as_ref().is_some_and(|c| c.server == url && c.username == self.state.username) {
            return Ok(None);
        }
        let device = home.device()?;
        let accounts = Accounts::new(&url)?;
        let (user, pw) = (&self.state.username, &self.state.password);
        let (logged, recovery) = match accounts.login(&mut OsRng, user, pw, device.id, &ksf()).await {
            Ok(l) => (l, None),
            // Any other failure (the store down, settings this build cannot
            // honour) is reported as it is, not hidden behind a signup that
            // would fail with "already exists".
            Err(RemoteError::Login(LoginError::WrongPassword)) => {
                let master = MasterKey::generate(&mut OsRng);
                let settings = super::account::new_account_settings()?;
                accounts.signup(&mut OsRng, user, pw, &master, &settings, &ksf()).await?;
                let l = accounts.login(&mut OsRng, user, pw, device.id, &ksf()).await?;
                (l, Some(RecoveryKey::from_master(&master)))
            }
            Err(e) => return Err(anyhow::Error::new(e).context("logging in to the local store failed")),
        };
        super::account::save(home, &url, user, logged)?;
        Ok(recovery)
    }

    /// Stops serving, letting requests in flight finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        Ok(self.server.shutdown(Duration::from_secs(5)).await?)
    }
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let root = match args.dir {
        Some(d) => super::common::absolute(&d)?,
        None => default_root(home)?,
    };
    let rt = runtime()?;
    let store = rt.block_on(LocalStore::start(home))?;
    let url = store.url();
    if let Some(recovery) = rt.block_on(store.ensure_account(home))? {
        println!("Created a local account. Your recovery key (shown once; keep it safe):");
        println!("\n    {recovery}\n");
    }
    println!("Coffer is up: store on {url}, syncing {}", root.display());
    let engine = Arc::new(open_engine(home, &root)?);
    let ui = (!args.no_ui && !args.once)
        .then(|| super::sync::UiOptions { home: home.clone(), port: args.ui_port });
    let code = rt.block_on(super::sync::drive(engine, args.once, false, Duration::from_secs(600), ui));
    rt.block_on(store.shutdown())?;
    code
}
