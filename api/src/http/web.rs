//! The web app at `/`: a viewer's catalog, continue watching and player (hls.js, or dash.js),
//! with QoE beacons; a creator's upload, live encoding status and publish. Every file is in
//! the binary: the app's own from `web/`, hls.js, dash.js and tus-js-client from npm (`web/package-lock.json`,
//! installed by the build), so nothing comes from a CDN at run time.

use std::sync::LazyLock;

use poem::http::{header, StatusCode};
use poem::web::Path;
use poem::{handler, Request, Response};

macro_rules! web {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/", $path)).as_slice()
    };
}

const INDEX: &[u8] = web!("index.html");

/// The files under `/app/`: name, media type, bytes.
const ASSETS: [(&str, &str, &[u8]); 6] = [
    ("app.js", "text/javascript; charset=utf-8", web!("app.js")),
    ("qoe.js", "text/javascript; charset=utf-8", web!("qoe.js")),
    ("style.css", "text/css; charset=utf-8", web!("style.css")),
    (
        "hls.min.js",
        "text/javascript; charset=utf-8",
        web!("node_modules/hls.js/dist/hls.min.js"),
    ),
    (
        "tus.min.js",
        "text/javascript; charset=utf-8",
        web!("node_modules/tus-js-client/dist/tus.min.js"),
    ),
    (
        "dash.mediaplayer.min.js",
        "text/javascript; charset=utf-8",
        web!("node_modules/dashjs/dist/modern/umd/dash.mediaplayer.min.js"),
    ),
];

/// Each asset's ETag: a hash of its bytes, so a new binary's files are fetched anew.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(_, _, bytes)| {
            use base64::Engine as _;
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(bytes);
            format!(
                "\"{}\"",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12])
            )
        })
        .collect()
});

/// `GET /`: the app's page.
#[handler]
pub fn index() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("X-Content-Type-Options", "nosniff")
        .body(INDEX)
}

/// `GET /app/{name}`: a script or style sheet of the app, revalidated by ETag.
#[handler]
pub fn asset(Path(name): Path<String>, req: &Request) -> Response {
    let Some(at) = ASSETS.iter().position(|(n, _, _)| *n == name) else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .content_type("text/plain; charset=utf-8")
            .body(format!("no web app file {name:?}"));
    };
    let (_, media_type, bytes) = ASSETS[at];
    let etag = &ETAGS[at];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let builder = Response::builder()
        .header(header::ETAG, etag.as_str())
        .header(header::CACHE_CONTROL, "no-cache")
        .header("X-Content-Type-Options", "nosniff");
    if fresh {
        return builder.status(StatusCode::NOT_MODIFIED).finish();
    }
    builder.content_type(media_type).body(bytes)
}
