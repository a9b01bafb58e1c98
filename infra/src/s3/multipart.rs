//! Multipart uploads on S3 through `object_store`'s `MultipartStore`: parts of
//! [`PART`](super::PART) bytes (S3 wants at least 5 MiB but for the last), each buffered
//! in memory while it is sent (the caller decides how many are on their way at once).
//!
//! A client may also send parts straight to the bucket: a part's URL is presigned with its
//! length signed, and the parts that arrived are learnt with ListParts, which object_store
//! does not offer — a presigned `GET ?uploadId=` sent with the same reqwest, its XML read
//! with the same quick-xml.

use std::time::Duration;

use object_store::multipart::{MultipartStore, PartId};
use object_store::signer::Signer as _;
use object_store::PutPayload;
use serde::Deserialize;
use tokio::io::AsyncRead;
use vodsource_commands::ports::{ObjectMeta, Part, PutError, StoreError};

use super::{fill, S3ObjectStore};

/// Parts S3 lists per page (its maximum).
const PARTS_PER_PAGE: u32 = 1000;
/// Largest ListParts answer read (a page of 1,000 parts is about 250 KB).
const MAX_LISTING_BYTES: usize = 4 * 1024 * 1024;

/// S3's `ListPartsResult`, the fields read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listing {
    #[serde(default)]
    is_truncated: bool,
    next_part_number_marker: Option<u32>,
    #[serde(default, rename = "Part")]
    parts: Vec<ListedPart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedPart {
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: String,
    size: u64,
}

fn check_part_number(number: u32) -> Result<(), StoreError> {
    if number == 0 || number > 10_000 {
        return Err(StoreError::Invalid(format!(
            "S3 part numbers are 1 to 10000, not {number}"
        )));
    }
    Ok(())
}

impl S3ObjectStore {
    /// The URL of `key` with `query`, unsigned (path or virtual-hosted style, as the client
    /// addresses the bucket).
    async fn object_url(&self, key: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, StoreError> {
        let path = self.path(key)?;
        let mut url = self
            .client
            .signed_url(reqwest::Method::GET, &path, Duration::from_secs(60))
            .await
            .map_err(|e| self.error("the URL of", key, e))?;
        url.query_pairs_mut().clear().extend_pairs(query);
        Ok(url)
    }

    pub(super) async fn sign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        length: u64,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        check_part_number(number)?;
        let number = number.to_string();
        let url = self
            .object_url(key, &[("partNumber", &number), ("uploadId", upload_id)])
            .await?;
        self.sign_put(key, &url, length, ttl).await
    }

    /// ListParts, page after page.
    pub(super) async fn stored_parts(&self, key: &str, upload_id: &str) -> Result<Vec<Part>, StoreError> {
        let mut parts = Vec::new();
        let mut marker = 0u32;
        loop {
            let (marker_text, per_page) = (marker.to_string(), PARTS_PER_PAGE.to_string());
            let url = self
                .object_url(
                    key,
                    &[
                        ("max-parts", &per_page),
                        ("part-number-marker", &marker_text),
                        ("uploadId", upload_id),
                    ],
                )
                .await?;
            let signed = self
                .sign("GET", &url, &[], Duration::from_secs(60))
                .await
                .map_err(|e| StoreError::unavailable(format!("ListParts of {key}: {e}")))?;
            let mut response = self
                .http
                .get(signed)
                .send()
                .await
                .map_err(|e| StoreError::unavailable(format!("ListParts of {key}: {e}")))?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| StoreError::unavailable(format!("ListParts of {key}: {e}")))?
            {
                if body.len() + chunk.len() > MAX_LISTING_BYTES {
                    return Err(StoreError::unavailable(format!(
                        "ListParts of {key}: an answer larger than {MAX_LISTING_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            let text = String::from_utf8_lossy(&body);
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err(StoreError::NotFound(format!(
                    "{} has no such multipart upload of {key}",
                    self.location.url()
                )));
            }
            if !status.is_success() {
                return Err(StoreError::unavailable(format!(
                    "ListParts of {key}: {status}: {}",
                    text.chars().take(300).collect::<String>()
                )));
            }
            let listing: Listing = quick_xml::de::from_str(&text).map_err(|e| {
                StoreError::unavailable(format!("ListParts of {key}: an answer S3 would not give: {e}"))
            })?;
            let next = listing.next_part_number_marker;
            parts.extend(listing.parts.into_iter().map(|p| Part {
                number: p.part_number,
                size: p.size,
                etag: p.etag,
            }));
            match next {
                Some(next) if listing.is_truncated && next > marker => marker = next,
                _ => break,
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

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
        check_part_number(number)?;
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
