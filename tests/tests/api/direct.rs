//! Direct uploads (`/v1/direct/{grant}/s3/multipart…`, Uppy Companion's S3 multipart
//! protocol), call by call against S3 (the emulator): the registration offers them only where
//! the store takes parts from clients; a grant authorizes one video's upload and nothing else;
//! parts are signed one by one within the declared size; completion takes parts 1 to N of
//! exactly their sizes, records the source once and can be retried. Uppy itself drives it in
//! `api/tests/direct_s3.rs`.
// Without the distributed adapters only the folder store's refusal is tested.
#![cfg_attr(not(feature = "distributed"), allow(dead_code, unused_imports))]

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{code, parts, register_body, server, token, Server};
use crate::uploads::history;

const MIB: usize = 1024 * 1024;

/// Registers as alice; the whole answer.
async fn register(s: &Server, title: &str, size: usize) -> Value {
    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/videos", &token("alice", "creator"))
                .json(&register_body(title, size as u64)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn call(s: &Server, method: Method, url: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = s.client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    parts(request.send().await.expect("request")).await
}

/// The URL to PUT part `n` to, and the length it signs.
async fn sign(s: &Server, endpoint: &str, upload: &str, n: u32) -> (String, u64) {
    let (status, body) = call(
        s,
        Method::GET,
        &format!("{endpoint}/s3/multipart/{upload}/{n}?key=ignored"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let length = body["headers"]["Content-Length"]
        .as_str()
        .and_then(|l| l.parse().ok())
        .expect("a signed length");
    (body["url"].as_str().expect("url").to_owned(), length)
}

async fn put(s: &Server, url: &str, bytes: &[u8]) {
    let response = s.client.put(url).body(bytes.to_vec()).send().await.expect("put");
    assert!(response.status().is_success(), "{:?}", response.text().await);
}

#[tokio::test]
async fn the_folder_store_offers_no_direct_upload() {
    let s = server().await;
    let registered = register(&s, "embedded", 100).await;
    assert_eq!(registered["protocols"], json!(["put", "tus"]));
    assert!(registered.get("multipart").is_none(), "{registered}");
    s.stop().await;
}

#[cfg(feature = "distributed")]
#[tokio::test]
async fn parts_go_straight_to_the_bucket_and_complete_into_the_source_once() {
    let (s, _) = crate::harness::server_on_s3().await;
    // Two parts: 8 MiB and the rest.
    let size = 9 * MIB + 123;
    let bytes: Vec<u8> = (0..size).map(|i| (i * 31 + i / 4099) as u8).collect();
    let registered = register(&s, "direct", size).await;
    let id = registered["video_id"].as_str().expect("id").to_owned();
    assert_eq!(registered["protocols"], json!(["put", "tus", "s3-multipart"]));
    let endpoint = registered["multipart"]["endpoint"]
        .as_str()
        .expect("endpoint")
        .to_owned();
    assert_eq!(registered["multipart"]["part_size"], json!(8 * MIB));
    let base = format!("{endpoint}/s3/multipart");

    // A grant is checked: a changed one, another kind of token, another video's.
    let forged = format!("{}x", endpoint);
    let (status, err) = call(&s, Method::POST, &format!("{forged}/s3/multipart"), Some(json!({}))).await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{err}");

    let (status, created) = call(
        &s,
        Method::POST,
        &base,
        Some(json!({ "filename": "clip.mp4", "type": "video/mp4", "metadata": {} })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let upload = created["uploadId"].as_str().expect("uploadId").to_owned();
    assert_eq!(created["key"], json!(format!("sources/{id}/source.mp4")));
    assert_eq!(created["partCount"], 2);
    // A second upload of the same source, which must lose to the first that completes.
    let (_, second) = call(&s, Method::POST, &base, Some(json!({}))).await;
    let second = second["uploadId"].as_str().expect("uploadId").to_owned();

    let other = register(&s, "another", 10).await;
    let other_endpoint = other["multipart"]["endpoint"].as_str().expect("endpoint");
    let (status, err) = call(
        &s,
        Method::GET,
        &format!("{other_endpoint}/s3/multipart/{upload}/1"),
        None,
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "UPLOAD_NOT_FOUND"),
        "{err}"
    );

    // Parts are 1 to 2, of 8 MiB and the rest.
    let (status, err) = call(&s, Method::GET, &format!("{base}/{upload}/3"), None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
        "{err}"
    );
    let (url1, len1) = sign(&s, &endpoint, &upload, 1).await;
    let (url2, len2) = sign(&s, &endpoint, &upload, 2).await;
    assert_eq!((len1, len2), ((8 * MIB) as u64, (MIB + 123) as u64));

    // Part 2 alone does not make the source; nor does a part 1 of another size.
    put(&s, &url2, &bytes[8 * MIB..]).await;
    let (status, err) = call(
        &s,
        Method::POST,
        &format!("{base}/{upload}/complete"),
        Some(json!({ "parts": [] })),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "PARTS_INCOMPLETE"),
        "{err}"
    );
    assert_eq!(err["error"]["details"]["missing"], json!([1]));
    put(&s, &url1, &bytes[..6 * MIB]).await;
    let (status, err) = call(&s, Method::POST, &format!("{base}/{upload}/complete"), Some(json!({}))).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "PARTS_INCOMPLETE"),
        "{err}"
    );
    assert_eq!(err["error"]["details"]["wrong_size"][0]["part_number"], 1);
    assert!(!history(&s, &id).await.iter().any(|t| t == "SourceUploaded"));

    // Sent again whole, the parts are listed (resume from there) and complete the source.
    put(&s, &url1, &bytes[..8 * MIB]).await;
    let (status, listed) = call(&s, Method::GET, &format!("{base}/{upload}?key=k"), None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let sizes: Vec<(u64, u64)> = listed
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| (p["PartNumber"].as_u64().unwrap_or(0), p["Size"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(sizes, [(1, (8 * MIB) as u64), (2, (MIB + 123) as u64)]);
    assert!(listed[0]["ETag"].as_str().is_some_and(|e| !e.is_empty()), "{listed}");
    for _ in 0..2 {
        // A retry of the completion answers the same.
        let (status, done) = call(&s, Method::POST, &format!("{base}/{upload}/complete"), Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert_eq!(done["videoId"], json!(id));
        assert!(done["location"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("/v1/videos/{id}"))));
    }
    let (url, _) = sign(&s, &endpoint, &second, 1).await;
    put(&s, &url, &[0u8; 8 * MIB]).await;
    let (status, err) = call(&s, Method::POST, &format!("{base}/{second}/complete"), Some(json!({}))).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "UPLOAD_COMPLETED"),
        "{err}"
    );
    let types = history(&s, &id).await;
    assert_eq!(types.iter().filter(|t| *t == "SourceUploaded").count(), 1, "{types:?}");
    let dest = s.dir.path().join("fetched");
    let key = format!("sources/{id}/source.mp4");
    assert_eq!(s.objects.fetch(&key, &dest, None).await.expect("fetched"), size as u64);
    assert!(
        std::fs::read(&dest).expect("read") == bytes,
        "the source is byte for byte"
    );

    // Done is done: no more parts, no new upload, no abort.
    let (status, err) = call(&s, Method::GET, &format!("{base}/{upload}/1"), None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "UPLOAD_COMPLETED"),
        "{err}"
    );
    let (status, err) = call(&s, Method::POST, &base, Some(json!({}))).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "UPLOAD_COMPLETED"),
        "{err}"
    );
    let (status, err) = call(&s, Method::DELETE, &format!("{base}/{upload}"), None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "UPLOAD_COMPLETED"),
        "{err}"
    );
    s.stop().await;
}

#[cfg(feature = "distributed")]
#[tokio::test]
async fn an_aborted_upload_is_gone_and_a_deleted_video_takes_none() {
    let (s, _) = crate::harness::server_on_s3().await;
    let registered = register(&s, "aborted", 10).await;
    let id = registered["video_id"].as_str().expect("id").to_owned();
    let endpoint = registered["multipart"]["endpoint"]
        .as_str()
        .expect("endpoint")
        .to_owned();
    let base = format!("{endpoint}/s3/multipart");
    let (_, created) = call(&s, Method::POST, &base, Some(json!({}))).await;
    let upload = created["uploadId"].as_str().expect("uploadId").to_owned();
    let (status, _) = call(&s, Method::DELETE, &format!("{base}/{upload}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = call(&s, Method::GET, &format!("{base}/{upload}"), None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "UPLOAD_NOT_FOUND"),
        "{err}"
    );

    let (_, created) = call(&s, Method::POST, &base, Some(json!({}))).await;
    let upload = created["uploadId"].as_str().expect("uploadId").to_owned();
    let (url, _) = sign(&s, &endpoint, &upload, 1).await;
    put(&s, &url, &[7u8; 10]).await;
    let (status, body) = s
        .send(s.req(Method::DELETE, &format!("/v1/videos/{id}"), &token("alice", "creator")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, err) = call(&s, Method::POST, &format!("{base}/{upload}/complete"), Some(json!({}))).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"),
        "{err}"
    );
    let (status, err) = call(&s, Method::POST, &base, Some(json!({}))).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"),
        "{err}"
    );
    assert!(!history(&s, &id).await.iter().any(|t| t == "SourceUploaded"));
    s.stop().await;
}

#[cfg(feature = "distributed")]
#[tokio::test]
async fn an_abandoned_direct_upload_is_swept_with_its_parts() {
    use vodsource_commands::ports::StoreError;
    let (s, _) = crate::harness::server_on_s3_with(|_| {
        let mut settings = crate::harness::settings();
        settings.upload_expiry = std::time::Duration::from_secs(2);
        settings
    })
    .await;
    let registered = register(&s, "abandoned", 10).await;
    let id = registered["video_id"].as_str().expect("id").to_owned();
    let endpoint = registered["multipart"]["endpoint"]
        .as_str()
        .expect("endpoint")
        .to_owned();
    let (_, created) = call(&s, Method::POST, &format!("{endpoint}/s3/multipart"), Some(json!({}))).await;
    let upload = created["uploadId"].as_str().expect("uploadId").to_owned();
    let (url, _) = sign(&s, &endpoint, &upload, 1).await;
    put(&s, &url, &[7u8; 10]).await;
    let state = format!("uploads/{upload}/manifest.json");
    let manifest: Value = serde_json::from_slice(
        &s.objects
            .read(&state, 1 << 20)
            .await
            .expect("read")
            .expect("the upload's state"),
    )
    .expect("json");
    let multipart = manifest["multipart"].as_str().expect("multipart id").to_owned();
    let key = format!("sources/{id}/source.mp4");
    assert_eq!(s.objects.list_parts(&key, &multipart).await.expect("parts").len(), 1);

    // Nobody calls again: the sweeper aborts the parts and forgets the upload.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let state_gone = s.objects.head(&state).await.expect("head").is_none();
        let parts_gone = matches!(
            s.objects.list_parts(&key, &multipart).await,
            Err(StoreError::NotFound(_))
        );
        if state_gone && parts_gone {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned upload was never swept (state gone: {state_gone}, parts gone: {parts_gone})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.stop().await;
}
