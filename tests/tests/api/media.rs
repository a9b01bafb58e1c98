//! Playback URLs and media served with Range support behind signatures.

use reqwest::{Method, StatusCode};

#[cfg(feature = "distributed")]
use vodsource_app::cdn::{Cdn, CloudFrontKey};

use crate::harness::{code, server, token, MASTER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_is_signed_expiring_and_only_for_published_videos() {
    let s = server().await;
    let alice = token("alice", "creator");
    let viewer = token("carol", "viewer");
    let id = s.uploaded("alice", "playable").await;
    let playback = format!("/v1/videos/{id}/playback");
    s.until_catalog(&id, "queued", |v| v["status"] == "queued").await;
    let (status, err) = s.send(s.req(Method::GET, &playback, &alice)).await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "NOT_PUBLISHED"));
    let (status, err) = s.send(s.req(Method::GET, &playback, &viewer)).await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"));
    s.encode(&id).await;
    let (status, _) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/publish"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.until_catalog(&id, "published", |v| v["published"] == true).await;

    let (status, urls) = s.send(s.req(Method::GET, &playback, &viewer)).await;
    assert_eq!(status, StatusCode::OK, "{urls}");
    let hls = urls["hls_url"].as_str().expect("hls").to_owned();
    assert!(hls.starts_with(&format!("{}/media/", s.base)) && hls.ends_with(&format!("/{id}/1/master.m3u8")));
    assert!(urls["dash_url"].as_str().is_some_and(|u| u.ends_with("/manifest.mpd")));
    assert!(urls["expires_at"].is_string());

    let whole = s.client.get(&hls).send().await.expect("get");
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.text().await.expect("text"), MASTER);
    let part = s
        .client
        .get(&hls)
        .header("Range", "bytes=0-6")
        .send()
        .await
        .expect("range");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers().get("content-range").and_then(|v| v.to_str().ok()),
        Some(format!("bytes 0-6/{}", MASTER.len()).as_str())
    );
    assert_eq!(part.text().await.expect("text"), "#EXTM3U");
    // The token covers this video only, and cannot be altered.
    let other = hls.replace(&id, "another-video");
    let (status, err) = crate::harness::parts(s.client.get(&other).send().await.expect("get")).await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, err) = crate::harness::parts(
        s.client
            .get(hls.replace("/master.m3u8", "/missing.m3u8"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (status, _) = crate::harness::parts(
        s.client
            .get(hls.replace("/master.m3u8", "/../../sources/x"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
        "{status}"
    );

    let (status, _) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/unpublish"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.until_catalog(&id, "unpublished", |v| v["published"] == false).await;
    let (status, err) = s.send(s.req(Method::GET, &playback, &alice)).await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "NOT_PUBLISHED"));
    s.stop().await;
}

#[cfg(feature = "distributed")]
/// With the object store on S3: the upload URL is a presigned S3 `PUT` that a plain HTTP
/// client uses directly, upload-complete checks the object there, playlists are answered by
/// the API under the media token, and segments redirect to presigned S3 `GET`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_uploads_go_straight_to_the_bucket_and_segments_redirect_there() {
    let (s, endpoint) = crate::harness::server_on_s3().await;
    let (id, url) = uploaded_to_s3(&s, "on s3").await;
    assert!(
        url.starts_with(&endpoint) && url.contains("X-Amz-Signature="),
        "a presigned S3 URL: {url}"
    );
    s.until_catalog(&id, "queued", |v| v["status"] == "queued").await;

    let urls = publish_on_s3(&s, &id).await;
    let hls = urls["hls_url"].as_str().expect("hls").to_owned();
    assert!(hls.starts_with(&format!("{}/media/", s.base)));

    let master = s.client.get(&hls).send().await.expect("get");
    assert_eq!(master.status(), StatusCode::OK);
    assert_eq!(
        master.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(master.text().await.expect("text"), MASTER);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let segment_url = hls.replace("/master.m3u8", "/seg-1.m4s");
    let redirect = no_redirects.get(&segment_url).send().await.expect("get");
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let location = redirect
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_owned();
    assert!(
        location.starts_with(&endpoint) && location.contains("X-Amz-Signature="),
        "{location}"
    );
    let segment = s.client.get(&segment_url).send().await.expect("followed");
    assert_eq!(segment.status(), StatusCode::OK);
    assert_eq!(segment.bytes().await.expect("bytes").as_ref(), b"segment bytes");
    // What is not there is not found, and the token still binds the video.
    let missing = s
        .client
        .get(hls.replace("/master.m3u8", "/missing.m3u8"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let other = no_redirects
        .get(segment_url.replace(&id, "another-video"))
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    s.stop().await;
}

#[cfg(feature = "distributed")]
/// Registers a small video of alice's, PUTs it to its presigned S3 URL with a plain HTTP
/// client and completes the upload: its id and the upload URL.
async fn uploaded_to_s3(s: &crate::harness::Server, title: &str) -> (String, String) {
    let bytes = b"eleven byte".to_vec();
    let (id, url) = s.register("alice", title, bytes.len() as u64).await;
    let put = reqwest::Client::new()
        .put(&url)
        .header("Content-Type", "video/mp4")
        .body(bytes)
        .send()
        .await
        .expect("put");
    assert!(put.status().is_success(), "PUT to S3: {}", put.status());
    let (status, body) = s
        .send(s.req(
            Method::POST,
            &format!("/v1/videos/{id}/upload-complete"),
            &token("alice", "creator"),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (id, url)
}

#[cfg(feature = "distributed")]
/// Encodes `id` (a master, a rendition playlist and a segment on S3), publishes it, and
/// returns its playback URLs.
async fn publish_on_s3(s: &crate::harness::Server, id: &str) -> serde_json::Value {
    s.encode(id).await;
    let put = |key: String, body: &'static [u8]| {
        let objects = s.objects.clone();
        async move {
            objects
                .put(&key, Box::new(std::io::Cursor::new(body)), 1 << 20)
                .await
                .expect("put media");
        }
    };
    put(format!("media/{id}/1/master.m3u8"), MASTER.as_bytes()).await;
    put(
        format!("media/{id}/1/360p.m3u8"),
        b"#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.0,\nseg-1.m4s\n",
    )
    .await;
    put(format!("media/{id}/1/seg-1.m4s"), b"segment bytes").await;
    put(format!("media/{id}/1/init.mp4"), b"init bytes").await;
    let alice = token("alice", "creator");
    let (status, _) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/publish"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.until_catalog(id, "published", |v| v["published"] == true).await;
    let (status, urls) = s
        .send(s.req(
            Method::GET,
            &format!("/v1/videos/{id}/playback"),
            &token("carol", "viewer"),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{urls}");
    urls
}

#[cfg(feature = "distributed")]
/// With a CDN in front of the bucket (here the emulator's plain bucket URL stands in for
/// CloudFront, and a test key signs): playlists still come from the API under the media
/// token, but every segment they name is an absolute CloudFront-signed URL on the CDN, the
/// player fetches it there, and a segment asked of the API redirects there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cdn_playlists_send_players_to_it_with_signed_urls() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../app/src/testdata/cloudfront-test-key.pem"
    );
    let mut cdn_base = String::new();
    let (s, _) = crate::harness::server_on_s3_with(|base| {
        cdn_base = base.to_owned();
        let key = CloudFrontKey::from_file("KTESTKEY", std::path::Path::new(key)).expect("test key");
        let mut settings = crate::harness::settings();
        settings.cdn = Some(std::sync::Arc::new(Cdn::new(base, Some(key)).expect("cdn")));
        settings
    })
    .await;
    let (id, _) = uploaded_to_s3(&s, "behind a cdn").await;
    let urls = publish_on_s3(&s, &id).await;
    let hls = urls["hls_url"].as_str().expect("hls").to_owned();
    assert!(hls.starts_with(&format!("{}/media/", s.base)), "{hls}");
    // The poster is one request: straight to the CDN, signed.
    let poster = urls["poster_url"].as_str().expect("poster");
    assert!(
        poster.starts_with(&format!("{cdn_base}/{id}/1/poster.jpg?Policy=")),
        "{poster}"
    );

    // The master names rendition playlists, which stay relative (the API rewrites them too).
    let master = s.client.get(&hls).send().await.expect("master");
    assert_eq!(master.text().await.expect("text"), MASTER);
    let rendition = s
        .client
        .get(hls.replace("/master.m3u8", "/360p.m3u8"))
        .send()
        .await
        .expect("rendition");
    assert_eq!(rendition.status(), StatusCode::OK);
    assert_eq!(
        rendition.headers().get("cache-control").and_then(|v| v.to_str().ok()),
        Some("private, no-store")
    );
    let rendition = rendition.text().await.expect("text");
    let segment = rendition
        .lines()
        .find(|l| l.contains("seg-1.m4s"))
        .expect("segment line")
        .to_owned();
    let prefix = format!("{cdn_base}/{id}/1/seg-1.m4s?Policy=");
    assert!(segment.starts_with(&prefix), "{segment}");
    assert!(
        segment.contains("&Signature=") && segment.ends_with("&Key-Pair-Id=KTESTKEY&Hash-Algorithm=SHA256"),
        "{segment}"
    );
    assert!(
        rendition.contains(&format!("#EXT-X-MAP:URI=\"{cdn_base}/{id}/1/init.mp4?Policy=")),
        "{rendition}"
    );
    // The "CDN" serves it (the emulator ignores CloudFront's query).
    let fetched = reqwest::get(&segment).await.expect("segment from the CDN");
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.bytes().await.expect("bytes").as_ref(), b"segment bytes");

    // A player holding an old playlist that asks the API for a segment is sent to the CDN.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = no_redirects
        .get(hls.replace("/master.m3u8", "/seg-1.m4s"))
        .send()
        .await
        .expect("get");
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let location = redirect.headers().get("location").and_then(|v| v.to_str().ok());
    assert!(location.is_some_and(|l| l.starts_with(&prefix)), "{location:?}");
    // What is not there is still not found.
    let missing = s
        .client
        .get(hls.replace("/master.m3u8", "/missing.m3u8"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}
