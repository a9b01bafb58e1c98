//! Commands: register, upload, upload-complete, update, publish, unpublish, retry, delete.

use reqwest::{Method, StatusCode};
use serde_json::json;
use vodsource_commands::CommandContext;
use vodsource_domain::VideoCommand;

use crate::harness::{code, register_body, server, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_registers_uploads_and_the_video_is_queued_for_encoding() {
    let s = server().await;
    let alice = token("alice", "creator");
    let response = s
        .req(Method::POST, "/v1/videos", &alice)
        .json(&register_body("First light", 11))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = response.json().await.expect("json");
    let id = body["video_id"].as_str().expect("id").to_owned();
    assert_eq!(location.as_deref(), Some(format!("/v1/videos/{id}").as_str()));
    assert_eq!(body["version"], 1);
    assert_eq!(body["upload"]["method"], "PUT");
    assert_eq!(body["upload"]["headers"]["Content-Type"], "video/mp4");
    let url = body["upload"]["url"].as_str().expect("url");
    assert!(url.starts_with(&format!("{}/uploads/", s.base)));

    // Before the bytes arrive, completing is refused.
    let (status, err) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/upload-complete"), &alice))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "UPLOAD_MISSING"));

    let put = s.client.put(url).body("hello world").send().await.expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    let stored = std::fs::read(s.dir.path().join(format!("objects/sources/{id}/source.mp4"))).expect("stored");
    assert_eq!(stored, b"hello world");

    let (status, done) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/upload-complete"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["version"], 2);
    // The process manager requests encoding; the status view shows it queued.
    s.until_status(&format!("/v1/videos/{id}/status"), StatusCode::OK).await;
    let video = s.until_catalog(&id, "queued", |v| v["status"] == "queued").await;
    assert_eq!(video["owner"], "alice");
    assert_eq!(video["tags"].as_array().map(Vec::len), Some(2), "{video}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_bad_input_with_named_errors_and_records_nothing() {
    let s = server().await;
    let alice = token("alice", "creator");
    let cases = [
        (
            json!({"title": "", "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 1}),
            400,
            "VALIDATION_FAILED",
        ),
        (
            json!({"title": "x".repeat(201), "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 1}),
            400,
            "VALIDATION_FAILED",
        ),
        (
            json!({"title": "t", "filename": "../etc/passwd", "content_type": "video/mp4", "size_bytes": 1}),
            400,
            "VALIDATION_FAILED",
        ),
        (
            json!({"title": "t", "filename": "a\u{7}.mp4", "content_type": "video/mp4", "size_bytes": 1}),
            400,
            "VALIDATION_FAILED",
        ),
        (
            json!({"title": "t", "filename": "a.mp4", "content_type": "image/png", "size_bytes": 1}),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            json!({"title": "t", "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 0}),
            400,
            "VALIDATION_FAILED",
        ),
        (
            json!({"title": "t", "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 11 * 1024 * 1024}),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            json!({"title": "t", "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 1, "colour": "red"}),
            400,
            "VALIDATION_FAILED",
        ),
        (
            json!({"title": "t", "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 1, "tags": (0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
            400,
            "VALIDATION_FAILED",
        ),
        (
            json!({"title": "t", "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 1, "tags": ["x".repeat(41)]}),
            400,
            "VALIDATION_FAILED",
        ),
        (
            json!({"filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 1}),
            400,
            "VALIDATION_FAILED",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, err) = s.send(s.req(Method::POST, "/v1/videos", &alice).json(&body)).await;
        assert_eq!((got.as_u16(), code(&err)), (status, expected), "{body} -> {err}");
        assert!(err["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, err) = s
        .send(
            s.req(Method::POST, "/v1/videos", &alice)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!((status, code(&err)), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    let (status, err) = s
        .send(
            s.req(Method::POST, "/v1/videos", &alice)
                .header("content-type", "text/plain")
                .body("title"),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
    );
    let (status, err) = s
        .send(
            s.req(Method::POST, "/v1/videos", &alice)
                .header("content-type", "application/json")
                .body(vec![b' '; 300 * 1024]),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );
    assert_eq!(s.stores.log.head().await.expect("head"), 0, "nothing was recorded");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_checked_against_the_signed_link_and_the_declared_size() {
    let s = server().await;
    let (id, url) = s.register("alice", "sized", 10).await;
    let too_big = s.client.put(&url).body(vec![7u8; 11]).send().await.expect("put");
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Streamed without a length, the limit still holds.
    let chunks = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![1u8; 4])));
    let streamed = s
        .client
        .put(&url)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("put");
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let short = s.client.put(&url).body(vec![7u8; 9]).send().await.expect("put");
    let (status, err) = crate::harness::parts(short).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "SIZE_MISMATCH")
    );
    assert!(s
        .objects
        .head(&format!("sources/{id}/source.mp4"))
        .await
        .expect("head")
        .is_none());
    let (tampered, _) = url.rsplit_once('.').expect("token");
    let forged = s
        .client
        .put(format!("{tampered}.AAAA"))
        .body(vec![7u8; 10])
        .send()
        .await
        .expect("put");
    let (status, err) = crate::harness::parts(forged).await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let ok = s.client.put(&url).body(vec![7u8; 10]).send().await.expect("put");
    assert_eq!(ok.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_change_their_videos_and_others_cannot() {
    let s = server().await;
    let id = s.uploaded("alice", "mine").await;
    let path = format!("/v1/videos/{id}");
    // Another creator learns nothing: not found, exactly as for an unknown id, for every
    // command.
    let (status, err) = s
        .send(
            s.req(Method::PATCH, &path, &token("bob", "creator"))
                .json(&json!({"title": "stolen"})),
        )
        .await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"));
    for command in ["upload-complete", "publish", "unpublish", "retry"] {
        let (status, err) = s
            .send(s.req(Method::POST, &format!("{path}/{command}"), &token("bob", "creator")))
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"),
            "{command}"
        );
    }
    let (status, err) = s.send(s.req(Method::DELETE, &path, &token("bob", "creator"))).await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"));
    let (status, err) = s
        .send(
            s.req(Method::PATCH, &path, &token("carol", "viewer"))
                .json(&json!({"title": "x"})),
        )
        .await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, err) = s.send(s.client.patch(s.url(&path)).json(&json!({"title": "x"}))).await;
    assert_eq!((status, code(&err)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    let (status, body) = s
        .send(
            s.req(Method::PATCH, &path, &token("alice", "creator"))
                .json(&json!({"title": "renamed", "tags": ["a"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s
        .send(
            s.req(Method::PATCH, &path, &token("root", "admin"))
                .json(&json!({"description": "by admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let video = s
        .until_catalog(&id, "renamed", |v| v["description"] == "by admin")
        .await;
    assert_eq!(
        (video["title"].as_str(), video["tags"].clone()),
        (Some("renamed"), json!(["a"]))
    );
    let (status, err) = s
        .send(s.req(Method::PATCH, &path, &token("alice", "creator")).json(&json!({})))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    let (status, err) = s
        .send(
            s.req(Method::PATCH, "/v1/videos/nope", &token("alice", "creator"))
                .json(&json!({"title": "t"})),
        )
        .await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"));
    let (status, err) = s
        .send(
            s.req(Method::PATCH, "/v1/videos/bad%20id", &token("alice", "creator"))
                .json(&json!({"title": "t"})),
        )
        .await;
    assert_eq!((status, code(&err)), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_follows_the_lifecycle() {
    let s = server().await;
    let alice = token("alice", "creator");
    let id = s.uploaded("alice", "to publish").await;
    let publish = format!("/v1/videos/{id}/publish");
    let (status, err) = s.send(s.req(Method::POST, &publish, &alice)).await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "INVALID_STATE"));
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("before it plays"),
        "{err}"
    );
    s.encode(&id).await;
    let (status, body) = s.send(s.req(Method::POST, &publish, &alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.until_catalog(&id, "published", |v| v["published"] == true).await;
    let (status, body) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/unpublish"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.until_catalog(&id, "unpublished", |v| v["published"] == false).await;
    let (status, err) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/retry"), &alice))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "INVALID_STATE"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_failure_is_a_dead_letter_until_retried() {
    let s = server().await;
    let id = s.uploaded("alice", "broken").await;
    let commands = s.stores.commands();
    let ctx = CommandContext::actor("test-encoder");
    let attempt = s.requested_attempt(&id).await;
    for cmd in [
        VideoCommand::ClaimEncoding {
            worker_id: "w".into(),
            attempt,
            lease_secs: 60,
        },
        VideoCommand::FailEncoding {
            worker_id: "w".into(),
            attempt,
            reason: "no video stream".into(),
            retryable: false,
        },
    ] {
        commands.execute(&id, cmd, &ctx).await.expect("encoder");
    }
    let root = token("root", "admin");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = s.send(s.req(Method::GET, "/v1/admin/dead-letters", &root)).await;
        assert_eq!(status, StatusCode::OK);
        if body["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|d| d["video_id"] == id.as_str()))
        {
            assert_eq!(body["items"][0]["reason"], "no video stream");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, err) = s
        .send(s.req(Method::GET, "/v1/admin/dead-letters", &token("alice", "creator")))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, body) = s
        .send(s.req(
            Method::POST,
            &format!("/v1/videos/{id}/retry"),
            &token("alice", "creator"),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.until_catalog(&id, "queued again", |v| v["status"] == "queued").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_removes_media_and_keeps_the_history() {
    let s = server().await;
    let alice = token("alice", "creator");
    let id = s.uploaded("alice", "to delete").await;
    s.encode(&id).await;
    let media = s.dir.path().join(format!("objects/media/{id}/1/master.m3u8"));
    assert!(media.exists());
    let (status, body) = s.send(s.req(Method::DELETE, &format!("/v1/videos/{id}"), &alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!media.exists(), "media removed");
    assert!(
        !s.dir.path().join(format!("objects/sources/{id}")).exists(),
        "source removed"
    );
    s.until_status(&format!("/v1/videos/{id}"), StatusCode::NOT_FOUND).await;
    let (status, history) = s.send(s.req(Method::GET, &format!("/v1/history/{id}"), &alice)).await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<_> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("VideoRegistered"));
    assert_eq!(types.last().map(String::as_str), Some("VideoDeleted"));
    let (status, err) = s.send(s.req(Method::DELETE, &format!("/v1/videos/{id}"), &alice)).await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"));
    let (status, err) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/publish"), &alice))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"));
    s.stop().await;
}
