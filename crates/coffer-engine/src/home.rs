//! The client's home: per-user configuration and secrets, outside any sync
//! root. Chosen by `--home`, else `COFFER_HOME`, else the platform's data
//! directory (`~/.local/share/coffer` on Linux), so several clients can run
//! on one machine.
//!
//! - `device.json`: this install's device id and name (made on first use);
//! - `credentials.json` (mode 0600): store URL, account name, session token
//!   and the account's master key. The master key never leaves the device
//!   unwrapped; this file is as sensitive as an SSH private key, and like
//!   one it is readable by its owner only;
//! - `roots.json`: the sync roots this device set up, with their marker ids.
//!
//! Every file is written to a temp file, fsynced and renamed into place.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coffer_crypto::MasterKey;
use coffer_proto::api::SessionToken;
use coffer_proto::DeviceId;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::chunker::ChunkerParams;
use crate::settings::AccountSettings;

/// Errors reading or writing the home folder.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file that does not parse.
    #[error("{path} is damaged ({why}); remove it and log in again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// No home could be found.
    #[error("cannot find a home folder for Coffer: set COFFER_HOME or pass --home")]
    NoHome,
}

type Result<T, E = HomeError> = std::result::Result<T, E>;

/// This install's identity.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Device {
    /// Random at first use.
    pub id: DeviceId,
    /// Shown in conflicted copies and session lists.
    pub name: String,
}

/// A logged-in account on this device.
pub struct Credentials {
    /// Store URL.
    pub server: String,
    /// Account name.
    pub username: String,
    /// The session's bearer token.
    pub token: SessionToken,
    /// The account's master key.
    pub master: MasterKey,
    /// The account's settings, as the login opened them.
    pub settings: AccountSettings,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("token", &"****")
            .field("master", &"****")
            .field("settings", &self.settings)
            .finish()
    }
}

/// On disk; wiped from memory when dropped.
#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct CredentialsFile {
    server: String,
    username: String,
    token: String,
    master_key: String,
    /// The account's chunk sizes (min, average, max, in bytes). Absent in
    /// files written before they were a setting of the account, whose
    /// accounts were all made with [`AccountSettings::LEGACY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk_sizes: Option<[usize; 3]>,
}

/// The home folder.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `flag`, else `COFFER_HOME`, else the platform data directory.
    pub fn resolve(flag: Option<PathBuf>) -> Result<Self> {
        let dir = match flag.or_else(|| std::env::var_os("COFFER_HOME").map(PathBuf::from)) {
            Some(d) => d,
            None => directories::ProjectDirs::from("", "", "coffer")
                .map(|p| p.data_dir().to_path_buf())
                .ok_or(HomeError::NoHome)?,
        };
        Self::at(dir)
    }

    /// The home at `dir` (created, mode 0700).
    pub fn at(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(|source| HomeError::Io { path: dir.clone(), source })?;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        Ok(Self { dir })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_private(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let io = |source| HomeError::Io { path: path.clone(), source };
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    fn read(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(Zeroizing::new(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HomeError::Io { path, source }),
        }
    }

    fn corrupt(&self, name: &str, why: impl fmt::Display) -> HomeError {
        HomeError::Corrupt { path: self.dir.join(name), why: why.to_string() }
    }

    /// This install's device, made on first use.
    pub fn device(&self) -> Result<Device> {
        if let Some(b) = self.read("device.json")? {
            return serde_json::from_slice(&b).map_err(|e| self.corrupt("device.json", e));
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let name = gethostname::gethostname().to_string_lossy().into_owned();
        let d = Device {
            id: DeviceId::from_bytes(id),
            name: if name.is_empty() { "device".into() } else { name },
        };
        self.write_private("device.json", &serde_json::to_vec_pretty(&d).expect("serialises"))?;
        Ok(d)
    }

    /// Renames this device.
    pub fn set_device_name(&self, name: &str) -> Result<Device> {
        let mut d = self.device()?;
        d.name = name.to_string();
        self.write_private("device.json", &serde_json::to_vec_pretty(&d).expect("serialises"))?;
        Ok(d)
    }

    /// The logged-in account, if any.
    pub fn credentials(&self) -> Result<Option<Credentials>> {
        let Some(b) = self.read("credentials.json")? else { return Ok(None) };
        let f: CredentialsFile =
            serde_json::from_slice(&b).map_err(|e| self.corrupt("credentials.json", e))?;
        let key =
            Zeroizing::new(hex::decode(&f.master_key).map_err(|e| self.corrupt("credentials.json", e))?);
        let key: [u8; 32] = key
            .as_slice()
            .try_into()
            .map_err(|_| self.corrupt("credentials.json", "bad master key length"))?;
        let settings = match f.chunk_sizes {
            None => AccountSettings::LEGACY,
            Some([min, avg, max]) => {
                let chunker = ChunkerParams { min, avg, max };
                chunker.validate().map_err(|e| self.corrupt("credentials.json", e))?;
                AccountSettings { chunker }
            }
        };
        Ok(Some(Credentials {
            server: f.server.clone(),
            username: f.username.clone(),
            token: SessionToken::new(f.token.clone()),
            master: MasterKey::from_bytes(key),
            settings,
        }))
    }

    /// Stores credentials (mode 0600).
    pub fn save_credentials(&self, c: &Credentials) -> Result<()> {
        let f = CredentialsFile {
            server: c.server.clone(),
            username: c.username.clone(),
            token: c.token.expose_secret().to_string(),
            master_key: hex::encode(c.master.expose_secret()),
            chunk_sizes: Some([c.settings.chunker.min, c.settings.chunker.avg, c.settings.chunker.max]),
        };
        let bytes = Zeroizing::new(serde_json::to_vec_pretty(&f).expect("serialises"));
        self.write_private("credentials.json", &bytes)
    }

    /// Forgets the credentials (logout).
    pub fn clear_credentials(&self) -> Result<()> {
        let path = self.dir.join("credentials.json");
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(HomeError::Io { path, source }),
        }
    }

    /// Sync roots set up on this device: absolute path → marker id.
    pub fn roots(&self) -> Result<BTreeMap<PathBuf, String>> {
        match self.read("roots.json")? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| self.corrupt("roots.json", e)),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Records a sync root (returns its marker id, new or existing).
    pub fn add_root(&self, root: &Path) -> Result<String> {
        let mut roots = self.roots()?;
        if let Some(id) = roots.get(root) {
            return Ok(id.clone());
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let id = hex::encode(id);
        roots.insert(root.to_path_buf(), id.clone());
        self.write_private("roots.json", &serde_json::to_vec_pretty(&roots).expect("serialises"))?;
        Ok(id)
    }

    /// A small file in the home (for faces that need one: the UI token...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_private_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h")).unwrap();
        assert!(home.credentials().unwrap().is_none());
        let c = Credentials {
            server: "http://127.0.0.1:1".into(),
            username: "ann".into(),
            token: SessionToken::new("secret-token".into()),
            master: MasterKey::from_bytes([3; 32]),
            settings: AccountSettings {
                chunker: ChunkerParams { min: 1 << 10, avg: 4 << 10, max: 16 << 10 },
            },
        };
        home.save_credentials(&c).unwrap();
        let mode = fs::metadata(home.path("credentials.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = home.credentials().unwrap().unwrap();
        assert_eq!(back.master.expose_secret(), &[3; 32]);
        assert_eq!(back.token.expose_secret(), "secret-token");
        assert_eq!(back.settings, c.settings);
        let shown = format!("{back:?}");
        assert!(!shown.contains("secret-token") && !shown.contains("0303"), "{shown}");
        home.clear_credentials().unwrap();
        assert!(home.credentials().unwrap().is_none());
        let d1 = home.device().unwrap();
        assert_eq!(home.device().unwrap(), d1);
        let root = dir.path().join("r");
        let id = home.add_root(&root).unwrap();
        assert_eq!(home.add_root(&root).unwrap(), id);
        fs::write(home.path("roots.json"), b"{nope").unwrap();
        assert!(matches!(home.roots(), Err(HomeError::Corrupt { .. })));
    }

    /// A device logged in before chunk sizes were a setting of the account
    /// has no sizes in its file: its account was made with the old ones.
    #[test]
    fn credentials_from_before_settings_keep_the_old_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h")).unwrap();
        let old = format!(
            r#"{{"server":"http://127.0.0.1:1","username":"ann","token":"t","master_key":"{}"}}"#,
            "03".repeat(32)
        );
        home.write_private("credentials.json", old.as_bytes()).unwrap();
        assert_eq!(home.credentials().unwrap().unwrap().settings, AccountSettings::LEGACY);
        let bad = old.replace(r#""t","#, r#""t","chunk_sizes":[9,8,7],"#);
        home.write_private("credentials.json", bad.as_bytes()).unwrap();
        assert!(matches!(home.credentials(), Err(HomeError::Corrupt { .. })));
    }
}
