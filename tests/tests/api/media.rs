//! Playback URLs and media served with Range support behind signatures.

use reqwest::{Method, StatusCode};

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

/// With the object store on S3: the upload URL is a presigned S3 `PUT` that a plain HTTP
/// client uses directly, upload-complete checks the object there, playlists are answered by
/// the API under the media token, and segments redirect to presigned S3 `GET`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_uploads_go_straight_to_the_bucket_and_segments_redirect_there() {
    let (s, endpoint) = crate::harness::server_on_s3().await;
    let alice = token("alice", "creator");
    let bytes = b"eleven byte".to_vec();
    let (id, url) = s.register("alice", "on s3", bytes.len() as u64).await;
    assert!(
        url.starts_with(&endpoint) && url.contains("X-Amz-Signature="),
        "a presigned S3 URL: {url}"
    );
    let put = reqwest::Client::new()
        .put(&url)
        .header("Content-Type", "video/mp4")
        .body(bytes.clone())
        .send()
        .await
        .expect("put");
    assert!(put.status().is_success(), "PUT to S3: {}", put.status());
    let (status, body) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/upload-complete"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.until_catalog(&id, "queued", |v| v["status"] == "queued").await;

    s.encode(&id).await;
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
    put(format!("media/{id}/1/360p.m3u8"), b"#EXTM3U\n#EXTINF:4.0,\nseg-1.m4s\n").await;
    put(format!("media/{id}/1/seg-1.m4s"), b"segment bytes").await;
    let (status, _) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/publish"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.until_catalog(&id, "published", |v| v["published"] == true).await;
    let (status, urls) = s
        .send(s.req(
            Method::GET,
            &format!("/v1/videos/{id}/playback"),
            &token("carol", "viewer"),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{urls}");
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
