//! Where media bytes live: uploaded sources and encoded renditions.

use std::path::PathBuf;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use super::StoreError;

/// What a stored object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// The store's tag of this version of the object (S3's ETag), when it keeps one: a
    /// reader that names it gets these bytes or nothing.
    pub etag: Option<String>,
}

/// What a presigned URL lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `GET` the object.
    Read,
    /// `PUT` the object, with a body of exactly `length` bytes (the signature covers the
    /// length, so the store refuses any other).
    Write {
        /// The body's length in bytes.
        length: u64,
    },
}

/// Why an object could not be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PutError {
    /// The body went past the limit; nothing was stored.
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The body could not be read to its end (the client went away); nothing was stored.
    #[error("the body could not be read: {0}")]
    Body(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One stored part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Part {
    /// Its number, from 1, in the order the object is assembled.
    pub number: u32,
    /// Its size in bytes.
    pub size: u64,
    /// The store's tag of the part (S3's ETag), which completing the upload names.
    pub etag: String,
}

/// An object store: a local folder in embedded mode, S3 when distributed. Keys are
/// `/`-separated relative paths without `.` or `..` segments.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Writes `key` from `body`, streaming, refusing more than `max_bytes`. The object
    /// appears whole or not at all; an existing object is replaced.
    ///
    /// # Errors
    /// `TooLarge`, `Body`, or `Store` (`Invalid` key, `Unavailable`).
    async fn put(&self, key: &str, body: Box<dyn AsyncRead + Send + Unpin>, max_bytes: u64) -> Result<u64, PutError>;

    /// Copies the object at `key` into the local file `dest` (created or replaced); returns
    /// its size. Workers use it when [`ObjectStore::local_path`] has nothing. With `expect`,
    /// the object must be exactly that size (and that version, when it names an ETag): no
    /// more than `expect.size` bytes are read.
    ///
    /// # Errors
    /// `NotFound` for a missing object; `Invalid` for one of another size or version than
    /// expected (the message says which), or a bad key; `Unavailable`.
    async fn fetch(&self, key: &str, dest: &std::path::Path, expect: Option<&ObjectMeta>) -> Result<u64, StoreError>;

    /// The object at `key`, if any.
    ///
    /// # Errors
    /// `Invalid` key, `Unavailable`.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// The objects under `prefix` (a key prefix ending at a `/`), at most `limit` of them, in
    /// no particular order.
    ///
    /// # Errors
    /// `Invalid` prefix, `Unavailable`.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Removes every object under `prefix`; returns how many went.
    ///
    /// # Errors
    /// `Invalid` prefix, `Unavailable`.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError>;

    /// The object at `key` in memory (playlists and manifests), if it exists.
    ///
    /// # Errors
    /// `Invalid` key or an object larger than `max_bytes`; `Unavailable`.
    async fn read(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// A URL with which anyone may `access` the object at `key` for `ttl`, needing no other
    /// credentials (S3's presigned URLs); `None` for a store without such URLs (the folder
    /// store, for which the API stands in).
    ///
    /// # Errors
    /// `Invalid` key, `Unavailable`.
    async fn presign(&self, key: &str, access: Access, ttl: std::time::Duration) -> Result<Option<String>, StoreError> {
        check_key(key)?;
        let _ = (access, ttl);
        Ok(None)
    }

    /// The size every part of a multipart upload but the last must have (S3's parts are at
    /// least 5 MiB; this store's choice), or `None` when parts may be of any size.
    fn part_size(&self) -> Option<u64> {
        None
    }

    /// Starts a multipart upload of `key`: parts are stored one by one, durably, and the
    /// object appears when [`ObjectStore::complete_multipart`] assembles them. Returns the
    /// upload's id.
    ///
    /// # Errors
    /// `Invalid` key; `Unavailable`.
    async fn create_multipart(&self, key: &str) -> Result<String, StoreError>;

    /// Stores part `number` of an upload from `body` (at most `max_bytes`), replacing a part
    /// of that number. A body that ends early stores what it had; a body that fails stores
    /// nothing.
    ///
    /// # Errors
    /// `TooLarge`, `Body`, `Store` (`NotFound` for an unknown upload, `Unavailable`).
    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Box<dyn AsyncRead + Send + Unpin>,
        max_bytes: u64,
    ) -> Result<Part, PutError>;

    /// Assembles `parts` (in order) into the object at `key` and ends the upload.
    ///
    /// # Errors
    /// `NotFound` for an unknown upload or part; `Invalid` for parts the store refuses;
    /// `Unavailable`.
    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[Part]) -> Result<ObjectMeta, StoreError>;

    /// The parts of an upload the store holds, in number order (the latest version of each):
    /// how a client that sent parts straight to the store learns what arrived.
    ///
    /// # Errors
    /// `NotFound` for an unknown upload; `Unavailable`.
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<Part>, StoreError>;

    /// A URL with which anyone may `PUT` part `number` of an upload, exactly `length` bytes
    /// (the signature covers the length), for `ttl`; `None` for a store without such URLs
    /// (the folder store).
    ///
    /// # Errors
    /// `Invalid` key or part number; `Unavailable`.
    async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        length: u64,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        check_key(key)?;
        let _ = (upload_id, number, length, ttl);
        Ok(None)
    }

    /// Ends an upload without an object, removing its parts. An unknown upload is no error.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError>;

    /// A local file for `key` when the store is a local folder (embedded media serving).
    fn local_path(&self, key: &str) -> Option<PathBuf>;

    /// Whether the store can be reached.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn check(&self) -> Result<(), StoreError>;

    /// How to name this store in logs and health checks (no secrets).
    fn describe(&self) -> String;
}

/// Checks an object key: relative, `/`-separated, no empty, `.` or `..` segments, no
/// control characters or backslashes.
///
/// # Errors
/// `Invalid`, naming the problem.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.len() > 1024
        || key.starts_with('/')
        || key.chars().any(|c| c.is_control() || c == '\\')
        || key.split('/').any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        Err(StoreError::Invalid(format!("invalid object key {key:?}")))
    } else {
        Ok(())
    }
}
