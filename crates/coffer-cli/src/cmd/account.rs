//! Signing up and logging in, shared by `coffer signup`/`login`, `coffer
//! up` and the desktop app's first run: the OPAQUE exchange with the store,
//! then the device's credentials saved in the home folder.

use anyhow::Context;
use coffer_crypto::{MasterKey, RecoveryKey};
use coffer_engine::chunker::ChunkerParams;
use coffer_engine::home::{Credentials, Home};
use coffer_engine::remote::{Accounts, LoggedIn};
use coffer_engine::settings::AccountSettings;
use rand_core::OsRng;

use super::common::ksf;

/// Creates the account `email` on the store at `server` with a new master
/// key, logs this device in and saves its credentials. Returns the
/// recovery key, which the caller must show once: it is never stored.
pub async fn signup(home: &Home, server: &str, email: &str, password: &str) -> anyhow::Result<RecoveryKey> {
    let device = home.device()?;
    let master = MasterKey::generate(&mut OsRng);
    let settings = new_account_settings()?;
    let accounts = Accounts::new(server)?;
    accounts
        .signup(&mut OsRng, email, password, &master, &settings, &ksf())
        .await
        .context("signup failed")?;
    let logged = accounts
        .login(&mut OsRng, email, password, device.id, &ksf())
        .await
        .context("login after signup failed")?;
    save(home, server, email, logged)?;
    Ok(RecoveryKey::from_master(&master))
}

/// Logs this device in to the account `email` on the store at `server` and
/// saves its credentials.
pub async fn login(home: &Home, server: &str, email: &str, password: &str) -> anyhow::Result<()> {
    let device = home.device()?;
    let accounts = Accounts::new(server)?;
    let logged =
        accounts.login(&mut OsRng, email, password, device.id, &ksf()).await.context("login failed")?;
    save(home, server, email, logged)
}

/// Saves a login's session, master key and account settings as this
/// device's credentials.
pub fn save(home: &Home, server: &str, email: &str, logged: LoggedIn) -> anyhow::Result<()> {
    home.save_credentials(&Credentials {
        server: server.to_string(),
        username: email.to_string(),
        token: logged.remote.token().clone(),
        master: logged.master,
        settings: logged.settings,
    })?;
    Ok(())
}

/// The settings a new account gets: this version's chunk sizes, or
/// `COFFER_CHUNK_KIB=MIN,AVG,MAX` (in KiB) to make an account with others,
/// for tuning them with the benchmark (`scripts/bench`). Every device of
/// the account then cuts with them, whatever its environment.
pub fn new_account_settings() -> anyhow::Result<AccountSettings> {
    let Ok(v) = std::env::var("COFFER_CHUNK_KIB") else { return Ok(AccountSettings::for_new_account()) };
    let chunker = ChunkerParams::parse_kib(&v).map_err(|e| anyhow::anyhow!("COFFER_CHUNK_KIB={v:?}: {e}"))?;
    Ok(AccountSettings { chunker })
}
