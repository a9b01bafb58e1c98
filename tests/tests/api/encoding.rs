//! The whole way through a real server with its in-process encoder: register, upload a real
//! clip, complete, watch it encode, publish, and play the signed HLS and DASH URLs — read by
//! ffprobe over HTTP, as a player would.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use vodsource_encoder::WorkerConfig;
use vodsource_tests::clips::{ffprobe, pattern};
use vodsource_tests::TempDir;

use crate::harness::{register_body, server_with, settings, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_clip_is_encoded_published_and_played_through_signed_urls() {
    let scratch = TempDir::new();
    let mut config = settings();
    let mut worker = WorkerConfig::new("api-encoder", scratch.path().join("work"));
    worker.progress_every = Duration::from_millis(250);
    config.workers = vec![worker];
    let s = server_with(config).await;
    let alice = token("alice", "creator");
    let source = pattern(scratch.path(), "clip.mp4", "640x360", 25, 5);
    let bytes = std::fs::read(&source).expect("clip");

    let mut body = register_body("encoded", bytes.len() as u64);
    body["content_type"] = Value::from("video/quicktime"); // it is not; the probe reads content
    let (status, created) = s.send(s.req(Method::POST, "/v1/videos", &alice).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["video_id"].as_str().expect("id").to_owned();
    let url = created["upload"]["url"].as_str().expect("url");
    let put = s.client.put(url).body(bytes).send().await.expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    let (status, completed) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/upload-complete"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    let uploaded_at = completed["position"].as_u64().expect("position");

    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let path = format!("/v1/videos/{id}/status?min_position={uploaded_at}");
        let (code, status) = s.send(s.req(Method::GET, &path, &alice)).await;
        assert_eq!(code, StatusCode::OK, "{status}");
        if status["status"] == "ready" || status["status"] == "failed" {
            break status;
        }
        assert!(Instant::now() < until, "not encoded within 60 s: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["status"], "ready", "{status}");
    assert_eq!(status["percent"], 100.0, "{status}");

    // The catalog is another projection than the status view, and may be behind it: wait
    // for it to say ready too.
    let video = s
        .until_catalog(&id, "the catalog to say ready", |v| v["status"] == "ready")
        .await;
    let names: Vec<&str> = video["renditions"]
        .as_array()
        .expect("renditions")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["360p"], "{video}");

    let (code, published) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/publish"), &alice))
        .await;
    assert_eq!(code, StatusCode::OK);
    let position = published["position"].as_u64().expect("position");
    let (code, playback) = s
        .send(s.req(
            Method::GET,
            &format!("/v1/videos/{id}/playback?min_position={position}"),
            &token("bob", "viewer"),
        ))
        .await;
    assert_eq!(code, StatusCode::OK, "{playback}");
    let url = |name: &str| {
        playback[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in {playback}"))
            .to_owned()
    };

    let master = s.client.get(url("hls_url")).send().await.expect("master");
    assert_eq!(master.status(), StatusCode::OK);
    let content_type = |r: &reqwest::Response| {
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(content_type(&master), "application/vnd.apple.mpegurl");
    let mpd = s.client.get(url("dash_url")).send().await.expect("mpd");
    assert_eq!(content_type(&mpd), "application/dash+xml");
    let text = master.text().await.expect("text");
    assert!(
        text.contains("#EXT-X-STREAM-INF:") && text.contains("360p/index.m3u8"),
        "{text}"
    );
    // A player resolves relative URLs against the master's: the signed prefix carries over.
    let hls = ffprobe(std::path::Path::new(&url("hls_url")), &["-show_streams"]);
    let codecs: Vec<&str> = hls["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["codec_name"].as_str())
        .collect();
    assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "{codecs:?}");
    let dash = ffprobe(std::path::Path::new(&url("dash_url")), &["-show_streams"]);
    assert_eq!(dash["streams"].as_array().expect("streams").len(), 2, "{dash}");

    let poster = s.client.get(url("poster_url")).send().await.expect("poster");
    assert_eq!(poster.status(), StatusCode::OK);
    assert_eq!(
        poster.bytes().await.expect("bytes").get(..2),
        Some(&[0xff, 0xd8][..]),
        "a JPEG"
    );
    let vtt = s.client.get(url("thumbnails_url")).send().await.expect("vtt");
    assert!(vtt.text().await.expect("text").starts_with("WEBVTT"));
    let segment = url("hls_url").replace("master.m3u8", "360p/seg_00001.m4s");
    let part = s
        .client
        .get(segment)
        .header("range", "bytes=0-99")
        .send()
        .await
        .expect("segment");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.expect("bytes").len(), 100);

    let metrics = s
        .req(Method::GET, "/metrics", &token("root", "admin"))
        .send()
        .await
        .expect("metrics");
    let metrics = metrics.text().await.expect("text");
    assert!(
        metrics.contains("vodsource_encode_jobs_total{outcome=\"completed\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vodsource_encode_media_seconds_total 5.0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("vodsource_encoders_busy 0\n"), "{metrics}");
}
