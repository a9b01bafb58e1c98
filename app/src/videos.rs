//! The commands of one video. Each is authorized against the video's owner, checked
//! against the version the caller expects (`If-Match`) and run at most once per idempotency
//! key; each answers with the stream's new version and the global position of its last event
//! (read-your-writes for the views).

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;
use vodsource_commands::layout;
use vodsource_commands::ports::{check_key, Access, ObjectMeta, PutError};
use vodsource_commands::{CommandContext, CommandOutcome, VideoContext};
use vodsource_domain::VideoCommand;

use crate::error::{AppError, ErrorKind};
use crate::principal::{Principal, Role};
use crate::signing::{TokenError, UploadClaims};
use crate::uploads::UploadTurn;
use crate::Core;

/// Longest video id.
pub const MAX_ID: usize = 64;

/// The form of a video id (for API documents; [`check_id`] checks it).
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-]+$";

/// Refuses what cannot be a video id.
///
/// # Errors
/// VALIDATION_FAILED.
pub fn check_id(id: &str) -> Result<(), AppError> {
    if id.is_empty() || id.len() > MAX_ID || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(AppError::invalid(
            "id",
            format!("a video id is 1 to {MAX_ID} letters, digits, '-' or '_'"),
        ));
    }
    Ok(())
}

/// Refuses an upload of a source this service fetches from the video's `source_url`
/// (SOURCE_FROM_URL).
pub(crate) fn refuse_fetched(loaded: &VideoContext, video_id: &str) -> Result<(), AppError> {
    if loaded.video.source_url.is_some() {
        return Err(AppError::conflict(
            "SOURCE_FROM_URL",
            "this video's source is fetched from its source_url; it takes no upload",
            serde_json::json!({ "video_id": video_id }),
        ));
    }
    Ok(())
}

/// A new video, as its creator describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// The source file's name.
    pub filename: String,
    /// The source's content type (`video/*`).
    pub content_type: String,
    /// The source's exact size; may be left to the fetch of a `source_url`.
    pub size_bytes: Option<u64>,
    /// Where this service fetches the source from, instead of an upload.
    pub source_url: Option<String>,
    /// Publish on its own as soon as it plays (while encoding, or at the latest encoded).
    pub publish_when_playable: bool,
}

impl Registration {
    /// The command that records it, owned by `principal` (size 0: left to the fetch).
    fn command(&self, principal: &Principal) -> VideoCommand {
        VideoCommand::Register {
            owner: principal.subject.clone(),
            title: self.title.clone(),
            description: self.description.clone().unwrap_or_default(),
            tags: self.tags.clone().unwrap_or_default(),
            filename: self.filename.clone(),
            content_type: self.content_type.clone(),
            size_bytes: self.size_bytes.unwrap_or(0),
            source_url: self.source_url.clone(),
            publish_when_playable: self.publish_when_playable,
        }
    }
}

/// A change of a video's metadata; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Change {
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
}

/// What a caller of a command may add to it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions<'a> {
    /// Run only if the video is at this version.
    pub if_match: Option<u64>,
    /// Run at most once for this key (a repeat gets the first answer).
    pub idempotency_key: Option<&'a str>,
}

/// How to send the source bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct UploadTarget {
    /// HTTP method (`PUT`).
    pub method: String,
    /// Where to send the bytes.
    pub url: String,
    /// Headers to send with them.
    pub headers: BTreeMap<String, String>,
    /// The URL stops working at this time.
    pub expires_at: DateTime<Utc>,
}

/// Where a client that speaks S3 sends the source's parts straight to the bucket: Uppy's
/// `@uppy/aws-s3` takes `endpoint` as its `companionEndpoint`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct MultipartTarget {
    /// The base URL of the multipart calls (`{endpoint}/s3/multipart...`, Companion's
    /// protocol); it carries the grant, so keep it as private as the upload URL.
    pub endpoint: String,
    /// Every part but the last must be exactly this many bytes (each part's URL signs its
    /// length).
    pub part_size: u64,
    /// The upload must be completed before this time.
    pub expires_at: DateTime<Utc>,
}

/// A registered video and where to upload its source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct Registered {
    /// The new video's id.
    pub video_id: String,
    /// Stream version after the command.
    pub version: u64,
    /// Global log position of the command's last event (for read-your-writes).
    pub position: u64,
    /// Where to upload the source in one request; absent when the source is fetched from
    /// `source_url`.
    pub upload: Option<UploadTarget>,
    /// The ways this service takes the source: `put` (one request to `upload`), `tus`
    /// (resumable through this service, at `/v1/uploads`) and, when the object store takes
    /// parts straight from clients, `s3-multipart` (see `multipart`); only `url` when it
    /// fetches the source from `source_url` (the video's status says when it failed, and
    /// why).
    pub protocols: Vec<String>,
    /// Parts straight to the object store (S3), when it offers them.
    pub multipart: Option<MultipartTarget>,
}

/// A command's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct Accepted {
    /// Video id.
    pub video_id: String,
    /// Stream version after the command.
    pub version: u64,
    /// Global log position of the command's last event (0 when it changed nothing).
    pub position: u64,
}

impl Accepted {
    fn new(id: &str, outcome: &CommandOutcome) -> Self {
        Self {
            video_id: id.to_owned(),
            version: outcome.version,
            position: outcome.position.unwrap_or(0),
        }
    }
}

/// An upload this service may write: the grant it signed and the video's turn.
pub struct UploadSlot {
    /// What the grant allows.
    pub claims: UploadClaims,
    _turn: UploadTurn,
}

/// The part of a request an idempotency key is bound to.
#[derive(Serialize)]
struct Fingerprint<'a, B: Serialize> {
    operation: &'static str,
    id: &'a str,
    if_match: Option<u64>,
    body: B,
}

/// The commands of videos.
pub struct Videos<'a> {
    core: &'a Core,
}

impl<'a> Videos<'a> {
    pub(crate) fn new(core: &'a Core) -> Self {
        Self { core }
    }

    /// The largest source a video may declare.
    pub fn max_source_bytes(&self) -> u64 {
        self.core.ports.commands.services().policy.max_source_bytes
    }

    /// Registers a video owned by `principal` and grants the upload of its source: a URL
    /// presigned by the object store where it can (S3), else a signed link to this service.
    /// The grant is made before the registration is recorded, so a failure records nothing.
    ///
    /// # Errors
    /// FORBIDDEN below the creator role; UNSUPPORTED_MEDIA_TYPE for a type outside
    /// `video/*`; PAYLOAD_TOO_LARGE above [`Self::max_source_bytes`]; the command's and the
    /// key's refusals.
    pub async fn register(
        &self,
        principal: &Principal,
        request: Registration,
        idempotency_key: Option<&str>,
    ) -> Result<Registered, AppError> {
        principal.require(Role::Creator)?;
        if !vodsource_domain::is_video_type(&request.content_type) {
            return Err(AppError::new(
                ErrorKind::UnsupportedType,
                "UNSUPPORTED_MEDIA_TYPE",
                format!("content_type must be video/*, got {:?}", request.content_type),
                serde_json::json!({ "field": "content_type" }),
            ));
        }
        let max = self.max_source_bytes();
        if let Some(size) = request.size_bytes.filter(|size| *size > max) {
            return Err(AppError::new(
                ErrorKind::TooLarge,
                "PAYLOAD_TOO_LARGE",
                format!("size_bytes {size} is above the limit of {max} bytes"),
                serde_json::json!({ "field": "size_bytes", "limit": max }),
            ));
        }
        if let Some(url) = &request.source_url {
            self.check_source_url(url)?;
        } else if request.size_bytes.is_none() {
            return Err(AppError::new(
                ErrorKind::Unprocessable,
                "SIZE_REQUIRED",
                "size_bytes is required unless the source is fetched from source_url",
                serde_json::json!({ "field": "size_bytes" }),
            ));
        }
        let fingerprint = Fingerprint {
            operation: "registerVideo",
            id: "",
            if_match: None,
            body: &request,
        };
        let core = self.core;
        core.idempotent(principal, idempotency_key, &fingerprint, async {
            let id = uuid::Uuid::now_v7().to_string();
            let size = request.size_bytes.unwrap_or(0);
            if request.source_url.is_some() {
                return self.register_fetched(principal, id, &request).await;
            }
            let (upload, presigned) = self
                .upload_target(&id, &request.filename, &request.content_type, size)
                .await?;
            let command = request.command(principal);
            let multipart = crate::Resumable::new(core)
                .direct_grant(&id, size)
                // Where the store signs uploads (S3): parts need its signature too.
                .filter(|_| presigned)
                .map(|(grant, expires_at, part_size)| MultipartTarget {
                    endpoint: format!("{}/v1/direct/{grant}", core.settings.public_url),
                    part_size,
                    expires_at,
                });
            let outcome = self.execute(principal, &id, command, Some(0), "register").await?;
            let mut protocols = vec!["put".to_owned(), "tus".to_owned()];
            if multipart.is_some() {
                protocols.push("s3-multipart".to_owned());
            }
            Ok(Registered {
                video_id: id,
                version: outcome.version,
                position: outcome.position.unwrap_or(0),
                upload: Some(upload),
                protocols,
                multipart,
            })
        })
        .await
    }

    /// Registers a video whose source this service fetches from its `source_url` (the
    /// ingest process picks the registration up from the log).
    async fn register_fetched(
        &self,
        principal: &Principal,
        id: String,
        request: &Registration,
    ) -> Result<Registered, AppError> {
        let outcome = self
            .execute(principal, &id, request.command(principal), Some(0), "register")
            .await?;
        Ok(Registered {
            video_id: id,
            version: outcome.version,
            position: outcome.position.unwrap_or(0),
            upload: None,
            protocols: vec!["url".to_owned()],
            multipart: None,
        })
    }

    /// Refuses a source URL this service will not fetch: one that does not parse, names no
    /// host, or is not `https` (nor `http` where configuration allows it). Its addresses are
    /// the fetcher's to judge, after resolution, on every attempt.
    fn check_source_url(&self, url: &str) -> Result<(), AppError> {
        let refused = |code: &'static str, message: String| {
            AppError::new(
                ErrorKind::Unprocessable,
                code,
                message,
                serde_json::json!({ "field": "source_url" }),
            )
        };
        if url.len() > vodsource_domain::MAX_SOURCE_URL_BYTES
            || url.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(refused(
                "SOURCE_URL_INVALID",
                format!(
                    "source_url must be at most {} bytes, without spaces or control characters",
                    vodsource_domain::MAX_SOURCE_URL_BYTES
                ),
            ));
        }
        let parsed =
            url::Url::parse(url).map_err(|e| refused("SOURCE_URL_INVALID", format!("source_url is not a URL: {e}")))?;
        let allow_http = self.core.settings.ingest_allow_http;
        match parsed.scheme() {
            "https" => {}
            "http" if allow_http => {}
            scheme => {
                let allowed = if allow_http { "https or http" } else { "https" };
                return Err(refused(
                    "SOURCE_URL_REFUSED",
                    format!("source_url must be {allowed}, not {scheme}"),
                ));
            }
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(refused("SOURCE_URL_INVALID", "source_url names no host".into()));
        }
        Ok(())
    }

    /// Where to `PUT` the source, and whether the object store signed it (S3).
    async fn upload_target(
        &self,
        id: &str,
        filename: &str,
        content_type: &str,
        size: u64,
    ) -> Result<(UploadTarget, bool), AppError> {
        let core = self.core;
        let expires_at = core.grant_expiry();
        let key = layout::source_key(id, filename);
        // A filename that makes no valid key is refused by the command afterwards.
        let presigned = match check_key(&key) {
            Ok(()) => core
                .ports
                .objects
                .presign(&key, Access::Write { length: size }, core.settings.url_ttl)
                .await
                .map_err(|e| AppError::store("object store", &e))?,
            Err(_) => None,
        };
        let signed = presigned.is_some();
        let url = match presigned {
            Some(url) => url,
            None => {
                let token = core.signer.sign(&UploadClaims {
                    v: id.to_owned(),
                    k: key,
                    s: size,
                    e: expires_at.timestamp(),
                });
                format!("{}/uploads/{token}", core.settings.public_url)
            }
        };
        let mut headers = BTreeMap::new();
        headers.insert("Content-Type".to_owned(), content_type.to_owned());
        Ok((
            UploadTarget {
                method: "PUT".into(),
                url,
                headers,
                expires_at,
            },
            signed,
        ))
    }

    /// What a signed upload link of this service grants.
    ///
    /// # Errors
    /// A bad or expired link.
    pub fn upload_grant(&self, token: &str) -> Result<UploadClaims, TokenError> {
        self.core.signer.verify(token, self.core.now())
    }

    /// Opens the upload a link granted: the video exists, its source is not recorded yet,
    /// and no other upload of it is being written here (the slot holds its turn).
    ///
    /// # Errors
    /// VIDEO_NOT_FOUND, UPLOAD_COMPLETED (the link is spent), UPLOAD_IN_PROGRESS,
    /// UNAVAILABLE.
    pub async fn open_upload(&self, claims: UploadClaims) -> Result<UploadSlot, AppError> {
        let turn = self.core.uploads.begin(&claims.v)?;
        let loaded = self.load(&claims.v).await?;
        if loaded.version == 0 || loaded.video.deleted {
            return Err(AppError::video_not_found(&claims.v));
        }
        if loaded.video.source_key.is_some() {
            return Err(AppError::conflict(
                "UPLOAD_COMPLETED",
                "this video's source is already recorded; its upload link no longer works",
                serde_json::json!({ "video_id": claims.v }),
            ));
        }
        Ok(UploadSlot { claims, _turn: turn })
    }

    /// Writes an open upload's bytes: exactly the granted size, or nothing (an earlier good
    /// upload stays).
    ///
    /// # Errors
    /// The object store's refusal.
    pub async fn write_upload(
        &self,
        slot: &UploadSlot,
        body: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<u64, PutError> {
        self.core.ports.objects.put(&slot.claims.k, body, slot.claims.s).await
    }

    /// Records the uploaded source (present, of the declared size) and starts encoding.
    ///
    /// # Errors
    /// UPLOAD_MISSING while nothing is stored; UPLOAD_IN_PROGRESS while this service writes
    /// an upload of it; the command's refusals.
    pub async fn complete_upload(
        &self,
        principal: &Principal,
        id: &str,
        conditions: Conditions<'_>,
    ) -> Result<Accepted, AppError> {
        check_id(id)?;
        let loaded = self.writable(principal, id).await?;
        refuse_fetched(&loaded, id)?;
        // Not while this service is still writing an upload of it (it would record the bytes
        // the upload is about to replace).
        let _turn = self.core.uploads.begin(id)?;
        let key = layout::source_key(id, &loaded.video.filename);
        let mut found = self.head(key.clone()).await?;
        let legacy = layout::legacy_source_key(id, &loaded.video.filename);
        if found.is_none() && check_key(&legacy).is_ok() {
            found = self.head(legacy).await?;
        }
        let Some((key, object)) = found else {
            if loaded.video.deleted {
                return Err(AppError::video_not_found(id));
            }
            return Err(AppError::conflict(
                "UPLOAD_MISSING",
                "no source has been uploaded for this video yet",
                serde_json::json!({ "object_key": key }),
            ));
        };
        let size = object.size;
        self.command(
            principal,
            id,
            conditions,
            "completeUpload",
            size,
            VideoCommand::CompleteUpload {
                object_key: key,
                size_bytes: size,
                checksum: object.etag,
            },
        )
        .await
    }

    async fn head(&self, key: String) -> Result<Option<(String, ObjectMeta)>, AppError> {
        self.core
            .ports
            .objects
            .head(&key)
            .await
            .map_err(|e| AppError::store("checking an upload", &e))
            .map(|object| object.map(|o| (key, o)))
    }

    /// Changes title, description or tags.
    ///
    /// # Errors
    /// VALIDATION_FAILED for a change of nothing; the command's refusals.
    pub async fn update(
        &self,
        principal: &Principal,
        id: &str,
        change: Change,
        conditions: Conditions<'_>,
    ) -> Result<Accepted, AppError> {
        if change.title.is_none() && change.description.is_none() && change.tags.is_none() {
            return Err(AppError::invalid(
                "body",
                "name at least one of title, description, tags",
            ));
        }
        let command = VideoCommand::UpdateMetadata {
            title: change.title.clone(),
            description: change.description.clone(),
            tags: change.tags.clone(),
        };
        self.command(principal, id, conditions, "updateVideo", &change, command)
            .await
    }

    /// Makes an encoded video visible to viewers.
    ///
    /// # Errors
    /// The command's refusals.
    pub async fn publish(
        &self,
        principal: &Principal,
        id: &str,
        conditions: Conditions<'_>,
    ) -> Result<Accepted, AppError> {
        self.command(principal, id, conditions, "publishVideo", (), VideoCommand::Publish)
            .await
    }

    /// Hides a video from viewers again.
    ///
    /// # Errors
    /// The command's refusals.
    pub async fn unpublish(
        &self,
        principal: &Principal,
        id: &str,
        conditions: Conditions<'_>,
    ) -> Result<Accepted, AppError> {
        self.command(principal, id, conditions, "unpublishVideo", (), VideoCommand::Unpublish)
            .await
    }

    /// Starts a new round of encoding attempts after a terminal failure.
    ///
    /// # Errors
    /// The command's refusals.
    pub async fn retry(
        &self,
        principal: &Principal,
        id: &str,
        conditions: Conditions<'_>,
    ) -> Result<Accepted, AppError> {
        self.command(
            principal,
            id,
            conditions,
            "retryEncoding",
            (),
            VideoCommand::RetryEncoding,
        )
        .await
    }

    /// Deletes a video: the event first (the truth), then its source and media. A failure to
    /// remove files leaves them to sweep, never a live video without media.
    ///
    /// # Errors
    /// The command's refusals.
    pub async fn delete(
        &self,
        principal: &Principal,
        id: &str,
        conditions: Conditions<'_>,
    ) -> Result<Accepted, AppError> {
        let accepted = self
            .command(
                principal,
                id,
                conditions,
                "deleteVideo",
                (),
                VideoCommand::Delete { reason: None },
            )
            .await?;
        for prefix in layout::video_prefixes(id) {
            if let Err(e) = self.core.ports.objects.delete_prefix(&prefix).await {
                tracing::warn!(video_id = %id, prefix, error = %e, "could not remove media of a deleted video");
            }
        }
        Ok(accepted)
    }

    async fn command(
        &self,
        principal: &Principal,
        id: &str,
        conditions: Conditions<'_>,
        operation: &'static str,
        body: impl Serialize,
        command: VideoCommand,
    ) -> Result<Accepted, AppError> {
        check_id(id)?;
        let fingerprint = Fingerprint {
            operation,
            id,
            if_match: conditions.if_match,
            body,
        };
        self.core
            .idempotent(principal, conditions.idempotency_key, &fingerprint, async {
                self.writable(principal, id).await?;
                let outcome = self
                    .execute(principal, id, command, conditions.if_match, operation)
                    .await?;
                Ok(Accepted::new(id, &outcome))
            })
            .await
    }

    /// Runs a command as `principal` and times it.
    async fn execute(
        &self,
        principal: &Principal,
        id: &str,
        command: VideoCommand,
        expected_version: Option<u64>,
        name: &'static str,
    ) -> Result<CommandOutcome, AppError> {
        let context = CommandContext {
            actor: Some(principal.subject.clone()),
            correlation_id: Some(uuid::Uuid::now_v7()),
            causation_id: None,
            expected_version,
        };
        let started = Instant::now();
        let result = self.core.ports.commands.execute(id, command, &context).await;
        self.core.observer.command(name, started.elapsed());
        result.map_err(|e| AppError::command(id, e))
    }

    pub(crate) async fn load(&self, id: &str) -> Result<VideoContext, AppError> {
        self.core
            .ports
            .commands
            .store()
            .load(id)
            .await
            .map_err(|e| AppError::store("loading a video", &e))
    }

    /// The video's current state, for a creator who owns it or an admin: below the creator
    /// role FORBIDDEN (whatever the id), another creator's video VIDEO_NOT_FOUND.
    async fn writable(&self, principal: &Principal, id: &str) -> Result<VideoContext, AppError> {
        principal.require(Role::Creator)?;
        self.owned(principal, id).await
    }

    /// The video's current state from its events, for its owner or an admin only. Another
    /// owner's video is VIDEO_NOT_FOUND, exactly as an unknown id is: the answer tells
    /// nothing of its existence.
    ///
    /// # Errors
    /// VIDEO_NOT_FOUND, UNAVAILABLE.
    pub async fn owned(&self, principal: &Principal, id: &str) -> Result<VideoContext, AppError> {
        let loaded = self.load(id).await?;
        if loaded.version == 0 || !principal.owns_or_admin(&loaded.video.owner) {
            return Err(AppError::video_not_found(id));
        }
        Ok(loaded)
    }
}
