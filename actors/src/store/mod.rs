//! The object store: where each distinct content is stored once, under its key
//! (`crate::key`). Two backends with one interface: S3-compatible and a local folder.
//!
//! A backend never stores bytes whose SHA-256 differs from the registered one: an S3 store
//! checks the hash we send in the form it verifies, or the object is read back and hashed
//! (see [`integrity`]); the local backend hashes while it copies.

pub mod integrity;
mod local;
mod s3;

pub use integrity::{Integrity, IntegrityMode};
pub use local::LocalStore;
pub use s3::{request_url, sdk_endpoint, S3Settings, S3Store, DEFAULT_REQUEST_TIMEOUT};

use std::path::Path;

/// Where catalog exports go: outside `files/`, so that no content key can clash with them.
pub const CATALOG_EXPORT_PREFIX: &str = "_filemetasync/catalog/";

/// What went wrong with a store operation, split by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bytes read from the source are not the registered content: try another copy,
    /// or wait for the next scan to register the new content.
    #[error("content differs from its registered SHA-256: {0}")]
    ContentMismatch(String),
    /// The store cannot be reached (connection refused, timeout, 503): nothing is wrong with
    /// the content; the uploader stops and restarts with backoff until the store is back.
    #[error("object store unreachable: {0}")]
    Unavailable(String),
    /// Anything else (server, permissions): retried with backoff.
    #[error("{0}")]
    Other(String),
}

/// The content to store: its registered hash and size, and the key it goes under.
#[derive(Clone, Debug)]
pub struct Content {
    pub sha256: String,
    pub size: u64,
    pub key: String,
    /// The digests of its parts, taken while it was hashed: a multipart upload with the same
    /// part size signs its parts with them instead of hashing the file again.
    pub parts: Option<std::sync::Arc<crate::fs::PartDigests>>,
}

#[derive(Clone, Debug)]
pub enum ObjectStore {
    S3(S3Store),
    Local(LocalStore),
}

/// The same store: made from the same settings (bucket, endpoint, keys, CA, limits).
impl PartialEq for ObjectStore {
    fn eq(&self, other: &ObjectStore) -> bool {
        match (self, other) {
            (ObjectStore::S3(one), ObjectStore::S3(other)) => one.settings() == other.settings(),
            (ObjectStore::Local(one), ObjectStore::Local(other)) => one == other,
            _ => false,
        }
    }
}

impl ObjectStore {
    /// The size of the object under `key`, or None if there is none.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self {
            ObjectStore::S3(store) => store.head(key).await,
            ObjectStore::Local(store) => store.head(key).await,
        }
    }

    /// Store the bytes of `source` as `content`, refusing anything that does not hash to it.
    pub async fn put_file(&self, content: &Content, source: &Path) -> Result<(), StoreError> {
        self.put_file_paced(content, source, &crate::upload_controls::RateLimiter::new(0))
            .await
    }

    /// `put_file` within a bandwidth limit: each part of a multipart upload waits for its
    /// share just before it is sent, so a large file is paced over its transfer instead of
    /// waiting for all of it up front.
    pub async fn put_file_paced(
        &self,
        content: &Content,
        source: &Path,
        limiter: &crate::upload_controls::RateLimiter,
    ) -> Result<(), StoreError> {
        if !crate::key::is_valid_key(&content.key) {
            return Err(StoreError::Other(format!(
                "refusing malformed object key {:?}",
                content.key
            )));
        }
        match self {
            ObjectStore::S3(store) => store.put_file(content, source, limiter).await,
            ObjectStore::Local(store) => {
                limiter.acquire(content.size).await;
                store.put_file(content, source).await
            }
        }
    }

    /// SHA-256 (hex) and size of the stored object, read back in full (for `verify --deep`).
    pub async fn read_digest(&self, key: &str) -> Result<Option<(String, u64)>, StoreError> {
        match self {
            ObjectStore::S3(store) => store.read_digest(key).await,
            ObjectStore::Local(store) => store.read_digest(key).await,
        }
    }

    /// Store a catalog export (a file of ours, not a content) under `key`, which must be
    /// under [`CATALOG_EXPORT_PREFIX`]; verified like any upload.
    pub async fn put_export(&self, key: &str, source: &Path) -> Result<(), StoreError> {
        let name = key.strip_prefix(CATALOG_EXPORT_PREFIX).unwrap_or("");
        if name.is_empty() || name.contains('/') {
            return Err(StoreError::Other(format!("refusing export key {key:?}")));
        }
        let path = source.to_owned();
        let (sha256, size) =
            tokio::task::spawn_blocking(move || std::fs::File::open(path).and_then(crate::fs::hash::digest))
                .await
                .map_err(|error| StoreError::Other(error.to_string()))?
                .map_err(|error| StoreError::Other(format!("{}: {error}", source.display())))?;
        let content = Content {
            sha256,
            size,
            key: key.to_owned(),
            parts: None,
        };
        match self {
            ObjectStore::S3(store) => {
                store
                    .put_file(&content, source, &crate::upload_controls::RateLimiter::new(0))
                    .await
            }
            ObjectStore::Local(store) => store.put_file(&content, source).await,
        }
    }

    /// The catalog exports in the store, with their sizes.
    pub async fn list_exports(&self) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            ObjectStore::S3(store) => store.list_prefix(CATALOG_EXPORT_PREFIX).await,
            ObjectStore::Local(store) => store.list_folder(CATALOG_EXPORT_PREFIX.trim_end_matches('/')).await,
        }
    }

    /// Write the object under `key` to the file `dest` (created or truncated), hashing it on
    /// the way: its SHA-256 and size, or None when the store has no such object. The caller
    /// compares the hash before it uses the file.
    pub async fn download(&self, key: &str, dest: &Path) -> Result<Option<(String, u64)>, StoreError> {
        match self {
            ObjectStore::S3(store) => {
                let mut file = std::fs::File::create(dest)
                    .map_err(|error| StoreError::Other(format!("{}: {error}", dest.display())))?;
                let mut writer = std::io::BufWriter::with_capacity(256 << 10, &mut file);
                let digest = store.read_into(key, &mut writer).await?;
                std::io::Write::flush(&mut writer)
                    .map_err(|error| StoreError::Other(format!("{}: {error}", dest.display())))?;
                Ok(digest)
            }
            ObjectStore::Local(store) => store.download(key, dest).await,
        }
    }

    /// Remove the object under `key` (`verify --repair`, for an object whose bytes are wrong,
    /// so that the upload that replaces it is not skipped as already stored).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            ObjectStore::S3(store) => store.delete(key).await,
            ObjectStore::Local(store) => store.delete(key).await,
        }
    }

    /// Every object under `files/`, with its size.
    pub async fn list_keys(&self) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            ObjectStore::S3(store) => store.list_keys().await,
            ObjectStore::Local(store) => store.list_keys().await,
        }
    }

    /// The checks in force now (before a probe, those safe on any store).
    pub fn integrity(&self) -> Integrity {
        match self {
            ObjectStore::S3(store) => store.integrity(),
            ObjectStore::Local(_) => Integrity::local(),
        }
    }

    /// Decide how uploads are verified on this store (`storage.integrity`; `auto` probes
    /// it). Called when an uploader starts.
    pub async fn prepare_integrity(&self) -> Result<Integrity, StoreError> {
        match self {
            ObjectStore::S3(store) => store.prepare_integrity().await,
            ObjectStore::Local(_) => Ok(Integrity::local()),
        }
    }

    /// How it takes large files in parts (the hashers take each part's digest for it).
    pub fn part_layout(&self) -> Option<crate::fs::PartLayout> {
        match self {
            ObjectStore::S3(store) => Some(store.part_layout()),
            ObjectStore::Local(_) => None,
        }
    }

    /// A short description for logs and `status` (never credentials).
    pub fn describe(&self) -> String {
        match self {
            ObjectStore::S3(store) => store.describe(),
            ObjectStore::Local(store) => store.describe(),
        }
    }
}
