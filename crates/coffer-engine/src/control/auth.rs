//! Who may use the loopback HTTP transport: whoever holds the per-install
//! token (`ui-token` in the home folder, mode 0600, made on first use), or
//! has used a one-time login link minted by someone who could read it.
//!
//! A login link carries a random one-time code; the home folder keeps only
//! its BLAKE3 hash (`ui-login/<hash>`, mode 0600, holding the expiry), so
//! `coffer ui` in another process can mint a link the daemon accepts. A
//! code works once, within [`LOGIN_TTL_MS`]; using it sets the token as an
//! HttpOnly, SameSite=Strict cookie, so a person never copies a token.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::home::Home;

/// How long a login link works.
pub const LOGIN_TTL_MS: u64 = 5 * 60 * 1000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn write_new_private(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The per-install token, made on first use (mode 0600).
pub fn ui_token(home: &Home) -> io::Result<Zeroizing<String>> {
    let path = home.path("ui-token");
    match fs::read_to_string(&path) {
        Ok(t) if t.trim().len() == 64 => return Ok(Zeroizing::new(t.trim().to_string())),
        Ok(_) => fs::remove_file(&path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = Zeroizing::new(random_hex());
    let tmp = home.path(".ui-token.tmp");
    let _ = fs::remove_file(&tmp);
    write_new_private(&tmp, token.as_bytes())?;
    // Another process may have made one meanwhile: the first one wins.
    match fs::hard_link(&tmp, &path) {
        Ok(()) => {
            fs::remove_file(&tmp)?;
            Ok(token)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(&tmp)?;
            Ok(Zeroizing::new(fs::read_to_string(&path)?.trim().to_string()))
        }
        Err(e) => Err(e),
    }
}

fn login_dir(home: &Home) -> io::Result<PathBuf> {
    let dir = home.path("ui-login");
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn code_file(dir: &std::path::Path, code: &str) -> PathBuf {
    dir.join(blake3::hash(code.as_bytes()).to_hex().as_str())
}

/// Mints a one-time login code (and forgets expired ones).
pub fn mint_login(home: &Home) -> io::Result<String> {
    let dir = login_dir(home)?;
    let now = now_ms();
    for e in fs::read_dir(&dir)?.flatten() {
        let expired = fs::read_to_string(e.path()).ok().and_then(|s| s.trim().parse::<u64>().ok());
        if expired.is_none_or(|t| t < now) {
            let _ = fs::remove_file(e.path());
        }
    }
    let code = random_hex();
    write_new_private(&code_file(&dir, &code), (now + LOGIN_TTL_MS).to_string().as_bytes())?;
    Ok(code)
}

/// Uses up a login code: true if it was minted, unused and not expired.
pub fn consume_login(home: &Home, code: &str) -> bool {
    if code.len() != 64 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let Ok(dir) = login_dir(home) else { return false };
    let file = code_file(&dir, code);
    let Ok(expiry) = fs::read_to_string(&file) else { return false };
    // Removing it is what uses it: of two racing requests, one wins.
    if fs::remove_file(&file).is_err() {
        return false;
    }
    expiry.trim().parse::<u64>().is_ok_and(|t| t >= now_ms())
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h")).unwrap();
        let t = ui_token(&home).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(*ui_token(&home).unwrap(), *t);
        let mode = fs::metadata(home.path("ui-token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_login_code_works_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h")).unwrap();
        let code = mint_login(&home).unwrap();
        assert!(!consume_login(&home, &"0".repeat(64)));
        assert!(!consume_login(&home, "../../etc/passwd"));
        assert!(consume_login(&home, &code));
        assert!(!consume_login(&home, &code), "used up");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
