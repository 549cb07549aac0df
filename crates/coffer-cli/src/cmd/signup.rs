//! `coffer signup`: creates an account and logs this device in. Prints the
//! recovery key once: it is the only way back in if the password is lost.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use coffer_engine::home::Home;

use super::common::{read_password, runtime, AccountArgs};

/// Create an account on a store.
#[derive(Debug, Parser)]
pub struct Args {
    /// Which store and account.
    #[command(flatten)]
    pub account: AccountArgs,
    /// Write the recovery key to this file (mode 0600) instead of printing it.
    #[arg(long)]
    pub recovery_key_file: Option<PathBuf>,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<()> {
    let password = zeroize::Zeroizing::new(read_password(args.account.password_stdin, true)?);
    let recovery = runtime()?.block_on(super::account::signup(
        home,
        &args.account.server,
        &args.account.email,
        &password,
    ))?;
    match &args.recovery_key_file {
        Some(path) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("writing the recovery key to {}", path.display()))?;
            writeln!(f, "{recovery}")?;
            f.sync_all()?;
            println!("Account {} created. Recovery key written to {}.", args.account.email, path.display());
        }
        None => {
            println!("Account {} created and this device logged in.", args.account.email);
            println!();
            println!("Your recovery key (shown once; write it down and keep it safe):");
            println!();
            println!("    {recovery}");
            println!();
            println!("Without it, a forgotten password means your files cannot be decrypted by anyone.");
        }
    }
    Ok(())
}
