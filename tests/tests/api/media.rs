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
