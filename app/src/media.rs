//! Delivery of encoded media through a playback grant's links
//! (`/media/{token}/{video_id}/{path}`): which file a link names and where its bytes come
//! from — this machine's folder store, the object store's presigned URLs, or the CDN, with
//! playlists and manifests answered here so that players resolve their relative URIs under
//! the token.

use std::path::PathBuf;
use std::time::Duration;

use vodsource_commands::layout;
use vodsource_commands::ports::{check_key, Access};

use crate::cdn;
use crate::error::AppError;
use crate::signing::{MediaClaims, TokenError};
use crate::Core;

/// Largest playlist or manifest answered from memory.
pub const MAX_MANIFEST_BYTES: u64 = 8 * 1024 * 1024;

/// Where a media link's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaFile {
    /// A file on this machine (the folder store); serve it with Range support.
    Local(PathBuf),
    /// A playlist, manifest or WebVTT index, answered from memory.
    Text {
        /// The text.
        body: Vec<u8>,
        /// Whether a client may keep it (a CDN-rewritten one carries expiring signatures).
        cacheable: bool,
    },
    /// Elsewhere, for as long as the grant lasts: redirect there.
    Redirect(String),
    /// The video has no such file.
    NotFound,
}

/// Why a media link is not served.
#[derive(Debug, thiserror::Error)]
pub enum MediaRefusal {
    /// The link's token is bad, expired or for another video.
    #[error("the media link is refused: {0}")]
    Token(TokenError),
    /// The store failed.
    #[error(transparent)]
    Failed(#[from] AppError),
}

/// Media delivery.
pub struct Media<'a> {
    core: &'a Core,
}

impl<'a> Media<'a> {
    pub(crate) fn new(core: &'a Core) -> Self {
        Self { core }
    }

    /// The file `rest` of video `video_id` that the link with `token` names.
    ///
    /// # Errors
    /// [`MediaRefusal::Token`] for a link that does not grant it; the store's failures.
    pub async fn open(&self, token: &str, video_id: &str, rest: &str) -> Result<MediaFile, MediaRefusal> {
        let core = self.core;
        let claims: MediaClaims = core.signer.verify(token, core.now()).map_err(MediaRefusal::Token)?;
        if claims.v != video_id {
            return Err(MediaRefusal::Token(TokenError::Invalid));
        }
        let key = layout::media_key(video_id, rest);
        if check_key(&key).is_err() {
            return Ok(MediaFile::NotFound);
        }
        if let Some(cdn) = &core.settings.cdn {
            return Ok(self.on_cdn(&cdn.grant(video_id, claims.e), &key, rest).await?);
        }
        match core.ports.objects.local_path(&key) {
            Some(path) => Ok(MediaFile::Local(path)),
            None => Ok(self.in_store(&key, rest, claims.e).await?),
        }
    }

    /// A file of a store without local files (S3): manifests answered, the rest redirected
    /// to a presigned URL that lasts as long as the grant does.
    async fn in_store(&self, key: &str, rest: &str, expires: i64) -> Result<MediaFile, AppError> {
        let objects = &self.core.ports.objects;
        if is_manifest(rest) {
            return Ok(match self.text(key).await? {
                Some(body) => MediaFile::Text { body, cacheable: true },
                None => MediaFile::NotFound,
            });
        }
        let left = u64::try_from(expires - self.core.now().timestamp()).unwrap_or(0).max(1);
        let url = objects
            .presign(key, Access::Read, Duration::from_secs(left))
            .await
            .map_err(|e| AppError::store("object store", &e))?;
        Ok(url.map_or(MediaFile::NotFound, MediaFile::Redirect))
    }

    /// A file with a CDN in front of the store: manifests answered with their URIs on the
    /// CDN, the rest redirected there.
    async fn on_cdn(&self, grant: &cdn::Grant, key: &str, rest: &str) -> Result<MediaFile, AppError> {
        let rewrite: fn(&str, &str, &cdn::Grant) -> String = match extension(rest).as_str() {
            "m3u8" => cdn::rewrite_hls,
            "mpd" => cdn::rewrite_mpd,
            "vtt" => cdn::rewrite_vtt,
            _ => return Ok(MediaFile::Redirect(grant.url(rest))),
        };
        let Some(bytes) = self.text(key).await? else {
            return Ok(MediaFile::NotFound);
        };
        let text =
            String::from_utf8(bytes).map_err(|_| AppError::internal("media", &format!("{key} is not UTF-8 text")))?;
        let dir = rest.rfind('/').map_or("", |at| &rest[..=at]);
        Ok(MediaFile::Text {
            body: rewrite(&text, dir, grant).into_bytes(),
            cacheable: false,
        })
    }

    async fn text(&self, key: &str) -> Result<Option<Vec<u8>>, AppError> {
        self.core
            .ports
            .objects
            .read(key, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| AppError::store("object store", &e))
    }
}

/// The extension of `path`, lower case.
pub fn extension(path: &str) -> String {
    path.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether `path` is a playlist, manifest or WebVTT index.
fn is_manifest(path: &str) -> bool {
    matches!(extension(path).as_str(), "m3u8" | "mpd" | "vtt")
}
