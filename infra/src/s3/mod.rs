//! The object store on S3 (`s3://bucket[/prefix]`), through the `object_store` crate: the
//! same client DataFusion reads the lake with, so `qoe query` and the sink share one
//! implementation of S3's protocol.
//!
//! Credentials and region come from the AWS SDK's standard chain ([`crate::aws::load`]), so
//! every AWS adapter of a process uses one identity; credentials are cached until five minutes
//! before they expire. `AWS_ENDPOINT_URL` (or `AwsSettings::endpoint`) points it at an
//! emulator, path-style.
//!
//! A put of up to 8 MiB is one `PutObject`; a larger body streams as a multipart upload (parts
//! of 8 MiB, a few in flight), aborted if the body fails or passes its limit. Either way the
//! object appears whole or not at all.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{CredentialProvider, ObjectStore as _, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use vodsource_commands::ports::{check_key, Access, ObjectMeta, ObjectStore, Part, PutError, StoreError};

use crate::aws::AwsSettings;

mod client;
mod multipart;
mod presign;
mod setup;

pub use client::s3_client;
use client::{client_in_region, SdkCredentials};

/// Bodies up to this size go in one request; larger ones in parts of this size.
const PART: usize = 8 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A bucket and a key prefix, parsed from `s3://bucket[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix without slashes at either end; empty for the whole bucket.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://bucket[/prefix]`.
    ///
    /// # Errors
    /// `Invalid` naming the URL when it is not `s3://`, names no bucket, or has a bad prefix.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| StoreError::Invalid(format!("{url:?} is not an s3://bucket[/prefix] URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid_bucket {
            return Err(StoreError::Invalid(format!(
                "{url:?}: {bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' or '.')"
            )));
        }
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            check_key(&prefix).map_err(|_| StoreError::Invalid(format!("{url:?}: bad key prefix {prefix:?}")))?;
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    /// The location as a URL.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// The object store port on an S3 bucket, under a key prefix.
pub struct S3ObjectStore {
    client: Arc<AmazonS3>,
    location: S3Location,
    /// The region the client signs for (CreateBucket's location constraint).
    region: String,
    /// What it signs with (bucket configuration requests).
    credentials: Option<Arc<SdkCredentials>>,
    /// Requests object_store does not make (ListParts).
    http: reqwest::Client,
}

impl S3ObjectStore {
    /// A store for `s3://bucket[/prefix]`; nothing is sent until it is used
    /// ([`ObjectStore::check`] asks the bucket).
    ///
    /// # Errors
    /// A bad URL; no region configured.
    pub async fn open(url: &str, settings: &AwsSettings) -> Result<Self, StoreError> {
        let location = S3Location::parse(url)?;
        let (client, region, credentials) = client_in_region(&location.bucket, settings).await?;
        Ok(Self {
            client: Arc::new(client),
            location,
            region,
            credentials,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        })
    }

    /// The client, rooted at the bucket (for DataFusion, which is given `s3://bucket/…` URLs).
    pub fn client(&self) -> Arc<AmazonS3> {
        self.client.clone()
    }

    /// Where the store is.
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    fn path(&self, key: &str) -> Result<Path, StoreError> {
        check_key(key)?;
        let full = if self.location.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.location.prefix)
        };
        Path::parse(&full).map_err(|e| StoreError::Invalid(format!("invalid object key {key:?}: {e}")))
    }

    /// object_store's errors as the port's, in one place: the bucket, the operation and the
    /// key named, object_store's error kept as the cause.
    /// `url` presigned for a `PUT` of exactly `length` bytes (SigV4 with `content-length`
    /// among the signed headers), valid for `ttl`.
    async fn sign_put(&self, key: &str, url: &reqwest::Url, length: u64, ttl: Duration) -> Result<String, StoreError> {
        let signed = self
            .sign("PUT", url, &[("content-length", length.to_string())], ttl)
            .await
            .map_err(|e| StoreError::Invalid(format!("presigning an upload of {key}: {e}")))?;
        Ok(signed.to_string())
    }

    /// `url` presigned by this store's credentials (query-string SigV4).
    async fn sign(
        &self,
        method: &str,
        url: &reqwest::Url,
        headers: &[(&str, String)],
        ttl: Duration,
    ) -> Result<reqwest::Url, String> {
        let Some(credentials) = &self.credentials else {
            return Err(format!("signing for {} needs AWS credentials", self.location.url()));
        };
        let credential = credentials.get_credential().await.map_err(|e| e.to_string())?;
        let signer = presign::Presigner {
            key_id: &credential.key_id,
            secret: &credential.secret_key,
            token: credential.token.as_deref(),
            region: &self.region,
        };
        Ok(signer.presign(
            method,
            url,
            headers,
            ttl.as_secs().clamp(1, 7 * 24 * 3600),
            chrono::Utc::now(),
        ))
    }

    fn error(&self, what: &str, key: &str, e: object_store::Error) -> StoreError {
        StoreError::unavailable_from(format_args!("{} {what} {key}", self.location.url()), e)
    }
}

/// Reads into `buffer` until it is full or the body ends; returns how much was read.
async fn fill(body: &mut (dyn AsyncRead + Send + Unpin), buffer: &mut [u8]) -> Result<usize, PutError> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = body
            .read(&mut buffer[filled..])
            .await
            .map_err(|e| PutError::Body(e.to_string()))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put(
        &self,
        key: &str,
        mut body: Box<dyn AsyncRead + Send + Unpin>,
        max_bytes: u64,
    ) -> Result<u64, PutError> {
        let path = self.path(key)?;
        let mut buffer = vec![0u8; PART];
        let first = fill(&mut *body, &mut buffer).await?;
        if first as u64 > max_bytes {
            return Err(PutError::TooLarge { limit: max_bytes });
        }
        if first < PART {
            buffer.truncate(first);
            self.client
                .put(&path, PutPayload::from(buffer))
                .await
                .map_err(|e| self.error("put", key, e))?;
            return Ok(first as u64);
        }
        let upload = self
            .client
            .put_multipart(&path)
            .await
            .map_err(|e| self.error("multipart upload of", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        writer.write(&buffer);
        let mut written = first as u64;
        let result = async {
            loop {
                let n = fill(&mut *body, &mut buffer).await?;
                if n == 0 {
                    return Ok(());
                }
                written += n as u64;
                if written > max_bytes {
                    return Err(PutError::TooLarge { limit: max_bytes });
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.error("part of", key, e))?;
                writer.write(&buffer[..n]);
            }
        }
        .await;
        match result {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| self.error("multipart upload of", key, e))?;
                Ok(written)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key, error = %abort, "could not abort a multipart upload; the bucket's lifecycle rule removes it");
                }
                Err(e)
            }
        }
    }

    async fn fetch(&self, key: &str, dest: &FsPath, expect: Option<&ObjectMeta>) -> Result<u64, StoreError> {
        let path = self.path(key)?;
        let options = object_store::GetOptions {
            if_match: expect.and_then(|e| e.etag.clone()),
            ..Default::default()
        };
        let result = match self.client.get_opts(&path, options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotFound(format!("no object at {key}")));
            }
            Err(object_store::Error::Precondition { .. }) => {
                return Err(StoreError::Invalid(format!(
                    "object {key} was replaced after it was recorded (its ETag changed)"
                )));
            }
            Err(e) => return Err(self.error("get", key, e)),
        };
        let limit = expect.map_or(u64::MAX, |e| e.size);
        if let Some(expect) = expect {
            if result.meta.size != expect.size {
                return Err(StoreError::Invalid(format!(
                    "object {key} is {} bytes, not the {} expected",
                    result.meta.size, expect.size
                )));
            }
        }
        let local = |e: std::io::Error| StoreError::unavailable(format!("{}: {e}", dest.display()));
        let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
        let mut stream = result.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error("get", key, e))?;
            size += chunk.len() as u64;
            // The store's own length can lie (a proxy, a changed object): the bound is ours.
            if size > limit {
                return Err(StoreError::Invalid(format!(
                    "object {key} runs past the {limit} bytes expected"
                )));
            }
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        Ok(size)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(key)?;
        match self.client.head(&path).await {
            Ok(meta) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: meta.size,
                etag: meta.e_tag,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", key, e)),
        }
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectMeta>, StoreError> {
        let path = self.path(prefix.trim_end_matches('/'))?;
        let strip = if self.location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.location.prefix)
        };
        self.client
            .list(Some(&path))
            .take(limit)
            .map_ok(|meta| ObjectMeta {
                key: meta
                    .location
                    .as_ref()
                    .strip_prefix(&strip)
                    .unwrap_or(meta.location.as_ref())
                    .to_owned(),
                size: meta.size,
                etag: meta.e_tag,
            })
            .try_collect()
            .await
            .map_err(|e| self.error("list", prefix, e))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let path = self.path(prefix.trim_end_matches('/'))?;
        let locations = self.client.list(Some(&path)).map_ok(|meta| meta.location).boxed();
        let deleted: Vec<Path> = self
            .client
            .delete_stream(locations)
            .try_collect()
            .await
            .map_err(|e| self.error("delete under", prefix, e))?;
        // A key equal to the prefix is an object too (as a file is for the folder store).
        let itself = match self.client.head(&path).await {
            Ok(_) => {
                self.client
                    .delete(&path)
                    .await
                    .map_err(|e| self.error("delete", prefix, e))?;
                1
            }
            Err(object_store::Error::NotFound { .. }) => 0,
            Err(e) => return Err(self.error("head", prefix, e)),
        };
        Ok(deleted.len() as u64 + itself)
    }

    async fn read(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(key)?;
        let result = match self.client.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("get", key, e)),
        };
        if result.meta.size > max_bytes {
            return Err(StoreError::Invalid(format!(
                "object {key} is {} bytes, more than {max_bytes}",
                result.meta.size
            )));
        }
        let bytes = result.bytes().await.map_err(|e| self.error("get", key, e))?;
        Ok(Some(bytes.to_vec()))
    }

    async fn presign(&self, key: &str, access: Access, ttl: Duration) -> Result<Option<String>, StoreError> {
        use object_store::signer::Signer;
        let path = self.path(key)?;
        let method = match access {
            Access::Read => reqwest::Method::GET,
            Access::Write { .. } => reqwest::Method::PUT,
        };
        let url = self
            .client
            .signed_url(method, &path, ttl)
            .await
            .map_err(|e| self.error("presign", key, e))?;
        let Access::Write { length } = access else {
            return Ok(Some(url.to_string()));
        };
        // An upload URL signs its length too (object_store's signs the host only).
        self.sign_put(key, &url, length, ttl).await.map(Some)
    }

    fn part_size(&self) -> Option<u64> {
        Some(PART as u64)
    }

    async fn create_multipart(&self, key: &str) -> Result<String, StoreError> {
        self.start_upload(key).await
    }

    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        mut body: Box<dyn AsyncRead + Send + Unpin>,
        max_bytes: u64,
    ) -> Result<Part, PutError> {
        self.send_part(key, upload_id, number, &mut *body, max_bytes).await
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[Part]) -> Result<ObjectMeta, StoreError> {
        self.finish_upload(key, upload_id, parts).await
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<Part>, StoreError> {
        self.stored_parts(key, upload_id).await
    }

    async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        length: u64,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.sign_part(key, upload_id, number, length, ttl).await.map(Some)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.end_upload(key, upload_id).await
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    async fn check(&self) -> Result<(), StoreError> {
        let prefix = (!self.location.prefix.is_empty()).then(|| Path::from(self.location.prefix.as_str()));
        self.client
            .list_with_delimiter(prefix.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| StoreError::unavailable(format!("{}: {e}", self.location.url())))
    }

    fn describe(&self) -> String {
        self.location.url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_an_optional_prefix() {
        let at = S3Location::parse("s3://media-bucket/vod/prod/").expect("valid");
        assert_eq!(at.bucket, "media-bucket");
        assert_eq!(at.prefix, "vod/prod");
        assert_eq!(at.url(), "s3://media-bucket/vod/prod");
        assert_eq!(S3Location::parse("s3://media-bucket").expect("valid").prefix, "");
        // Each refusal names what it refused.
        for (bad, named) in [
            ("s3://", "s3://"),
            ("s3://UPPER", "UPPER"),
            ("s3://a", "\"a\""),
            ("file:///x", "file:///x"),
            ("s3://bucket/a/../b", "a/../b"),
        ] {
            let e = S3Location::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(named), "{bad}: {e}");
        }
    }
}
