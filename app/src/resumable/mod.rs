//! Resumable uploads, as tus 1.0 defines them: an upload of a video's source is created with
//! its length, receives its bytes in any number of requests, each starting at the offset the
//! service acknowledged, and ends with the source recorded exactly as `upload-complete`
//! records it.
//!
//! The bytes go straight into a multipart upload of the object store: parts of the store's
//! size (S3: 8 MiB, up to four on their way while the next arrives) or, where parts may have any size (the folder
//! store), one part per request, streamed. An upload's state is one small object, its
//! manifest (`uploads/<id>/manifest.json`): the parts it has, the bytes received after the
//! last whole part (kept as their own object, the tail) and when it expires. The manifest is
//! the only truth and is replaced whole, after the bytes it names are stored, so a process
//! killed at any point leaves an offset that every replica reads the same; bytes stored but
//! not yet named are written again when the client resends them.

mod direct;
mod parts;
mod protocol;
mod received;

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;
use vodsource_commands::ports::{Part, StoreError};
use vodsource_commands::{layout, VideoContext};

pub use direct::{DirectUpload, SignedPart, DIRECT_GRANT_PATTERN};
use parts::{body_has_more, put_error, too_large};
use protocol::Hasher;
pub use protocol::{
    metadata_video_id, Checksum, CHECKSUM_ALGORITHMS, CHECKSUM_PATTERN, MAX_METADATA_CHARS, METADATA_PATTERN,
    TUS_EXTENSIONS, TUS_VERSION, UPLOAD_ID_PATTERN,
};
use received::{Delivery, Received};

use crate::error::{AppError, ErrorKind};
use crate::principal::{Principal, Role};
use crate::videos::Conditions;
use crate::Core;

/// Uploads a sweep looks at, at most.
const SWEEP_BATCH: usize = 10_000;
/// Largest manifest read back (10,000 parts of JSON fit well under it).
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// What a client learns of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    /// The upload's id (its URL's last segment).
    pub id: String,
    /// Bytes stored and acknowledged.
    pub offset: u64,
    /// Bytes in all.
    pub length: u64,
    /// The `Upload-Metadata` it was created with.
    pub metadata: String,
    /// It is forgotten after this, unless a request moves it on.
    pub expires_at: DateTime<Utc>,
}

/// Bytes after the last whole part, stored as their own object.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tail {
    name: String,
    size: u64,
}

/// An upload's state, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    id: String,
    video_id: String,
    owner: String,
    key: String,
    length: u64,
    metadata: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    /// The object store's multipart upload.
    multipart: String,
    parts: Vec<Part>,
    tail: Option<Tail>,
    /// The object is assembled and the source recorded.
    completed: bool,
    /// Parts go straight to the store, each of this size but the last (a direct upload);
    /// `None` for tus, whose bytes come through this service.
    #[serde(default)]
    direct_part_size: Option<u64>,
}

impl Manifest {
    fn offset(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum::<u64>() + self.tail.as_ref().map_or(0, |t| t.size)
    }

    fn state(&self) -> UploadState {
        UploadState {
            id: self.id.clone(),
            offset: self.offset(),
            length: self.length,
            metadata: self.metadata.clone(),
            expires_at: self.expires_at,
        }
    }
}

fn upload_not_found(id: &str) -> AppError {
    AppError::new(
        ErrorKind::NotFound,
        "UPLOAD_NOT_FOUND",
        format!("no upload {id:?}"),
        serde_json::json!({ "upload_id": id }),
    )
}

/// Refuses an upload of a source that cannot take one: a deleted video's (VIDEO_NOT_FOUND) or
/// one already recorded (UPLOAD_COMPLETED).
fn uploadable(loaded: &VideoContext, video_id: &str) -> Result<(), AppError> {
    if loaded.version == 0 || loaded.video.deleted {
        return Err(AppError::video_not_found(video_id));
    }
    if loaded.video.source_key.is_some() {
        return Err(AppError::conflict(
            "UPLOAD_COMPLETED",
            "this video's source is already recorded",
            serde_json::json!({ "video_id": video_id }),
        ));
    }
    crate::videos::refuse_fetched(loaded, video_id)
}

/// Resumable uploads of videos' sources.
pub struct Resumable<'a> {
    core: &'a Core,
}

impl<'a> Resumable<'a> {
    pub(crate) fn new(core: &'a Core) -> Self {
        Self { core }
    }

    fn lifetime(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.core.settings.upload_expiry).unwrap_or(chrono::Duration::days(1))
    }

    /// Creates an upload of the source of the video `metadata` names, owned by `principal`:
    /// `length` must be the size the video was registered with.
    ///
    /// # Errors
    /// FORBIDDEN below the creator role; VALIDATION_FAILED for bad metadata;
    /// VIDEO_NOT_FOUND; UPLOAD_COMPLETED when the source is already recorded; SIZE_MISMATCH
    /// for another length; UNAVAILABLE.
    pub async fn create(&self, principal: &Principal, length: u64, metadata: &str) -> Result<UploadState, AppError> {
        principal.require(Role::Creator)?;
        let video_id = metadata_video_id(metadata)?;
        if crate::videos::check_id(&video_id).is_err() {
            return Err(AppError::video_not_found(&video_id));
        }
        let loaded = crate::Videos::new(self.core).owned(principal, &video_id).await?;
        uploadable(&loaded, &video_id)?;
        let video = &loaded.video;
        if length != video.declared_size {
            return Err(AppError::new(
                ErrorKind::Unprocessable,
                "SIZE_MISMATCH",
                format!(
                    "Upload-Length is {length}; the video was registered with {} bytes",
                    video.declared_size
                ),
                serde_json::json!({ "declared": video.declared_size, "actual": length }),
            ));
        }
        let now = self.core.now();
        let manifest = self
            .start(
                &loaded,
                &principal.subject,
                length,
                metadata,
                now + self.lifetime(),
                None,
            )
            .await?;
        Ok(manifest.state())
    }

    /// An upload's state, for its owner or an admin.
    ///
    /// # Errors
    /// UPLOAD_NOT_FOUND (another owner's too); UPLOAD_EXPIRED; UNAVAILABLE.
    pub async fn state(&self, principal: &Principal, id: &str) -> Result<UploadState, AppError> {
        Ok(self.live(principal, id).await?.state())
    }

    /// Stores `body` at `offset` (which must be the upload's), checked against `checksum`
    /// when one is named; when the upload is whole, assembles the source and records it as
    /// `upload-complete` does. What arrives before a connection breaks is kept, unless a
    /// checksum was named (it cannot be checked then).
    ///
    /// # Errors
    /// UPLOAD_NOT_FOUND; UPLOAD_EXPIRED; OFFSET_MISMATCH (409) with the upload's offset;
    /// PAYLOAD_TOO_LARGE past its length; CHECKSUM_MISMATCH (nothing kept); UPLOAD_IN_PROGRESS
    /// while another request writes it; VIDEO_NOT_FOUND for a deleted video; UNAVAILABLE.
    pub async fn append(
        &self,
        principal: &Principal,
        id: &str,
        offset: u64,
        checksum: Option<Checksum>,
        body: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<UploadState, AppError> {
        let mut manifest = self.live(principal, id).await?;
        // One request writes a video's source at a time (a single PUT included).
        let turn = self.core.uploads.begin(&manifest.video_id)?;
        // Read again under the turn: another request may have moved it on meanwhile.
        manifest = self.live(principal, id).await?;
        let current = manifest.offset();
        if manifest.completed && offset == current {
            // A retry of the last request: nothing to store, the source to record (once).
            let mut body = body;
            if body_has_more(&mut body).await {
                return Err(too_large(0));
            }
            drop(turn);
            return self.finish(principal, manifest).await;
        }
        if offset != current {
            return Err(AppError::new(
                ErrorKind::Conflict,
                "OFFSET_MISMATCH",
                format!("Upload-Offset is {offset}; the upload is at {current}"),
                serde_json::json!({ "offset": current }),
            ));
        }
        let loaded = crate::Videos::new(self.core)
            .owned(principal, &manifest.video_id)
            .await?;
        self.still_wanted(&manifest, &loaded).await?;
        let delivery = Arc::new(Mutex::new(Delivery {
            hasher: checksum.as_ref().map(Hasher::new),
            ..Delivery::default()
        }));
        let body = Received {
            inner: body,
            delivery: delivery.clone(),
        };
        let remaining = manifest.length - current;
        let before = manifest.clone();
        match self.core.ports.objects.part_size() {
            None => self.append_part(&mut manifest, body, remaining).await?,
            Some(size) => {
                self.append_parts(&mut manifest, body, remaining, size, checksum.is_none())
                    .await?;
            }
        }
        let delivery = std::mem::take(&mut *delivery.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some(checksum) = &checksum {
            let verified = delivery.broken.is_none() && delivery.hasher.is_some_and(|h| h.matches(checksum));
            if !verified {
                // What was stored is named nowhere: the manifest stays as it was.
                self.drop_tail(&before, manifest.tail.as_ref()).await;
                return Err(AppError::new(
                    ErrorKind::ChecksumMismatch,
                    "CHECKSUM_MISMATCH",
                    match delivery.broken {
                        Some(why) => format!("the body broke off ({why}); its checksum cannot be checked"),
                        None => "the body's checksum is not the one Upload-Checksum names; nothing was kept".into(),
                    },
                    serde_json::json!({ "offset": current }),
                ));
            }
        }
        manifest.expires_at = self.core.now() + self.lifetime();
        let whole = manifest.offset() == manifest.length;
        self.save(&manifest).await?;
        self.drop_tail(&manifest, before.tail.as_ref()).await;
        if let Some(why) = delivery.broken {
            tracing::info!(
                upload = id,
                offset = manifest.offset(),
                reason = why,
                "an upload's request broke off; what arrived is kept"
            );
        }
        drop(turn);
        if whole {
            return self.finish(principal, manifest).await;
        }
        Ok(manifest.state())
    }

    /// Starts the multipart upload of `loaded`'s source and saves the new upload's manifest.
    async fn start(
        &self,
        loaded: &VideoContext,
        owner: &str,
        length: u64,
        metadata: &str,
        expires_at: DateTime<Utc>,
        direct_part_size: Option<u64>,
    ) -> Result<Manifest, AppError> {
        let key = layout::source_key(&loaded.id, &loaded.video.filename);
        let multipart = self
            .core
            .ports
            .objects
            .create_multipart(&key)
            .await
            .map_err(|e| AppError::store("starting a multipart upload", &e))?;
        let manifest = Manifest {
            id: uuid::Uuid::new_v4().simple().to_string(),
            video_id: loaded.id.clone(),
            owner: owner.to_owned(),
            key,
            length,
            metadata: metadata.to_owned(),
            created_at: self.core.now(),
            expires_at,
            multipart,
            parts: Vec::new(),
            tail: None,
            completed: false,
            direct_part_size,
        };
        self.save(&manifest).await?;
        Ok(manifest)
    }

    /// Refuses to go on with an upload whose video is deleted (VIDEO_NOT_FOUND) or, unfinished,
    /// whose source another upload recorded first (UPLOAD_COMPLETED: this one must not replace
    /// it); either way the upload is discarded.
    async fn still_wanted(&self, manifest: &Manifest, loaded: &VideoContext) -> Result<(), AppError> {
        let refusal = if loaded.version == 0 || loaded.video.deleted {
            AppError::video_not_found(&manifest.video_id)
        } else if !manifest.completed && loaded.video.source_key.is_some() {
            AppError::conflict(
                "UPLOAD_COMPLETED",
                "this video's source is already recorded (another upload finished first)",
                serde_json::json!({ "video_id": manifest.video_id }),
            )
        } else {
            return Ok(());
        };
        self.discard(manifest).await;
        Err(refusal)
    }

    /// Ends an upload: its parts are removed and it is forgotten.
    ///
    /// # Errors
    /// UPLOAD_NOT_FOUND; UPLOAD_COMPLETED once its source is recorded; UPLOAD_IN_PROGRESS;
    /// UNAVAILABLE.
    pub async fn terminate(&self, principal: &Principal, id: &str) -> Result<(), AppError> {
        let manifest = self.owned(principal, id).await?;
        let _turn = self.core.uploads.begin(&manifest.video_id)?;
        if manifest.completed {
            return Err(AppError::conflict(
                "UPLOAD_COMPLETED",
                "this upload is complete and its source recorded; delete the video instead",
                serde_json::json!({ "upload_id": id }),
            ));
        }
        self.discard(&manifest).await;
        Ok(())
    }

    /// Forgets every upload a sweep interval past its expiry (until then a request for it
    /// gets 410 and removes it itself): an abandoned one's parts are aborted and its state
    /// removed; a finished one's state goes once nothing can retry it. Returns how many went.
    /// At most `SWEEP_BATCH` uploads are looked at per call.
    ///
    /// # Errors
    /// UNAVAILABLE when the store cannot list them.
    pub async fn sweep(&self) -> Result<usize, AppError> {
        let objects = &self.core.ports.objects;
        let listed = objects
            .list(&format!("{}/", layout::UPLOADS), SWEEP_BATCH)
            .await
            .map_err(|e| AppError::store("listing uploads", &e))?;
        let grace = chrono::Duration::from_std(self.sweep_interval()).unwrap_or(chrono::Duration::minutes(10));
        let now = self.core.now();
        let mut swept = 0;
        for object in listed.iter().filter(|o| o.key.ends_with("/manifest.json")) {
            let manifest = match objects.read(&object.key, MAX_MANIFEST_BYTES).await {
                Ok(Some(bytes)) => serde_json::from_slice::<Manifest>(&bytes).ok(),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(key = object.key, error = %e, "could not read an upload to sweep");
                    continue;
                }
            };
            let Some(manifest) = manifest else { continue };
            if manifest.expires_at + grace <= now {
                self.discard(&manifest).await;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Assembles the object (if not yet) and records the source (if not yet).
    async fn finish(&self, principal: &Principal, mut manifest: Manifest) -> Result<UploadState, AppError> {
        if !manifest.completed {
            let objects = &self.core.ports.objects;
            match objects
                .complete_multipart(&manifest.key, &manifest.multipart, &manifest.parts)
                .await
            {
                Ok(_) => {}
                // Assembled before a crash that came before the manifest said so.
                Err(e @ StoreError::NotFound(_)) => {
                    let present = objects
                        .head(&manifest.key)
                        .await
                        .map_err(|e| AppError::store("checking an upload", &e))?;
                    if present.is_none_or(|o| o.size != manifest.length) {
                        return Err(AppError::store("completing an upload", &e));
                    }
                }
                Err(e) => return Err(AppError::store("completing an upload", &e)),
            }
            manifest.completed = true;
            self.save(&manifest).await?;
        }
        let videos = crate::Videos::new(self.core);
        let loaded = videos.owned(principal, &manifest.video_id).await?;
        if loaded.video.source_key.is_none() {
            videos
                .complete_upload(principal, &manifest.video_id, Conditions::default())
                .await?;
        }
        Ok(manifest.state())
    }

    /// How often a process should sweep: a tenth of an upload's lifetime, between a second
    /// and ten minutes.
    pub fn sweep_interval(&self) -> std::time::Duration {
        (self.core.settings.upload_expiry / 10)
            .clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(600))
    }

    /// The manifest, for its owner or an admin, unexpired.
    async fn live(&self, principal: &Principal, id: &str) -> Result<Manifest, AppError> {
        self.unexpired(self.owned(principal, id).await?).await
    }

    /// The manifest, unless it expired (then the upload is removed: UPLOAD_EXPIRED).
    async fn unexpired(&self, manifest: Manifest) -> Result<Manifest, AppError> {
        if !manifest.completed && manifest.expires_at <= self.core.now() {
            self.discard(&manifest).await;
            return Err(AppError::new(
                ErrorKind::Gone,
                "UPLOAD_EXPIRED",
                format!(
                    "upload {} expired at {}; create another",
                    manifest.id, manifest.expires_at
                ),
                serde_json::json!({ "upload_id": manifest.id }),
            ));
        }
        Ok(manifest)
    }

    /// A tus upload's manifest, for its owner or an admin.
    async fn owned(&self, principal: &Principal, id: &str) -> Result<Manifest, AppError> {
        let manifest = self.manifest(id).await?;
        if !principal.owns_or_admin(&manifest.owner) || manifest.direct_part_size.is_some() {
            return Err(upload_not_found(id));
        }
        Ok(manifest)
    }

    async fn manifest(&self, id: &str) -> Result<Manifest, AppError> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(upload_not_found(id));
        }
        let bytes = self
            .core
            .ports
            .objects
            .read(&layout::upload_manifest(id), MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| AppError::store("reading an upload", &e))?
            .ok_or_else(|| upload_not_found(id))?;
        serde_json::from_slice(&bytes).map_err(|e| AppError::internal("an upload's manifest is unreadable", &e))
    }

    async fn save(&self, manifest: &Manifest) -> Result<(), AppError> {
        let bytes = serde_json::to_vec(manifest).map_err(|e| AppError::internal("writing an upload's manifest", &e))?;
        let length = bytes.len() as u64;
        self.core
            .ports
            .objects
            .put(
                &layout::upload_manifest(&manifest.id),
                Box::new(std::io::Cursor::new(bytes)),
                length,
            )
            .await
            .map_err(|e| put_error(&e, length))?;
        Ok(())
    }

    /// Removes a tail the manifest no longer names (best effort: a leftover goes with the
    /// upload's prefix).
    async fn drop_tail(&self, manifest: &Manifest, tail: Option<&Tail>) {
        let Some(tail) = tail else { return };
        if manifest.tail.as_ref().is_some_and(|t| t.name == tail.name) {
            return;
        }
        let key = layout::upload_tail(&manifest.id, &tail.name);
        if let Err(e) = self.core.ports.objects.delete_prefix(&key).await {
            tracing::warn!(key, error = %e, "could not remove an upload's old tail");
        }
    }

    /// Aborts the multipart upload and forgets the upload (best effort; logged).
    async fn discard(&self, manifest: &Manifest) {
        let objects = &self.core.ports.objects;
        if let Err(e) = objects.abort_multipart(&manifest.key, &manifest.multipart).await {
            tracing::warn!(upload = manifest.id, error = %e, "could not abort a multipart upload");
        }
        if let Err(e) = objects.delete_prefix(&layout::upload_prefix(&manifest.id)).await {
            tracing::warn!(upload = manifest.id, error = %e, "could not remove an upload's state");
        }
    }
}
