//! `coffer login` and `coffer logout`.

use clap::Parser;
use coffer_engine::home::Home;
use coffer_engine::remote::Remote;

use super::common::{read_password, runtime, AccountArgs};

/// Log this device in to an existing account.
#[derive(Debug, Parser)]
pub struct Args {
    /// Which store and account.
    #[command(flatten)]
    pub account: AccountArgs,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<()> {
    let password = zeroize::Zeroizing::new(read_password(args.account.password_stdin, false)?);
    let device = home.device()?;
    runtime()?.block_on(super::account::login(home, &args.account.server, &args.account.email, &password))?;
    println!("Logged in as {} on device {}.", args.account.email, device.name);
    Ok(())
}

/// Log this device out: revoke its session on the store, forget the keys.
#[derive(Debug, Parser)]
pub struct LogoutArgs {}

pub fn logout(home: &Home, _args: LogoutArgs) -> anyhow::Result<()> {
    let Some(creds) = home.credentials()? else {
        println!("Not logged in.");
        return Ok(());
    };
    let remote = coffer_engine::remote::HttpRemote::new(&creds.server, creds.token)?;
    let revoked = runtime()?.block_on(async {
        let sessions = remote.sessions().await?;
        match sessions.into_iter().find(|s| s.current) {
            Some(s) => remote.revoke_session(s.id).await,
            None => Ok(()),
        }
    });
    home.clear_credentials()?;
    match revoked {
        Ok(()) => println!("Logged out; this device's session is revoked."),
        Err(e) => println!(
            "Logged out locally; the store could not be told ({e}); revoke the session from another device."
        ),
    }
    Ok(())
}
