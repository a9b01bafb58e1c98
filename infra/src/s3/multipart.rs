//! Multipart uploads on S3 through `object_store`'s `MultipartStore`: parts of
//! [`PART`](super::PART) bytes (S3 wants at least 5 MiB but for the last), each buffered
//! in memory while it is sent (the caller decides how many are on their way at once).

use object_store::multipart::{MultipartStore, PartId};
use object_store::PutPayload;
use tokio::io::AsyncRead;
use vodsource_commands::ports::{ObjectMeta, Part, PutError, StoreError};

use super::{fill, S3ObjectStore};

impl S3ObjectStore {
    /// object_store's answer about an upload: a 404 is an unknown upload, the rest as
    /// [`S3ObjectStore::error`] maps it.
    fn upload_error(&self, what: &str, key: &str, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => {
                StoreError::NotFound(format!("{} has no such multipart upload of {key}", self.location.url()))
            }
            e => self.error(what, key, e),
        }
    }

    pub(super) async fn start_upload(&self, key: &str) -> Result<String, StoreError> {
        let path = self.path(key)?;
        self.client
            .create_multipart(&path)
            .await
            .map_err(|e| self.error("create a multipart upload of", key, e))
    }

    pub(super) async fn send_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: &mut (dyn AsyncRead + Send + Unpin),
        max_bytes: u64,
    ) -> Result<Part, PutError> {
        let path = self.path(key)?;
        if number == 0 || number > 10_000 {
            return Err(StoreError::Invalid(format!("S3 part numbers are 1 to 10000, not {number}")).into());
        }
        // One byte more than allowed tells a body that is too large.
        let limit = usize::try_from(max_bytes.saturating_add(1)).unwrap_or(usize::MAX);
        let mut buffer = vec![0u8; limit.min(super::PART + 1)];
        let mut filled = fill(body, &mut buffer).await?;
        if filled == buffer.len() && buffer.len() < limit {
            // A part larger than the usual: read on, to the limit.
            buffer.resize(limit, 0);
            filled += fill(body, &mut buffer[filled..]).await?;
        }
        if filled as u64 > max_bytes {
            return Err(PutError::TooLarge { limit: max_bytes });
        }
        buffer.truncate(filled);
        let size = filled as u64;
        let id = self
            .client
            .put_part(
                &path,
                &upload_id.to_owned(),
                number as usize - 1,
                PutPayload::from(buffer),
            )
            .await
            .map_err(|e| self.upload_error("put a part of", key, e))?;
        Ok(Part {
            number,
            size,
            etag: id.content_id,
        })
    }

    pub(super) async fn finish_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
    ) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key)?;
        let ids = parts
            .iter()
            .map(|p| PartId {
                content_id: p.etag.clone(),
            })
            .collect();
        let result = self
            .client
            .complete_multipart(&path, &upload_id.to_owned(), ids)
            .await
            .map_err(|e| self.upload_error("complete the multipart upload of", key, e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: parts.iter().map(|p| p.size).sum(),
            etag: result.e_tag,
        })
    }

    pub(super) async fn end_upload(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match self.client.abort_multipart(&path, &upload_id.to_owned()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("abort the multipart upload of", key, e)),
        }
    }
}
