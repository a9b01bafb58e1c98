//! Resumable uploads over tus 1.0 (`/v1/uploads`), request by request: discovery, creation
//! (with its first bytes), offsets, mismatches, checksums, termination, expiry, and the
//! source recorded once when the last byte arrives; on the folder store and on S3's
//! multipart uploads (the emulator). Published tus clients drive it in `api/tests/tus_clients.rs`.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::harness::{code, parts, server, server_with, settings, token, Server};

const TUS: &str = "1.0.0";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Creates an upload of `id`'s source as `owner`, sending `first` with it; returns its path.
async fn create(s: &Server, owner: &str, id: &str, length: u64, first: &[u8]) -> String {
    let mut request = s
        .req(Method::POST, "/v1/uploads", &token(owner, "creator"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Length", length.to_string())
        .header(
            "Upload-Metadata",
            format!("filename {},video_id {}", b64("clip.mp4"), b64(id)),
        );
    if !first.is_empty() {
        request = request
            .header("Content-Type", "application/offset+octet-stream")
            .body(first.to_vec());
    }
    let response = request.send().await.expect("create");
    assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
    assert_eq!(header(&response, "Tus-Resumable"), TUS);
    assert_eq!(header(&response, "Upload-Offset"), first.len().to_string());
    assert!(!header(&response, "Upload-Expires").is_empty());
    let location = header(&response, "Location");
    assert!(location.starts_with("/v1/uploads/"), "{location}");
    location
}

async fn offset(s: &Server, owner: &str, path: &str) -> u64 {
    let response = s
        .req(Method::HEAD, path, &token(owner, "creator"))
        .header("Tus-Resumable", TUS)
        .send()
        .await
        .expect("head");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "Cache-Control"), "no-store");
    header(&response, "Upload-Offset").parse().expect("Upload-Offset")
}

async fn patch(
    s: &Server,
    owner: &str,
    path: &str,
    at: u64,
    bytes: &[u8],
    checksum: Option<String>,
) -> reqwest::Response {
    let mut request = s
        .req(Method::PATCH, path, &token(owner, "creator"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Offset", at.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(bytes.to_vec());
    if let Some(checksum) = checksum {
        request = request.header("Upload-Checksum", checksum);
    }
    request.send().await.expect("patch")
}

/// The types of `id`'s events.
pub(crate) async fn history(s: &Server, id: &str) -> Vec<String> {
    let (status, body) = s
        .send(s.req(Method::GET, &format!("/v1/history/{id}"), &token("alice", "creator")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The types of `id`'s events once `kind` is among them: the supervisor answers
/// `SourceUploaded` with `EncodingRequested` a moment after the upload completes.
pub(crate) async fn history_with(s: &Server, id: &str, kind: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let types = history(s, id).await;
        if types.iter().any(|t| t == kind) {
            return types;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} within 10 s: {types:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn count(types: &[String], name: &str) -> usize {
    types.iter().filter(|t| *t == name).count()
}

/// A source of `len` bytes that no two offsets share a pattern of.
fn source(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The protocol on one server: `chunks` are the PATCH sizes after a 5-byte creation.
async fn upload_in_chunks(s: &Server, len: usize, chunks: &[usize]) {
    let bytes = source(len);
    let (id, _) = s.register("alice", "resumable", len as u64).await;
    let alice = token("alice", "creator");

    // Discovery.
    let options = s
        .client
        .request(Method::OPTIONS, s.url("/v1/uploads"))
        .send()
        .await
        .expect("options");
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&options, "Tus-Version"), TUS);
    assert!(header(&options, "Tus-Extension").contains("creation-with-upload"));
    assert!(header(&options, "Tus-Checksum-Algorithm").contains("sha256"));

    // Another version, another size, another owner's video: refused, naming why.
    let base = || {
        s.req(Method::POST, "/v1/uploads", &alice)
            .header("Upload-Metadata", format!("video_id {}", b64(&id)))
    };
    let wrong_version = base()
        .header("Tus-Resumable", "0.2.2")
        .header("Upload-Length", len.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(wrong_version.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&wrong_version, "Tus-Version"), TUS);
    let (status, err) = parts(
        base()
            .header("Tus-Resumable", TUS)
            .header("Upload-Length", (len + 1).to_string())
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "SIZE_MISMATCH")
    );
    let (status, err) = parts(
        s.req(Method::POST, "/v1/uploads", &token("bob", "creator"))
            .header("Tus-Resumable", TUS)
            .header("Upload-Length", len.to_string())
            .header("Upload-Metadata", format!("video_id {}", b64(&id)))
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"));

    let path = create(s, "alice", &id, len as u64, &bytes[..5]).await;
    assert_eq!(offset(s, "alice", &path).await, 5);
    let bob = s
        .req(Method::HEAD, &path, &token("bob", "creator"))
        .header("Tus-Resumable", TUS)
        .send()
        .await
        .expect("head");
    assert_eq!(
        bob.status(),
        StatusCode::NOT_FOUND,
        "another owner's upload is not there"
    );

    // A PATCH at another offset is refused with the upload's.
    let (status, err) = parts(patch(s, "alice", &path, 3, &bytes[3..9], None).await).await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "OFFSET_MISMATCH"));
    assert_eq!(err["error"]["details"]["offset"], 5);
    // A chunk that fails its checksum is not kept.
    let wrong = format!("sha256 {}", b64(Sha256::digest(b"something else")));
    let (status, err) = parts(patch(s, "alice", &path, 5, &bytes[5..9], Some(wrong)).await).await;
    assert_eq!(status.as_u16(), 460, "{err}");
    assert_eq!(code(&err), "CHECKSUM_MISMATCH");
    assert_eq!(offset(s, "alice", &path).await, 5);

    let mut at = 5;
    for (i, size) in chunks.iter().enumerate() {
        let end = (at + size).min(len);
        let chunk = &bytes[at..end];
        // Every other chunk carries its checksum (CRC-32C, then SHA-256).
        let checksum = match i % 3 {
            0 => Some(format!("sha256 {}", b64(Sha256::digest(chunk)))),
            1 => Some(format!(
                "crc32c {}",
                b64(crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(chunk).to_be_bytes())
            )),
            _ => None,
        };
        if end == len {
            assert_eq!(
                count(&history(s, &id).await, "SourceUploaded"),
                0,
                "not before the last byte"
            );
        }
        let response = patch(s, "alice", &path, at as u64, chunk, checksum).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{:?}", response.text().await);
        assert_eq!(header(&response, "Upload-Offset"), end.to_string());
        at = end;
        assert_eq!(offset(s, "alice", &path).await, at as u64);
    }
    assert_eq!(at, len, "the chunks cover the source");

    // Past the end: refused. At the end, again: nothing changes.
    let (status, _) = parts(patch(s, "alice", &path, len as u64, b"x", None).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let again = patch(s, "alice", &path, len as u64, b"", None).await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);

    let types = history_with(s, &id, "EncodingRequested").await;
    assert_eq!(count(&types, "SourceUploaded"), 1, "{types:?}");
    assert_eq!(count(&types, "EncodingRequested"), 1, "{types:?}");
    let dest = s.dir.path().join("fetched");
    let key = format!("sources/{id}/source.mp4");
    s.objects.fetch(&key, &dest, None).await.expect("the source is stored");
    assert_eq!(std::fs::read(&dest).expect("fetched"), bytes, "byte for byte");
    assert!(s
        .objects
        .read(
            &format!("uploads/{}/manifest.json", &path["/v1/uploads/".len()..]),
            1 << 20
        )
        .await
        .expect("read")
        .is_some());

    // The video's source is recorded: no second upload of it.
    let (status, err) = parts(
        base()
            .header("Tus-Resumable", TUS)
            .header("Upload-Length", len.to_string())
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "UPLOAD_COMPLETED"));
}

#[tokio::test]
async fn a_tus_upload_in_chunks_records_the_source_once_with_its_bytes() {
    let s = server().await;
    upload_in_chunks(&s, 64 * 1024, &[10_000, 20_000, 1, 40_000]).await;
    s.stop().await;
}

#[cfg(feature = "distributed")]
#[tokio::test]
async fn on_s3_chunks_become_parts_of_one_multipart_upload_through_a_tail() {
    let (s, _) = crate::harness::server_on_s3().await;
    // Parts are 8 MiB: 3 MiB requests leave tails that the next request's bytes complete.
    let mib = 1024 * 1024;
    upload_in_chunks(&s, 9 * mib + 123, &[3 * mib, 3 * mib, 3 * mib, mib]).await;
    s.stop().await;
}

#[tokio::test]
async fn the_first_upload_to_finish_wins_and_a_second_is_refused() {
    let s = server().await;
    let (id, _) = s.register("alice", "two uploads", 10).await;
    let first = create(&s, "alice", &id, 10, &[]).await;
    let second = create(&s, "alice", &id, 10, &[]).await;
    let done = patch(&s, "alice", &first, 0, &[1u8; 10], None).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let (status, err) = parts(patch(&s, "alice", &second, 0, &[2u8; 10], None).await).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "UPLOAD_COMPLETED"),
        "{err}"
    );
    let stored = s.dir.path().join("objects/sources").join(&id).join("source.mp4");
    assert_eq!(
        std::fs::read(stored).expect("the source"),
        [1u8; 10],
        "the first upload's bytes stay"
    );
    s.stop().await;
}

#[tokio::test]
async fn termination_removes_an_upload_and_an_idle_upload_expires() {
    let mut settings = settings();
    settings.upload_expiry = Duration::from_secs(2);
    let s = server_with(settings).await;
    let alice = token("alice", "creator");
    let (id, _) = s.register("alice", "terminated", 100).await;
    let path = create(&s, "alice", &id, 100, &[1u8; 10]).await;
    let upload = path["/v1/uploads/".len()..].to_owned();
    let gone = s
        .req(Method::DELETE, &path, &alice)
        .header("Tus-Resumable", TUS)
        .send()
        .await
        .expect("delete");
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let (status, err) = parts(
        s.req(Method::HEAD, &path, &alice)
            .header("Tus-Resumable", TUS)
            .send()
            .await
            .expect("head"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert!(
        !s.dir.path().join("objects/uploads").join(&upload).exists(),
        "its state is gone"
    );

    // The video deleted mid-upload: the upload is refused and its parts go.
    let (doomed, _) = s.register("alice", "deleted mid-upload", 100).await;
    let path = create(&s, "alice", &doomed, 100, &[1u8; 10]).await;
    let deleted = s
        .req(Method::DELETE, &format!("/v1/videos/{doomed}"), &alice)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::OK);
    let (status, err) = parts(patch(&s, "alice", &path, 10, &[2u8; 5], None).await).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"),
        "{err}"
    );
    let upload = path["/v1/uploads/".len()..].to_owned();
    assert!(!s.dir.path().join("objects/uploads").join(&upload).exists());

    // Asked about past Upload-Expires, an upload is gone for good (410), and so are its parts.
    let path = create(&s, "alice", &id, 100, &[1u8; 10]).await;
    let upload = path["/v1/uploads/".len()..].to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let response = s
            .req(Method::HEAD, &path, &alice)
            .header("Tus-Resumable", TUS)
            .send()
            .await
            .expect("head");
        if response.status() == StatusCode::GONE {
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(tokio::time::Instant::now() < deadline, "the upload never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, err) = parts(patch(&s, "alice", &path, 10, &[2u8; 5], None).await).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "UPLOAD_NOT_FOUND"),
        "{err}"
    );
    assert!(!s.dir.path().join("objects/uploads").join(&upload).exists());
    let multipart = s.dir.path().join("objects/.multipart");
    let parts_left = || std::fs::read_dir(&multipart).expect("folder").count();
    assert_eq!(parts_left(), 0, "no parts are left behind");

    // An upload nobody asks about again is swept: its parts and its state go by themselves.
    let path = create(&s, "alice", &id, 100, &[1u8; 10]).await;
    let upload = s.dir.path().join("objects/uploads").join(&path["/v1/uploads/".len()..]);
    assert!(upload.exists() && parts_left() == 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while upload.exists() || parts_left() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned upload was never swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}
