//! `coffer server`: the cloud store.
//!
//! Settings come from, in order of precedence: command-line flags, then
//! `COFFER_SERVER_*` environment variables, then the optional TOML file
//! given by `--config` (keys are the flag names with `_` for `-`), then the
//! defaults shown in `--help`. Embedded storage lives under `--data`:
//! `coffer.db` (SQLite) and `chunks/`. For several instances, `--meta
//! postgres://...` and `--blobs s3://bucket` put them in PostgreSQL and an
//! S3-compatible bucket instead (see `docs/deploy.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use coffer_server::http::HttpConfig;
use coffer_server::ratelimit::RateLimit;
use coffer_server::server::{open_stores, serve, BlobLocation, ListenConfig, MetaLocation, TlsFiles};
use coffer_server::store::s3::S3Config;
use coffer_server::ServiceConfig;
use serde::Deserialize;

/// Settings of `coffer server`. Every flag can also be set by its
/// environment variable or in the `--config` file.
#[derive(Debug, Clone, Default, Parser, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Args {
    /// TOML file with any of these settings (flags and environment win).
    #[arg(long, env = "COFFER_SERVER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7878]. Port 0 picks a free port.
    #[arg(long, env = "COFFER_SERVER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data folder: SQLite metadata and chunk files [default: ./coffer-data].
    #[arg(long, env = "COFFER_SERVER_DATA")]
    pub data: Option<PathBuf>,
    /// Metadata store: `sqlite` (the file `coffer.db` under --data) or a
    /// PostgreSQL URL `postgres://USER:PASSWORD@HOST:PORT/DB`, which several
    /// instances can share [default: sqlite].
    #[arg(long, env = "COFFER_SERVER_META", value_name = "sqlite|postgres://...", hide_env_values = true)]
    pub meta: Option<Secret>,
    /// Chunk store: `disk` (the folder `chunks/` under --data) or an
    /// S3-compatible bucket `s3://BUCKET[/PREFIX]`, which several instances
    /// can share [default: disk].
    #[arg(long, env = "COFFER_SERVER_BLOBS", value_name = "disk|s3://...")]
    pub blobs: Option<String>,
    /// S3 endpoint for stores other than AWS, e.g. `https://s3.example.com`
    /// (else `AWS_ENDPOINT`, else AWS).
    #[arg(long, env = "COFFER_SERVER_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (else `AWS_REGION`) [default: us-east-1].
    #[arg(long, env = "COFFER_SERVER_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id (else `AWS_ACCESS_KEY_ID`).
    #[arg(long, env = "COFFER_SERVER_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (else `AWS_SECRET_ACCESS_KEY`). Never printed;
    /// prefer the environment or the config file to a flag.
    #[arg(long, env = "COFFER_SERVER_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<Secret>,
    /// Allow plain HTTP to a non-loopback S3 endpoint (private networks only).
    #[arg(long, env = "COFFER_SERVER_S3_ALLOW_HTTP", num_args = 0..=1, default_missing_value = "true")]
    pub s3_allow_http: Option<bool>,
    /// TLS certificate chain (PEM). With --tls-key, serves HTTPS.
    #[arg(long, env = "COFFER_SERVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). Only its path is ever printed.
    #[arg(long, env = "COFFER_SERVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (only behind a TLS proxy).
    #[arg(long, env = "COFFER_SERVER_INSECURE_PLAIN_HTTP", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_plain_http: Option<bool>,
    /// Quota of new accounts, in bytes [default: 50000000000].
    #[arg(long, env = "COFFER_SERVER_DEFAULT_QUOTA_BYTES")]
    pub default_quota_bytes: Option<u64>,
    /// How long device sessions last, in days [default: 30].
    #[arg(long, env = "COFFER_SERVER_SESSION_TTL_DAYS")]
    pub session_ttl_days: Option<u64>,
    /// How long old revisions and deleted files are kept, in days [default: 30].
    #[arg(long, env = "COFFER_SERVER_VERSION_RETENTION_DAYS")]
    pub version_retention_days: Option<u64>,
    /// Grace period before an unreferenced chunk is collected, in minutes [default: 60].
    #[arg(long, env = "COFFER_SERVER_GC_GRACE_MINUTES")]
    pub gc_grace_minutes: Option<u64>,
    /// How often retention and garbage collection run, in seconds [default: 600].
    #[arg(long, env = "COFFER_SERVER_MAINTENANCE_INTERVAL_SECS")]
    pub maintenance_interval_secs: Option<u64>,
    /// Longest journal long-poll held, in seconds [default: 60].
    #[arg(long, env = "COFFER_SERVER_MAX_LONG_POLL_SECS")]
    pub max_long_poll_secs: Option<u64>,
    /// Largest JSON request body, in bytes [default: 4194304].
    #[arg(long, env = "COFFER_SERVER_JSON_BODY_LIMIT")]
    pub json_body_limit: Option<usize>,
    /// Largest chunk-upload body, in bytes [default: 67108864].
    #[arg(long, env = "COFFER_SERVER_CHUNK_BODY_LIMIT")]
    pub chunk_body_limit: Option<usize>,
    /// Time allowed to send and answer one request, in seconds [default: 120].
    #[arg(long, env = "COFFER_SERVER_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Time allowed to send request headers, in seconds [default: 30].
    #[arg(long, env = "COFFER_SERVER_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Login attempts allowed at once per account name [default: 10].
    #[arg(long, env = "COFFER_SERVER_LOGIN_BURST_PER_ACCOUNT")]
    pub login_burst_per_account: Option<u32>,
    /// Login attempts regained per minute per account name [default: 10].
    #[arg(long, env = "COFFER_SERVER_LOGIN_PER_MINUTE_PER_ACCOUNT")]
    pub login_per_minute_per_account: Option<u32>,
    /// Login attempts allowed at once per client address [default: 30].
    #[arg(long, env = "COFFER_SERVER_LOGIN_BURST_PER_ADDRESS")]
    pub login_burst_per_address: Option<u32>,
    /// Login attempts regained per minute per client address [default: 60].
    #[arg(long, env = "COFFER_SERVER_LOGIN_PER_MINUTE_PER_ADDRESS")]
    pub login_per_minute_per_address: Option<u32>,
    /// Administration: set one account's quota (`NAME=BYTES`) and exit.
    #[arg(long, value_name = "NAME=BYTES")]
    #[serde(skip)]
    pub set_quota: Option<String>,
    /// Log filter (tracing `EnvFilter` syntax) [default: info].
    #[arg(long, env = "COFFER_LOG")]
    pub log: Option<String>,
}

/// A setting that may hold a password: printed as `****` (a URL keeps all
/// but its password).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.contains("://") {
            f.write_str(&coffer_server::server::redact_url(&self.0))
        } else {
            f.write_str("****")
        }
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The settings after merging flags, environment, file and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where and how to listen.
    pub listen: ListenConfig,
    /// The data folder.
    pub data: PathBuf,
    /// Where metadata lives.
    pub meta: MetaLocation,
    /// Where chunk bytes live.
    pub blobs: BlobLocation,
    /// Service settings.
    pub service: ServiceConfig,
    /// Transport settings.
    pub http: HttpConfig,
}

const DAY: u64 = 86_400;

impl Args {
    /// Fills what flags and environment left unset from `file`.
    fn or(self, file: Args) -> Args {
        macro_rules! merge {
            ($($f:ident),*) => { Args { $($f: self.$f.or(file.$f),)* config: self.config, set_quota: self.set_quota } };
        }
        merge!(
            listen,
            data,
            meta,
            blobs,
            s3_endpoint,
            s3_region,
            s3_access_key_id,
            s3_secret_access_key,
            s3_allow_http,
            tls_cert,
            tls_key,
            insecure_plain_http,
            default_quota_bytes,
            session_ttl_days,
            version_retention_days,
            gc_grace_minutes,
            maintenance_interval_secs,
            max_long_poll_secs,
            json_body_limit,
            chunk_body_limit,
            request_timeout_secs,
            header_timeout_secs,
            login_burst_per_account,
            login_per_minute_per_account,
            login_burst_per_address,
            login_per_minute_per_address,
            log
        )
    }

    /// Applies defaults.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let sd = ServiceConfig::default();
        let hd = HttpConfig::default();
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let data = self.data.clone().unwrap_or_else(|| PathBuf::from("coffer-data"));
        let meta = match self.meta.as_ref().map(|m| m.0.as_str()) {
            None | Some("sqlite") => MetaLocation::Sqlite(data.join("coffer.db")),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                MetaLocation::Postgres(url.to_owned())
            }
            Some(other) => {
                anyhow::bail!("--meta {:?}: expected `sqlite` or a postgres:// URL", Secret(other.to_owned()))
            }
        };
        let blobs = match self.blobs.as_deref() {
            None | Some("disk") => BlobLocation::Disk(data.join("chunks")),
            Some(url) if url.starts_with("s3://") => {
                let mut c = S3Config::from_url(url).map_err(|e| anyhow::anyhow!("--blobs {url}: {e}"))?;
                c.endpoint = self.s3_endpoint.clone();
                c.region = self.s3_region.clone();
                c.access_key_id = self.s3_access_key_id.clone();
                c.secret_access_key = self.s3_secret_access_key.as_ref().map(|s| s.0.clone());
                c.allow_http = self.s3_allow_http.unwrap_or(false);
                BlobLocation::S3(c)
            }
            Some(other) => anyhow::bail!("--blobs {other}: expected `disk` or an s3:// URL"),
        };
        Ok(Settings {
            meta,
            blobs,
            listen: ListenConfig {
                addr: self.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7878))),
                tls,
                insecure_plain_http: self.insecure_plain_http.unwrap_or(false),
                maintenance_every: Duration::from_secs(self.maintenance_interval_secs.unwrap_or(600).max(1)),
            },
            data,
            service: ServiceConfig {
                default_quota_bytes: self.default_quota_bytes.unwrap_or(sd.default_quota_bytes),
                session_ttl: self.session_ttl_days.map_or(sd.session_ttl, |d| Duration::from_secs(d * DAY)),
                version_retention: self
                    .version_retention_days
                    .map_or(sd.version_retention, |d| Duration::from_secs(d * DAY)),
                gc_grace: self.gc_grace_minutes.map_or(sd.gc_grace, |m| Duration::from_secs(m * 60)),
                max_long_poll: self.max_long_poll_secs.map_or(sd.max_long_poll, Duration::from_secs),
                max_page: sd.max_page,
                login_limit_per_account: RateLimit {
                    burst: self.login_burst_per_account.unwrap_or(sd.login_limit_per_account.burst),
                    per_minute: self
                        .login_per_minute_per_account
                        .unwrap_or(sd.login_limit_per_account.per_minute),
                },
                login_limit_per_address: RateLimit {
                    burst: self.login_burst_per_address.unwrap_or(sd.login_limit_per_address.burst),
                    per_minute: self
                        .login_per_minute_per_address
                        .unwrap_or(sd.login_limit_per_address.per_minute),
                },
            },
            http: HttpConfig {
                json_body_limit: self.json_body_limit.unwrap_or(hd.json_body_limit),
                // A commit names every chunk of a new file: never less room
                // than other JSON bodies get.
                commit_body_limit: hd.commit_body_limit.max(self.json_body_limit.unwrap_or(0)),
                chunk_body_limit: self.chunk_body_limit.unwrap_or(hd.chunk_body_limit),
                request_timeout: self.request_timeout_secs.map_or(hd.request_timeout, Duration::from_secs),
                header_timeout: self.header_timeout_secs.map_or(hd.header_timeout, Duration::from_secs),
            },
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<Args> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Merges flags, environment and the config file.
pub fn resolve(args: Args) -> anyhow::Result<Args> {
    Ok(match args.config.clone() {
        Some(path) => args.or(read_file(&path)?),
        None => args,
    })
}

/// Runs `coffer server` until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let args = resolve(args)?;
    let filter = tracing_subscriber::EnvFilter::try_new(args.log.as_deref().unwrap_or("info"))
        .context("invalid --log filter")?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let settings = args.settings()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (meta, blobs) = (settings.meta.clone(), settings.blobs.clone());
        let service = open_stores(meta, blobs, settings.service.clone()).await.with_context(|| {
            format!(
                "opening the stores (data folder {}, {:?}, {:?})",
                settings.data.display(),
                settings.meta,
                settings.blobs
            )
        })?;
        if let Some(spec) = &args.set_quota {
            let (name, bytes) = spec.rsplit_once('=').context("--set-quota wants NAME=BYTES")?;
            let bytes: u64 = bytes.parse().context("--set-quota: BYTES must be a number")?;
            service.set_quota(name, bytes).await?;
            println!("quota of {name} set to {bytes} bytes");
            return Ok(());
        }
        let server = serve(service, settings.http.clone(), settings.listen.clone()).await?;
        println!("coffer server listening on {}", server.base_url());
        shutdown_signal().await;
        tracing::info!("shutting down");
        server.shutdown(Duration::from_secs(10)).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_defaults_fill_the_rest() {
        let flags =
            Args::try_parse_from(["server", "--listen", "127.0.0.1:9000", "--insecure-plain-http"]).unwrap();
        assert_eq!(flags.insecure_plain_http, Some(true));
        let file: Args = toml::from_str(
            "listen = \"127.0.0.1:1\"\ndata = \"/srv/coffer\"\ndefault_quota_bytes = 5\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"",
        )
        .unwrap();
        let s = flags.or(file).settings().unwrap();
        assert_eq!(s.listen.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.data, PathBuf::from("/srv/coffer"));
        assert_eq!(s.service.default_quota_bytes, 5);
        assert_eq!(s.listen.tls.unwrap().key, PathBuf::from("k.pem"));
        assert_eq!(s.http.chunk_body_limit, 64 << 20);
        assert!(toml::from_str::<Args>("no_such_setting = 1").is_err());
        assert_eq!(s.meta, MetaLocation::Sqlite(PathBuf::from("/srv/coffer/coffer.db")));
        assert_eq!(s.blobs, BlobLocation::Disk(PathBuf::from("/srv/coffer/chunks")));
    }

    #[test]
    fn scale_out_stores_and_secrets_stay_hidden() {
        let flags = Args::try_parse_from([
            "server",
            "--meta",
            "postgres://coffer:pa55word@db.internal:5432/coffer",
            "--blobs",
            "s3://coffer-chunks/prod",
            "--s3-endpoint",
            "https://s3.example.com",
        ])
        .unwrap();
        let file: Args = toml::from_str(
            "s3_region = \"eu-west-1\"\ns3_access_key_id = \"AKIA1\"\ns3_secret_access_key = \"sekrit\"",
        )
        .unwrap();
        let args = flags.or(file);
        let s = args.settings().unwrap();
        assert_eq!(
            s.meta,
            MetaLocation::Postgres("postgres://coffer:pa55word@db.internal:5432/coffer".into())
        );
        let BlobLocation::S3(c) = &s.blobs else { panic!("expected S3, got {:?}", s.blobs) };
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("coffer-chunks", "prod"));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.secret_access_key.as_deref(), Some("sekrit"));
        for printed in [format!("{args:?}"), format!("{s:?}")] {
            assert!(!printed.contains("pa55word") && !printed.contains("sekrit"), "{printed}");
            assert!(printed.contains("db.internal"), "{printed}");
        }
        assert!(Args::try_parse_from(["server", "--meta", "mysql://x"]).unwrap().settings().is_err());
        assert!(Args::try_parse_from(["server", "--blobs", "gs://x"]).unwrap().settings().is_err());
    }
}
