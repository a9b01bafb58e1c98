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
use vodsource_commands::ports::PutError;

use vodsource_app::media::{extension, MediaFile, MediaRefusal};
use vodsource_app::signing::TokenError;

use super::body::{body_fault, BodyFault, Exact};
use super::error::ApiError;
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
    let videos = state.app.videos();
    let claims = match videos.upload_grant(token) {
        Ok(claims) => claims,
        Err(e) => return refused("upload", &e),
    };
    let granted = claims.s;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > granted => return too_large(granted),
        Some(length) if length < granted => return size_mismatch(granted, length),
        _ => {}
    }
    // One upload of a video at a time; upload-complete waits its turn too.
    let slot = match videos.open_upload(claims).await {
        Ok(slot) => slot,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Exactly the declared size or nothing: a short body is a failed read, which the store
    // discards without touching an object already there.
    let body = Exact::new(body.into_async_read(), granted);
    let written = match videos.write_upload(&slot, Box::new(body)).await {
        Ok(written) => written,
        Err(PutError::TooLarge { .. }) => return too_large(granted),
        Err(PutError::Body(message)) => {
            return match body_fault(&message) {
                BodyFault::Short => ApiError::with(
                    422,
                    "SIZE_MISMATCH",
                    format!("{message}; the video was registered with {granted} bytes"),
                    json!({ "declared": granted }),
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
        poem::web::Json(json!({ "video_id": slot.claims.v, "object_key": slot.claims.k, "size_bytes": written })),
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
    let path = match state.app.media().open(&token, &video_id, &rest).await {
        Ok(MediaFile::Local(path)) => path,
        Ok(MediaFile::Text { body, cacheable }) => {
            let cache = match (cacheable, grows(&rest)) {
                (false, _) => "private, no-store",
                (true, true) => "private, no-cache",
                (true, false) => "private, max-age=3600",
            };
            return manifest(&rest, cache, body);
        }
        Ok(MediaFile::Redirect(url)) => return redirect(&url),
        Ok(MediaFile::NotFound) => return not_found(&rest),
        Err(MediaRefusal::Token(e)) => return refused("media", &e),
        Err(MediaRefusal::Failed(e)) => return ApiError::from(e).into_response(),
    };
    match file.create_response(&path, false, false) {
        Ok(response) => {
            let cache = if grows(&rest) {
                "private, no-cache"
            } else {
                "private, max-age=3600"
            };
            let mut response = response.with_header(header::CACHE_CONTROL, cache).into_response();
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

/// Playlists and MPDs change while a video that plays is still encoding (they grow, then
/// turn `VOD`/static): a client revalidates them each time; segments never change.
fn grows(rest: &str) -> bool {
    matches!(extension(rest).as_str(), "m3u8" | "mpd")
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
