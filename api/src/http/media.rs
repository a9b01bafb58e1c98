//! Embedded mode's stand-in for S3: signed upload URLs (`PUT /uploads/{token}`, streamed to
//! the object store, never held in memory) and signed media URLs (`GET
//! /media/{token}/{video_id}/...`, with Range support).
//!
//! On S3 the media URLs stay the same, so players resolve a playlist's relative URIs under
//! the token: playlists and manifests are read from S3 and answered here (a redirect would
//! make players resolve segments against the presigned URL, whose signature covers one
//! object), and every other file is a `302` to a presigned S3 `GET` that lasts as long as the
//! token does.

use poem::error::StaticFileError;
use poem::http::{header, StatusCode};
use poem::web::{Data, Path, StaticFileRequest};
use poem::{handler, Body, IntoResponse, Request, Response};
use serde_json::json;
use vodsource_commands::ports::{check_key, Access, PutError};

use super::body::{body_fault, BodyFault, Exact};
use super::cdn;
use super::error::ApiError;
use super::signing::{MediaClaims, TokenError, UploadClaims};
use super::state::AppState;

fn refused(what: &str, error: &TokenError) -> Response {
    ApiError::with(
        403,
        "FORBIDDEN",
        format!("the {what} link is refused: {error}"),
        json!(null),
    )
    .into_response()
}

/// `PUT /uploads/{token}`: stores the body as the video's source.
#[handler]
pub async fn upload(req: &Request, Path(token): Path<String>, body: Body, Data(state): Data<&AppState>) -> Response {
    let mut response = store_upload(req, &token, body, state).await;
    // A refusal may leave the body unread: the connection cannot carry another request, and a
    // client must be told before it tries.
    if !response.status().is_success() {
        response
            .headers_mut()
            .insert(header::CONNECTION, poem::http::HeaderValue::from_static("close"));
    }
    response
}

async fn store_upload(req: &Request, token: &str, body: Body, state: &AppState) -> Response {
    let claims: UploadClaims = match state.signer.verify(token, state.now()) {
        Ok(claims) => claims,
        Err(e) => return refused("upload", &e),
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > claims.s => return too_large(claims.s),
        Some(length) if length < claims.s => return size_mismatch(claims.s, length),
        _ => {}
    }
    // One upload of a video at a time; upload-complete waits its turn too.
    let _turn = match state.uploads.begin(&claims.v) {
        Ok(turn) => turn,
        Err(e) => return e.into_response(),
    };
    match state.commands.store().load(&claims.v).await {
        Ok(loaded) if loaded.version == 0 || loaded.video.deleted => {
            return ApiError::video_not_found(&claims.v).into_response()
        }
        // The source is recorded: the token is spent, whatever its expiry says.
        Ok(loaded) if loaded.video.source_key.is_some() => {
            return ApiError::with(
                409,
                "UPLOAD_COMPLETED",
                "this video's source is already recorded; its upload link no longer works",
                json!({ "video_id": claims.v }),
            )
            .into_response()
        }
        Ok(_) => {}
        Err(e) => return ApiError::store("loading a video", &e).into_response(),
    }
    // Exactly the declared size or nothing: a short body is a failed read, which the store
    // discards without touching an object already there.
    let body = Exact::new(body.into_async_read(), claims.s);
    let written = match state.objects.put(&claims.k, Box::new(body), claims.s).await {
        Ok(written) => written,
        Err(PutError::TooLarge { .. }) => return too_large(claims.s),
        Err(PutError::Body(message)) => {
            return match body_fault(&message) {
                BodyFault::Short => ApiError::with(
                    422,
                    "SIZE_MISMATCH",
                    format!("{message}; the video was registered with {} bytes", claims.s),
                    json!({ "declared": claims.s }),
                ),
                BodyFault::Slow => ApiError::with(408, "REQUEST_TIMEOUT", message, json!(null)),
                BodyFault::Other => ApiError::invalid("body", format!("the upload was cut short: {message}")),
            }
            .into_response()
        }
        Err(PutError::Store(e)) => return ApiError::store("storing an upload", &e).into_response(),
    };
    (
        StatusCode::OK,
        poem::web::Json(json!({ "video_id": claims.v, "object_key": claims.k, "size_bytes": written })),
    )
        .into_response()
}

fn size_mismatch(declared: u64, actual: u64) -> Response {
    ApiError::with(
        422,
        "SIZE_MISMATCH",
        format!("the body has {actual} bytes; the video was registered with {declared}"),
        json!({ "declared": declared, "actual": actual }),
    )
    .into_response()
}

fn too_large(limit: u64) -> Response {
    ApiError::with(
        413,
        "PAYLOAD_TOO_LARGE",
        format!("the body is larger than the declared {limit} bytes"),
        json!({ "limit": limit }),
    )
    .into_response()
}

/// `GET /media/{token}/{video_id}/{path}`: an encoded file of a video.
#[handler]
pub async fn media(
    Path((token, video_id, rest)): Path<(String, String, String)>,
    file: StaticFileRequest,
    Data(state): Data<&AppState>,
) -> Response {
    let claims: MediaClaims = match state.signer.verify(&token, state.now()) {
        Ok(claims) => claims,
        Err(e) => return refused("media", &e),
    };
    if claims.v != video_id {
        return refused("media", &TokenError::Invalid);
    }
    let key = vodsource_commands::layout::media_key(&video_id, &rest);
    if check_key(&key).is_err() {
        return not_found(&rest);
    }
    if let Some(cdn) = &state.settings.cdn {
        return cdn_media(state, cdn.grant(&video_id, claims.e), &key, &rest).await;
    }
    let Some(path) = state.objects.local_path(&key) else {
        return remote_media(state, &key, &rest, claims.e).await;
    };
    match file.create_response(&path, false, false) {
        Ok(response) => {
            let mut response = response
                .with_header(header::CACHE_CONTROL, "private, max-age=3600")
                .into_response();
            if let Some(content_type) = streaming_type(&rest) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, poem::http::HeaderValue::from_static(content_type));
            }
            response
        }
        Err(StaticFileError::NotFound) => not_found(&rest),
        Err(e) => poem::Error::from(e).into_response(),
    }
}

/// Largest playlist or manifest answered from memory.
const MAX_MANIFEST_BYTES: u64 = 8 * 1024 * 1024;

/// A media file of a store without local files (S3): manifests answered, the rest redirected.
async fn remote_media(state: &AppState, key: &str, rest: &str, expires: i64) -> Response {
    if is_manifest(rest) {
        return match state.objects.read(key, MAX_MANIFEST_BYTES).await {
            Ok(Some(bytes)) => manifest(rest, "private, max-age=3600", bytes),
            Ok(None) => not_found(rest),
            Err(e) => ApiError::store("object store", &e).into_response(),
        };
    }
    let left = u64::try_from(expires - state.now().timestamp()).unwrap_or(0).max(1);
    match state
        .objects
        .presign(key, Access::Read, std::time::Duration::from_secs(left))
        .await
    {
        Ok(Some(url)) => redirect(&url),
        Ok(None) => not_found(rest),
        Err(e) => ApiError::store("object store", &e).into_response(),
    }
}

/// A media file with a CDN in front of the store: manifests answered here with their URIs on
/// the CDN, the rest redirected there.
async fn cdn_media(state: &AppState, grant: cdn::Grant, key: &str, rest: &str) -> Response {
    let rewrite: fn(&str, &str, &cdn::Grant) -> String = match extension(rest).as_str() {
        "m3u8" => cdn::rewrite_hls,
        "mpd" => cdn::rewrite_mpd,
        "vtt" => cdn::rewrite_vtt,
        _ => return redirect(&grant.url(rest)),
    };
    let text = match state.objects.read(key, MAX_MANIFEST_BYTES).await {
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => return ApiError::internal("media", &format!("{key} is not UTF-8 text")).into_response(),
        },
        Ok(None) => return not_found(rest),
        Err(e) => return ApiError::store("object store", &e).into_response(),
    };
    let dir = rest.rfind('/').map_or("", |at| &rest[..=at]);
    manifest(rest, "private, no-store", rewrite(&text, dir, &grant))
}

fn not_found(rest: &str) -> Response {
    ApiError::with(404, "NOT_FOUND", format!("no media file {rest:?}"), json!(null)).into_response()
}

/// A `302` to where the file is, not to be cached (the URL expires).
fn redirect(url: &str) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, url)
        .header(header::CACHE_CONTROL, "private, no-store")
        .finish()
}

/// A playlist, manifest or WebVTT file answered from memory.
fn manifest(rest: &str, cache: &'static str, body: impl Into<Body>) -> Response {
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            streaming_type(rest).unwrap_or("application/octet-stream"),
        )
        .header(header::CACHE_CONTROL, cache)
        .body(body)
}

/// The lowercase extension of a path (empty without one).
fn extension(path: &str) -> String {
    path.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

fn is_manifest(path: &str) -> bool {
    matches!(extension(path).as_str(), "m3u8" | "mpd" | "vtt")
}

/// The registered media types of streaming files, where the generic extension table differs
/// (it calls an `.m3u8` `audio/x-mpegurl`; RFC 8216 registers `application/vnd.apple.mpegurl`).
fn streaming_type(path: &str) -> Option<&'static str> {
    Some(match extension(path).as_str() {
        "m3u8" => "application/vnd.apple.mpegurl",
        "mpd" => "application/dash+xml",
        "m4s" => "video/iso.segment",
        "mp4" => "video/mp4",
        "vtt" => "text/vtt; charset=utf-8",
        _ => return None,
    })
}
