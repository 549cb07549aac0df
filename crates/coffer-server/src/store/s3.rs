//! [`BlobStore`] on any S3-compatible object store (AWS S3, SeaweedFS, MinIO,
//! Ceph RGW, R2, ...), through the `object_store` crate.
//!
//! Layout: `s3://BUCKET/PREFIX/<account>/<first 2 hex>/<chunk id hex>`, the
//! same as the disk store's. An S3 `PUT` is atomic (a reader sees a whole
//! object or none) and two puts of one id write identical bytes, so the
//! trait's guarantees hold without temp names.
//!
//! The trait is synchronous and `object_store` is async: the store owns a
//! small tokio runtime and each call runs there while the calling (blocking
//! pool) thread waits on a channel. That works from any thread, inside
//! another runtime's blocking pool or not.
//!
//! Settings: [`S3Config`] from an `s3://bucket[/prefix]` URL plus endpoint,
//! region and credentials; anything left unset falls back to the usual
//! `AWS_*` environment variables. Plain HTTP is allowed only to a loopback
//! endpoint, unless the operator says otherwise.

use std::fmt;
use std::sync::mpsc;

use coffer_proto::ChunkId;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use super::{AccountId, BlobStore, StoreError, StoreResult};

/// Where and how to reach the bucket.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`), may be empty.
    pub prefix: String,
    /// Endpoint URL for non-AWS stores, e.g. `http://127.0.0.1:8333`.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` when unset and not in the environment).
    pub region: Option<String>,
    /// Access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (else `AWS_SECRET_ACCESS_KEY`). Never printed.
    pub secret_access_key: Option<String>,
    /// Allow plain HTTP to a non-loopback endpoint.
    pub allow_http: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "****"))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Config {
    /// Parses `s3://bucket` or `s3://bucket/prefix/path`.
    pub fn from_url(url: &str) -> StoreResult<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| StoreError::Backend(format!("not an s3:// URL: {url}")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Backend(format!("no bucket in {url}")));
        }
        Ok(Self { bucket: bucket.to_owned(), prefix: prefix.trim_matches('/').to_owned(), ..Self::default() })
    }

    fn endpoint_is_loopback(&self) -> bool {
        let Some(ep) = &self.endpoint else { return false };
        let rest = ep.split_once("://").map_or(ep.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or("");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.split(':').next().unwrap_or(""),
        };
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// Chunks as objects in an S3 bucket.
pub struct S3BlobStore {
    store: AmazonS3,
    prefix: String,
    runtime: Option<tokio::runtime::Runtime>,
    bucket: String,
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BlobStore").field("bucket", &self.bucket).field("prefix", &self.prefix).finish()
    }
}

fn backend(e: object_store::Error) -> StoreError {
    StoreError::Backend(format!("object store: {e}"))
}

impl S3BlobStore {
    /// Builds the client. Does not touch the network: a wrong bucket or
    /// credentials show up on the first call.
    pub fn open(config: &S3Config) -> StoreResult<Self> {
        let plain = config.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        if plain && !config.allow_http && !config.endpoint_is_loopback() {
            return Err(StoreError::Backend(format!(
                "refusing plain HTTP to S3 endpoint {}: use https, or allow it explicitly (--s3-allow-http)",
                config.endpoint.as_deref().unwrap_or_default()
            )));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&config.bucket).with_allow_http(plain);
        if let Some(ep) = &config.endpoint {
            b = b.with_endpoint(ep);
        }
        if let Some(r) = &config.region {
            b = b.with_region(r);
        }
        if let Some(k) = &config.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &config.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let store = b.build().map_err(backend)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("coffer-s3")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the S3 client runtime: {e}")))?;
        Ok(Self {
            store,
            prefix: config.prefix.clone(),
            runtime: Some(runtime),
            bucket: config.bucket.clone(),
        })
    }

    fn key(&self, account: AccountId, id: ChunkId) -> Path {
        let hex = id.to_hex();
        let key = format!("{}/{}/{hex}", account.0, &hex[..2]);
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Runs `fut` on the store's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = StoreResult<T>> + Send + 'static,
    ) -> StoreResult<T> {
        let rt = self.runtime.as_ref().ok_or_else(|| StoreError::Backend("S3 store closed".into()))?;
        let (tx, rx) = mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().unwrap_or_else(|_| Err(StoreError::Backend("S3 call abandoned".into())))
    }
}

impl Drop for S3BlobStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which async code must not do.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl BlobStore for S3BlobStore {
    fn put(&self, account: AccountId, id: ChunkId, bytes: &[u8]) -> StoreResult<()> {
        let (store, key, payload) =
            (self.store.clone(), self.key(account, id), PutPayload::from(bytes.to_vec()));
        self.run(async move { store.put(&key, payload).await.map(|_| ()).map_err(backend) })
    }

    fn get(&self, account: AccountId, id: ChunkId) -> StoreResult<Option<Vec<u8>>> {
        let (store, key) = (self.store.clone(), self.key(account, id));
        self.run(async move {
            match store.get(&key).await {
                Ok(got) => Ok(Some(got.bytes().await.map_err(backend)?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(backend(e)),
            }
        })
    }

    /// `HEAD` requests, 32 at a time.
    fn lacking(&self, account: AccountId, ids: &[ChunkId]) -> StoreResult<Vec<ChunkId>> {
        let store = self.store.clone();
        let keys: Vec<(ChunkId, Path)> = ids.iter().map(|id| (*id, self.key(account, *id))).collect();
        self.run(async move {
            let mut out = Vec::new();
            for group in keys.chunks(32) {
                let heads: Vec<_> = group
                    .iter()
                    .map(|(id, key)| {
                        let (store, key, id) = (store.clone(), key.clone(), *id);
                        tokio::spawn(async move { (id, store.head(&key).await) })
                    })
                    .collect();
                for head in heads {
                    let (id, found) =
                        head.await.map_err(|e| StoreError::Backend(format!("S3 HEAD task: {e}")))?;
                    match found {
                        Ok(_) => {}
                        Err(object_store::Error::NotFound { .. }) => out.push(id),
                        Err(e) => return Err(backend(e)),
                    }
                }
            }
            Ok(out)
        })
    }

    fn delete(&self, account: AccountId, id: ChunkId) -> StoreResult<()> {
        let (store, key) = (self.store.clone(), self.key(account, id));
        self.run(async move {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(backend(e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = S3Config::from_url("s3://bucket/some/prefix/").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bucket", "some/prefix"));
        let c = S3Config::from_url("s3://b").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("b", ""));
        assert!(S3Config::from_url("s3:///x").is_err());
        assert!(S3Config::from_url("http://b").is_err());
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        let mut c = S3Config::from_url("s3://b").unwrap();
        for (ep, ok) in [
            ("http://127.0.0.1:8333", true),
            ("http://localhost:9000", true),
            ("http://[::1]:9000", true),
            ("http://10.0.0.5:9000", false),
            ("https://s3.example.com", true),
        ] {
            c.endpoint = Some(ep.into());
            assert_eq!(S3BlobStore::open(&c).is_ok(), ok, "{ep}");
        }
        c.endpoint = Some("http://10.0.0.5:9000".into());
        c.allow_http = true;
        assert!(S3BlobStore::open(&c).is_ok());
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = S3Config { secret_access_key: Some("hunter2".into()), ..S3Config::default() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
