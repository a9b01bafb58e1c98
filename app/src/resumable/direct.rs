//! Direct uploads: a multipart upload whose parts a client sends straight to the object store
//! (S3), each to a URL this service presigns with the part's exact length, so the service
//! never carries the bytes. The calls are Uppy Companion's S3 multipart protocol (create,
//! sign a part, list parts, complete, abort); what authorizes them is a grant in the URL,
//! given with the video's registration, as the single `PUT` URL is.
//!
//! The declared size bounds the upload: parts have one size (the store's, or more when the
//! source would need over 10,000 parts) but the last, each part's URL signs its length, and
//! completion assembles only parts 1 to N of exactly those sizes. The state is a manifest
//! like a tus upload's, so the sweeper aborts an abandoned one.

use chrono::{DateTime, Utc};
use vodsource_commands::ports::{Part, StoreError};

use super::{upload_not_found, uploadable, Manifest, Resumable};
use crate::error::{AppError, ErrorKind};
use crate::principal::{Principal, Role};
use crate::signing::DirectClaims;

/// The form of a direct-upload grant (two base64url runs joined by a dot).
pub const DIRECT_GRANT_PATTERN: &str = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$";

/// S3's most parts per upload.
const MAX_PARTS: u64 = 10_000;
/// Parts are a whole number of these.
const MIB: u64 = 1024 * 1024;
/// Parts named in a refusal, at most.
const NAMED_PARTS: usize = 20;

/// A direct upload, as its client learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectUpload {
    /// The upload's id.
    pub id: String,
    /// The object it becomes.
    pub key: String,
    /// The video whose source it is.
    pub video_id: String,
    /// Every part's size but the last's.
    pub part_size: u64,
    /// How many parts.
    pub parts: u32,
    /// Bytes in all.
    pub length: u64,
    /// Parts must be sent and the upload completed before this.
    pub expires_at: DateTime<Utc>,
}

/// A part's upload URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPart {
    /// `PUT` the part here.
    pub url: String,
    /// With exactly this many bytes (the signature covers `Content-Length`).
    pub length: u64,
    /// The URL stops working at this time.
    pub expires_at: DateTime<Utc>,
}

/// The part size for `length` bytes: the store's, or the smallest whole number of MiB that
/// keeps the count within S3's 10,000.
fn part_size(store: u64, length: u64) -> u64 {
    let needed = length.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    store.max(needed).max(1)
}

impl Manifest {
    fn direct(&self) -> DirectUpload {
        let part_size = self.direct_part_size.unwrap_or(1).max(1);
        DirectUpload {
            id: self.id.clone(),
            key: self.key.clone(),
            video_id: self.video_id.clone(),
            part_size,
            parts: u32::try_from(self.length.div_ceil(part_size).max(1)).unwrap_or(u32::MAX),
            length: self.length,
            expires_at: self.expires_at,
        }
    }
}

impl DirectUpload {
    /// Part `number`'s exact size.
    fn part_length(&self, number: u32) -> u64 {
        let start = u64::from(number - 1) * self.part_size;
        self.part_size.min(self.length - start)
    }
}

impl Resumable<'_> {
    /// What a grant allows.
    fn grant(&self, grant: &str) -> Result<DirectClaims, AppError> {
        self.core.signer.verify(grant, self.core.now()).map_err(|e| {
            AppError::new(
                ErrorKind::Forbidden,
                "FORBIDDEN",
                format!("the direct upload grant is refused: {e}"),
                serde_json::json!(null),
            )
        })
    }

    /// The video a grant is for (the calls' rate-limit key).
    ///
    /// # Errors
    /// FORBIDDEN for a bad or expired grant.
    pub fn direct_video(&self, grant: &str) -> Result<String, AppError> {
        Ok(self.grant(grant)?.v)
    }

    /// The grant of a direct upload of `video_id`'s source of `length` bytes, when the object
    /// store takes parts straight from clients (S3), valid as long as an upload lives.
    pub(crate) fn direct_grant(&self, video_id: &str, length: u64) -> Option<(String, DateTime<Utc>, u64)> {
        let store = self.core.ports.objects.part_size()?;
        let expires_at = self.core.now() + self.lifetime();
        let grant = self.core.signer.sign(&DirectClaims {
            v: video_id.to_owned(),
            s: length,
            e: expires_at.timestamp(),
        });
        Some((grant, expires_at, part_size(store, length)))
    }

    /// Starts a direct upload of the source a grant names, as its video's owner.
    ///
    /// # Errors
    /// FORBIDDEN for a bad or expired grant; VIDEO_NOT_FOUND (deleted too); UPLOAD_COMPLETED;
    /// DIRECT_UPLOAD_UNAVAILABLE when the store takes no parts from clients; UNAVAILABLE.
    pub async fn direct_create(&self, grant: &str) -> Result<DirectUpload, AppError> {
        let claims = self.grant(grant)?;
        if crate::videos::check_id(&claims.v).is_err() {
            return Err(AppError::video_not_found(&claims.v));
        }
        let loaded = crate::Videos::new(self.core).load(&claims.v).await?;
        uploadable(&loaded, &claims.v)?;
        let Some(store_part) = self.core.ports.objects.part_size() else {
            return Err(unavailable());
        };
        let now = self.core.now();
        // No later than the grant: nothing could finish it after.
        let expires_at = (now + self.lifetime()).min(DateTime::from_timestamp(claims.e, 0).unwrap_or(now));
        let manifest = self
            .start(
                &loaded,
                &loaded.video.owner,
                claims.s,
                "",
                expires_at,
                Some(part_size(store_part, claims.s)),
            )
            .await?;
        Ok(manifest.direct())
    }

    /// A direct upload of the grant's video, unexpired.
    async fn direct_manifest(&self, claims: &DirectClaims, id: &str) -> Result<Manifest, AppError> {
        let manifest = self.direct_of(claims, id).await?;
        self.unexpired(manifest).await
    }

    /// A direct upload of the grant's video (another's, or a tus upload, is not found).
    async fn direct_of(&self, claims: &DirectClaims, id: &str) -> Result<Manifest, AppError> {
        let manifest = self.manifest(id).await?;
        if manifest.direct_part_size.is_none() || manifest.video_id != claims.v {
            return Err(upload_not_found(id));
        }
        Ok(manifest)
    }

    /// The URL to `PUT` part `number` of a direct upload to.
    ///
    /// # Errors
    /// FORBIDDEN; UPLOAD_NOT_FOUND (another video's too); UPLOAD_EXPIRED; UPLOAD_COMPLETED;
    /// VALIDATION_FAILED for a part number outside 1 to the upload's part count; UNAVAILABLE.
    pub async fn direct_sign(&self, grant: &str, id: &str, number: u32) -> Result<SignedPart, AppError> {
        let claims = self.grant(grant)?;
        let manifest = self.direct_manifest(&claims, id).await?;
        completed_refused(&manifest)?;
        let upload = manifest.direct();
        if number == 0 || number > upload.parts {
            return Err(AppError::invalid(
                "part_number",
                format!("this upload has parts 1 to {}, not {number}", upload.parts),
            ));
        }
        let length = upload.part_length(number);
        let ttl = self.core.settings.url_ttl;
        let url = self
            .core
            .ports
            .objects
            .presign_part(&manifest.key, &manifest.multipart, number, length, ttl)
            .await
            .map_err(|e| AppError::store("signing a part", &e))?
            .ok_or_else(unavailable)?;
        Ok(SignedPart {
            url,
            length,
            expires_at: self.core.now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1)),
        })
    }

    /// The parts of a direct upload the store holds, in order.
    ///
    /// # Errors
    /// FORBIDDEN; UPLOAD_NOT_FOUND; UPLOAD_EXPIRED; UNAVAILABLE.
    pub async fn direct_parts(&self, grant: &str, id: &str) -> Result<(DirectUpload, Vec<Part>), AppError> {
        let claims = self.grant(grant)?;
        let manifest = self.direct_manifest(&claims, id).await?;
        if manifest.completed {
            return Ok((manifest.direct(), manifest.parts.clone()));
        }
        let parts = self.stored_parts(&manifest).await?;
        Ok((manifest.direct(), parts))
    }

    async fn stored_parts(&self, manifest: &Manifest) -> Result<Vec<Part>, AppError> {
        self.core
            .ports
            .objects
            .list_parts(&manifest.key, &manifest.multipart)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => upload_not_found(&manifest.id),
                e => AppError::store("listing an upload's parts", &e),
            })
    }

    /// Assembles a direct upload from the parts the store holds — parts 1 to N, each of its
    /// exact size — and records the source as `upload-complete` does. A retry after success
    /// answers the same.
    ///
    /// # Errors
    /// FORBIDDEN; UPLOAD_NOT_FOUND; UPLOAD_EXPIRED; PARTS_INCOMPLETE (409) naming the parts
    /// missing or of the wrong size; VIDEO_NOT_FOUND for a deleted video; UPLOAD_IN_PROGRESS;
    /// UNAVAILABLE.
    pub async fn direct_complete(&self, grant: &str, id: &str) -> Result<DirectUpload, AppError> {
        let claims = self.grant(grant)?;
        let mut manifest = self.direct_manifest(&claims, id).await?;
        let turn = self.core.uploads.begin(&manifest.video_id)?;
        let loaded = crate::Videos::new(self.core).load(&manifest.video_id).await?;
        self.still_wanted(&manifest, &loaded).await?;
        if !manifest.completed {
            let upload = manifest.direct();
            let stored = self.stored_parts(&manifest).await?;
            manifest.parts = whole(&upload, stored)?;
        }
        drop(turn);
        let upload = manifest.direct();
        let principal = Principal::new(manifest.owner.clone(), Role::Creator);
        self.finish(&principal, manifest).await?;
        Ok(upload)
    }

    /// Ends a direct upload without a source: its parts are removed and it is forgotten.
    ///
    /// # Errors
    /// FORBIDDEN; UPLOAD_NOT_FOUND; UPLOAD_COMPLETED; UNAVAILABLE.
    pub async fn direct_abort(&self, grant: &str, id: &str) -> Result<(), AppError> {
        let claims = self.grant(grant)?;
        let manifest = self.direct_of(&claims, id).await?;
        completed_refused(&manifest)?;
        self.discard(&manifest).await;
        Ok(())
    }
}

fn unavailable() -> AppError {
    AppError::conflict(
        "DIRECT_UPLOAD_UNAVAILABLE",
        "this object store takes no parts from clients (a local folder); upload with tus (/v1/uploads) or the upload URL",
        serde_json::json!(null),
    )
}

fn completed_refused(manifest: &Manifest) -> Result<(), AppError> {
    if manifest.completed {
        return Err(AppError::conflict(
            "UPLOAD_COMPLETED",
            "this upload is complete and its source recorded",
            serde_json::json!({ "upload_id": manifest.id }),
        ));
    }
    Ok(())
}

/// The parts that make the whole source: 1 to N, each of its exact size.
fn whole(upload: &DirectUpload, stored: Vec<Part>) -> Result<Vec<Part>, AppError> {
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut parts = Vec::with_capacity(upload.parts as usize);
    let mut stored = stored.into_iter().peekable();
    for number in 1..=upload.parts {
        while stored.next_if(|p| p.number < number).is_some() {}
        match stored.next_if(|p| p.number == number) {
            Some(part) if part.size == upload.part_length(number) => parts.push(part),
            Some(part) => wrong.push(serde_json::json!({
                "part_number": number, "size": part.size, "expected": upload.part_length(number)
            })),
            None => missing.push(number),
        }
    }
    if missing.is_empty() && wrong.is_empty() {
        return Ok(parts);
    }
    Err(AppError::conflict(
        "PARTS_INCOMPLETE",
        format!(
            "the upload needs parts 1 to {} of {} bytes each (the last {}): {} missing, {} of another size",
            upload.parts,
            upload.part_size,
            upload.part_length(upload.parts),
            missing.len(),
            wrong.len()
        ),
        serde_json::json!({
            "missing": missing.iter().take(NAMED_PARTS).collect::<Vec<_>>(),
            "wrong_size": wrong.into_iter().take(NAMED_PARTS).collect::<Vec<_>>(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(length: u64, part_size: u64) -> DirectUpload {
        DirectUpload {
            id: "u".into(),
            key: "k".into(),
            video_id: "v".into(),
            part_size,
            parts: u32::try_from(length.div_ceil(part_size)).unwrap_or(u32::MAX),
            length,
            expires_at: Utc::now(),
        }
    }

    fn part(number: u32, size: u64) -> Part {
        Part {
            number,
            size,
            etag: format!("e{number}"),
        }
    }

    #[test]
    fn parts_are_the_stores_size_until_a_source_needs_more_than_ten_thousand() {
        assert_eq!(part_size(8 * MIB, 100), 8 * MIB);
        assert_eq!(part_size(8 * MIB, 5 * 1024 * MIB), 8 * MIB);
        // 100 GiB in 8 MiB parts would be 12,800: 11 MiB parts make 9,310.
        assert_eq!(part_size(8 * MIB, 100 * 1024 * MIB), 11 * MIB);
        let big = upload(100 * 1024 * MIB, part_size(8 * MIB, 100 * 1024 * MIB));
        assert!(u64::from(big.parts) <= MAX_PARTS);
    }

    #[test]
    fn the_whole_is_every_part_once_at_its_size() {
        let up = upload(20, 8);
        assert_eq!(up.parts, 3);
        assert_eq!(up.part_length(3), 4);
        let ok = whole(&up, vec![part(1, 8), part(2, 8), part(3, 4)]).expect("whole");
        assert_eq!(ok.len(), 3);
        let gap = whole(&up, vec![part(1, 8), part(3, 4)]).expect_err("part 2 missing");
        assert_eq!(gap.code, "PARTS_INCOMPLETE");
        assert_eq!(gap.details["missing"], serde_json::json!([2]));
        let short = whole(&up, vec![part(1, 8), part(2, 7), part(3, 4)]).expect_err("short part");
        assert_eq!(short.details["wrong_size"][0]["part_number"], 2);
        // A part past the last is not part of the source (and no refusal: it is left out).
        let extra = whole(&up, vec![part(1, 8), part(2, 8), part(3, 4), part(4, 8)]).expect("whole");
        assert_eq!(extra.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2, 3]);
    }
}
