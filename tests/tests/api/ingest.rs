//! Sources fetched from a URL named at registration: fetched (resuming a broken download
//! with a range) and encoded; refused, with the reason in the video's status, for every
//! address inside the network — as a literal, through DNS, behind a redirect — unless the
//! allow-list admits it. The origins are real HTTP servers on this machine: 203.0.113.7 (a
//! documentation address `scripts/services.sh start origins` puts on loopback) stands in for
//! a public origin, and /etc/hosts names media.vodsource.test (that address),
//! private.vodsource.test (10.20.30.40) and mixed.vodsource.test (both).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use vodsource_commands::layout;
use vodsource_encoder::WorkerConfig;
use vodsource_tests::clips::pattern;
use vodsource_tests::TempDir;

use crate::harness::{code, server_with, settings, token, Server};
use crate::uploads::{history, history_with};

/// The stand-in public origin's address.
const PUBLIC: &str = "203.0.113.7";
const ETAG: &str = "\"v1\"";

/// What an origin answers on a path.
#[derive(Clone)]
enum Route {
    /// The file, with ranges (`If-Range` on its ETag).
    File(Arc<Vec<u8>>),
    /// A 302 to this location.
    Redirect(String),
    /// An empty answer with this status.
    Status(u16),
}

/// A request an origin saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
    if_range: Option<String>,
}

/// A media origin: HTTP/1.1 on a port of its own, one request per connection.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Requests still to be left unanswered (their connections held open).
    stall: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Serves `routes` on `ip`; the first answer with a file is cut after `cut` bytes of it.
    async fn start(ip: &str, routes: Vec<(&str, Route)>, cut: Option<usize>) -> Self {
        let listener = TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {ip} ({e}): run scripts/services.sh start origins"));
        let addr = listener.local_addr().expect("addr");
        let routes: Arc<HashMap<String, Route>> =
            Arc::new(routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stall = Arc::new(AtomicUsize::new(0));
        let (log, stalls) = (seen.clone(), stall.clone());
        let task = tokio::spawn(async move {
            let mut cut = cut;
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (routes, log, stalls, cut) = (routes.clone(), log.clone(), stalls.clone(), cut.take());
                connections.spawn(async move { answer(stream, &routes, cut, &log, &stalls).await });
            }
        });
        Self {
            addr,
            seen,
            stall,
            task,
        }
    }

    /// Leaves the next `n` requests unanswered.
    fn stall_next(&self, n: usize) {
        self.stall.store(n, Ordering::SeqCst);
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.addr.port())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

/// Reads one request, notes it in `log` and answers it — or holds the connection open
/// without a word while `stall` counts down; `cut`: close after that many bytes of a file.
async fn answer(
    mut stream: TcpStream,
    routes: &HashMap<String, Route>,
    cut: Option<usize>,
    log: &Mutex<Vec<Seen>>,
    stall: &AtomicUsize,
) -> Option<()> {
    let mut head = Vec::new();
    let mut buf = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let seen = Seen {
        path: path.clone(),
        range: headers.get("range").cloned(),
        if_range: headers.get("if-range").cloned(),
    };
    log.lock().expect("log").push(seen.clone());
    if stall
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let mut rest = [0_u8; 1];
        let _ = stream.read(&mut rest).await; // until the client goes away
        return None;
    }
    let (status, extra, body): (&str, String, &[u8]) = match routes.get(&path) {
        Some(Route::File(bytes)) => {
            let from = seen
                .range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|r| r.parse::<usize>().ok())
                .filter(|_| seen.if_range.as_deref().is_none_or(|v| v == ETAG));
            match from {
                Some(from) if from < bytes.len() => (
                    "206 Partial Content",
                    format!("Content-Range: bytes {from}-{}/{}\r\n", bytes.len() - 1, bytes.len()),
                    &bytes[from..],
                ),
                _ => ("200 OK", String::new(), &bytes[..]),
            }
        }
        Some(Route::Redirect(to)) => ("302 Found", format!("Location: {to}\r\n"), &[][..]),
        Some(Route::Status(404)) | None => ("404 Not Found", String::new(), &[][..]),
        Some(Route::Status(_)) => ("503 Service Unavailable", String::new(), &[][..]),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: video/mp4\r\nETag: {ETAG}\r\nAccept-Ranges: bytes\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let sent = cut.map_or(body.len(), |c| c.min(body.len()));
    let _ = stream.write_all(&body[..sent]).await;
    let _ = stream.flush().await;
    Some(())
}

/// Registers a video whose source is at `url` (`size`: declared, if any) as alice.
async fn register(s: &Server, url: &str, size: Option<u64>) -> (StatusCode, Value) {
    let mut body = json!({
        "title": "fetched",
        "filename": "clip.mp4",
        "content_type": "video/mp4",
        "source_url": url,
    });
    if let Some(size) = size {
        body["size_bytes"] = size.into();
    }
    s.send(
        s.req(Method::POST, "/v1/videos", &token("alice", "creator"))
            .json(&body),
    )
    .await
}

/// The video's status once it has left `awaiting_upload` (and `queued`/`encoding` when
/// `until_done`).
async fn settled(s: &Server, id: &str, until_done: bool, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (code, status) = s
            .send(s.req(
                Method::GET,
                &format!("/v1/videos/{id}/status"),
                &token("alice", "creator"),
            ))
            .await;
        // 404 until the status view has the registration.
        assert!(matches!(code, StatusCode::OK | StatusCode::NOT_FOUND), "{status}");
        let stage = status["status"].as_str().unwrap_or("awaiting_upload");
        let waiting = stage == "awaiting_upload"
            || (until_done && matches!(stage, "uploaded" | "queued" | "encoding" | "retrying"));
        if !waiting {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {stage} after {within:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(types: &[String], name: &str) -> usize {
    types.iter().filter(|t| *t == name).count()
}

/// A server that fetches `http` URLs too (and the blocks in `allow`), retrying quickly.
fn ingest_settings(allow: &[&str]) -> vodsource_api::settings::Settings {
    let mut config = settings();
    config.fetch.allow_http = true;
    config.fetch.policy.allow = allow.iter().map(|a| a.parse().expect("cidr")).collect();
    config.ingest.backoff = Duration::from_millis(10);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_at_a_url_is_fetched_resuming_a_broken_download_and_encoded() {
    let scratch = TempDir::new();
    let clip = std::fs::read(pattern(scratch.path(), "clip.mp4", "640x360", 25, 2)).expect("clip");
    let cut = clip.len() / 3;
    let origin = Origin::start(
        PUBLIC,
        vec![("/clip.mp4", Route::File(Arc::new(clip.clone())))],
        Some(cut),
    )
    .await;
    let mut config = ingest_settings(&[]);
    let mut worker = WorkerConfig::new("api-encoder", scratch.path().join("work"));
    worker.progress_every = Duration::from_millis(250);
    config.workers = vec![worker];
    let s = server_with(config).await;

    let (status, created) = register(&s, &origin.url("media.vodsource.test", "/clip.mp4"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["protocols"], json!(["url"]), "{created}");
    assert!(created.get("upload").is_none(), "nothing to upload: {created}");
    let id = created["video_id"].as_str().expect("id").to_owned();

    let status = settled(&s, &id, true, Duration::from_secs(90)).await;
    assert_eq!(status["status"], "ready", "{status}");
    let seen = origin.seen();
    assert_eq!(seen.len(), 2, "one cut download and one resumed: {seen:?}");
    assert_eq!(seen[0].range, None, "{seen:?}");
    assert_eq!(
        seen[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str()),
        "{seen:?}"
    );
    assert_eq!(
        seen[1].if_range.as_deref(),
        Some(ETAG),
        "the same file or nothing: {seen:?}"
    );
    let stored = s
        .objects
        .read(&layout::source_key(&id, "clip.mp4"), 1 << 30)
        .await
        .expect("read")
        .expect("the stored source");
    assert!(stored == clip, "the stored source is the origin's file, byte for byte");
    let types = history_with(&s, &id, "EncodingRequested").await;
    assert_eq!(count(&types, "SourceUploaded"), 1, "{types:?}");
    assert_eq!(count(&types, "EncodingRequested"), 1, "{types:?}");
    // The owner cannot upload over a fetched source.
    let (code_, body) = s
        .send(s.req(
            Method::POST,
            &format!("/v1/videos/{id}/upload-complete"),
            &token("alice", "creator"),
        ))
        .await;
    assert_eq!(
        (code_, code(&body)),
        (StatusCode::CONFLICT, "SOURCE_FROM_URL"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_inside_the_network_are_refused_after_resolution_and_on_redirects() {
    let file = Arc::new(vec![7_u8; 1000]);
    let inside = Origin::start("127.0.0.1", vec![("/clip.mp4", Route::File(file.clone()))], None).await;
    let public = Origin::start(
        PUBLIC,
        vec![
            ("/clip.mp4", Route::File(file.clone())),
            ("/redirect", Route::Redirect(inside.url("127.0.0.1", "/clip.mp4"))),
            ("/busy", Route::Status(503)),
            ("/loop", Route::Redirect("/loop".into())),
        ],
        None,
    )
    .await;
    let s = server_with(ingest_settings(&[])).await;
    let lp = inside.addr.port();
    let cases: Vec<(String, Option<u64>, String)> = vec![
        (
            inside.url("127.0.0.1", "/clip.mp4"),
            None,
            "refused: 127.0.0.1 is a loopback address".into(),
        ),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            None,
            "refused: 169.254.169.254 is the cloud metadata address".into(),
        ),
        (
            public.url("private.vodsource.test", "/clip.mp4"),
            None,
            "refused: private.vodsource.test resolves to 10.20.30.40, a private address".into(),
        ),
        (
            // One address public, one private: the name is refused whole, not filtered.
            public.url("mixed.vodsource.test", "/clip.mp4"),
            None,
            "refused: mixed.vodsource.test resolves to 10.20.30.40, a private address".into(),
        ),
        (
            public.url(PUBLIC, "/redirect"),
            None,
            format!("redirected to 127.0.0.1:{lp}: refused: 127.0.0.1 is a loopback address"),
        ),
        (
            inside.url("[::1]", "/clip.mp4"),
            None,
            "refused: ::1 is a loopback address".into(),
        ),
        (
            inside.url("2130706433", "/clip.mp4"),
            None,
            "refused: 127.0.0.1 is a loopback address".into(),
        ),
        (
            inside.url("localhost", "/clip.mp4"),
            None,
            "refused: localhost resolves to".into(),
        ),
        (
            public.url("media.vodsource.test", "/missing"),
            None,
            "answered 404 Not Found".into(),
        ),
        (
            public.url(PUBLIC, "/clip.mp4"),
            Some(999),
            "the file is 1000 bytes, above the limit of 999".into(),
        ),
        (
            public.url(PUBLIC, "/loop"),
            None,
            format!("{PUBLIC}:{}: more than 5 redirects", public.addr.port()),
        ),
        (
            public.url(PUBLIC, "/busy"),
            None,
            "answered 503 Service Unavailable (after 3 attempts)".into(),
        ),
    ];
    let mut videos = Vec::new();
    for (url, size, _) in &cases {
        let (status, created) = register(&s, url, *size).await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {created}");
        videos.push(created["video_id"].as_str().expect("id").to_owned());
    }
    for ((url, _, reason), id) in cases.iter().zip(&videos) {
        let status = settled(&s, id, false, Duration::from_secs(20)).await;
        assert_eq!(status["status"], "failed", "{url}: {status}");
        let error = status["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(reason.as_str()),
            "{url}: {error:?} does not say {reason:?}"
        );
        assert_eq!(status["last_error_retryable"], false, "{url}: {status}");
        let types = history(&s, id).await;
        assert_eq!(count(&types, "SourceIngestFailed"), 1, "{url}: {types:?}");
        assert_eq!(count(&types, "SourceUploaded"), 0, "{url}: {types:?}");
    }
    assert!(
        inside.seen().is_empty(),
        "nothing reached the loopback origin: {:?}",
        inside.seen()
    );
    let mut paths: Vec<String> = public.seen().into_iter().map(|r| r.path).collect();
    paths.sort();
    let mut expected = vec!["/busy"; 3];
    expected.extend(["/clip.mp4"]);
    expected.extend(["/loop"; 6]);
    expected.extend(["/missing", "/redirect"]);
    assert_eq!(paths, expected);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_cut_short_by_a_restart_is_made_by_the_next_process() {
    let file = Arc::new((0..3000_u32).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
    let origin = Origin::start(PUBLIC, vec![("/clip.mp4", Route::File(file.clone()))], None).await;
    origin.stall_next(1);
    let mut s = server_with(ingest_settings(&[])).await;
    let (status, created) = register(&s, &origin.url(PUBLIC, "/clip.mp4"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["video_id"].as_str().expect("id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while origin.seen().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the fetch never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The process stops with the fetch in flight (its origin silent); the next one starts
    // from the ingest's checkpoint, which is before that registration.
    s.restart(ingest_settings(&[])).await;
    let status = settled(&s, &id, false, Duration::from_secs(20)).await;
    assert_ne!(status["status"], "failed", "{status}");
    assert_eq!(origin.seen().len(), 2, "fetched again by the next process");
    let stored = s
        .objects
        .read(&layout::source_key(&id, "clip.mp4"), 1 << 20)
        .await
        .expect("read");
    assert_eq!(stored.as_deref(), Some(&file[..]));
    assert_eq!(count(&history(&s, &id).await, "SourceUploaded"), 1);
    s.stop().await;
}

#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_fetched_source_streams_into_the_bucket_across_a_broken_connection() {
    // 9 MiB and a bit (under the tests' 10 MiB limit): more than one of the store's 8 MiB
    // parts; the connection breaks at 5 MiB.
    let file: Vec<u8> = (0..(9_u32 << 20) + 123)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let cut = 5 << 20;
    let origin = Origin::start(
        PUBLIC,
        vec![("/big.mp4", Route::File(Arc::new(file.clone())))],
        Some(cut),
    )
    .await;
    let (s, _) = crate::harness::server_on_s3_with(|_| ingest_settings(&[])).await;
    let (status, created) = register(&s, &origin.url(PUBLIC, "/big.mp4"), Some(file.len() as u64)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["video_id"].as_str().expect("id").to_owned();
    let status = settled(&s, &id, false, Duration::from_secs(60)).await;
    assert_ne!(status["status"], "failed", "{status}");
    let seen = origin.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str()),
        "{seen:?}"
    );
    let stored = s
        .objects
        .read(&layout::source_key(&id, "clip.mp4"), 1 << 30)
        .await
        .expect("read")
        .expect("the source in the bucket");
    assert!(stored == file, "the bucket holds the origin's file, byte for byte");
    assert_eq!(count(&history(&s, &id).await, "SourceUploaded"), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ingest_process_at_a_time_holds_the_lease_and_fetches() {
    let file = Arc::new(vec![3_u8; 2000]);
    let paths = ["/a.mp4", "/b.mp4", "/c.mp4", "/d.mp4"];
    let origin = Origin::start(
        PUBLIC,
        paths.iter().map(|p| (*p, Route::File(file.clone()))).collect(),
        None,
    )
    .await;
    let s = server_with(ingest_settings(&[])).await;
    // A second ingest process over the same stores, as another replica would run.
    let mut other = s.stores.clone();
    other.owner = "another-replica".into();
    let fetcher = vodsource_infra::egress::HttpFetcher::new(ingest_settings(&[]).fetch).expect("fetcher");
    let second = other.ingest(s.objects.clone(), Arc::new(fetcher), ingest_settings(&[]).ingest);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(second.run(async move {
        let _ = stopped.await;
    }));
    let mut videos = Vec::new();
    for path in paths {
        let (status, created) = register(&s, &origin.url(PUBLIC, path), None).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        videos.push(created["video_id"].as_str().expect("id").to_owned());
    }
    for id in &videos {
        let status = settled(&s, id, false, Duration::from_secs(20)).await;
        assert_ne!(status["status"], "failed", "{status}");
    }
    let mut seen: Vec<String> = origin.seen().into_iter().map(|r| r.path).collect();
    seen.sort();
    assert_eq!(seen, paths, "each source fetched once, by the lease holder");
    let _ = stop.send(());
    running
        .await
        .expect("joined")
        .expect("the second process stops cleanly");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_https_by_default_and_the_allow_list_admits_an_inside_origin() {
    let s = server_with(settings()).await;
    for (url, expected) in [
        ("http://media.example.com/clip.mp4", "SOURCE_URL_REFUSED"),
        ("ftp://media.example.com/clip.mp4", "SOURCE_URL_REFUSED"),
        ("not a url", "SOURCE_URL_INVALID"),
        ("https://", "SOURCE_URL_INVALID"),
        // A URL parser drops tabs and newlines; they are refused, not dropped.
        ("https://media.example.com/cl\tip.mp4", "SOURCE_URL_INVALID"),
    ] {
        let (status, body) = register(&s, url, None).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, expected),
            "{url}: {body}"
        );
    }
    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/videos", &token("alice", "creator"))
                .json(&json!({"title": "t", "filename": "a.mp4", "content_type": "video/mp4"})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "SIZE_REQUIRED"),
        "{body}"
    );
    // An optional field is absent or a value; null is neither (the document allows no null).
    for field in ["source_url", "description", "tags", "size_bytes"] {
        let mut request = json!({"title": "t", "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 10});
        request[field] = Value::Null;
        let (status, body) = s
            .send(
                s.req(Method::POST, "/v1/videos", &token("alice", "creator"))
                    .json(&request),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: null: {body}");
        assert!(body.to_string().contains("null is not a value here"), "{field}: {body}");
    }
    s.stop().await;

    let file = Arc::new((0..5000_u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let inside = Origin::start("127.0.0.1", vec![("/clip.mp4", Route::File(file.clone()))], None).await;
    let s = server_with(ingest_settings(&["127.0.0.1/32"])).await;
    let (status, created) = register(&s, &inside.url("127.0.0.1", "/clip.mp4"), Some(5000)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["video_id"].as_str().expect("id").to_owned();
    let status = settled(&s, &id, false, Duration::from_secs(20)).await;
    assert_ne!(status["status"], "failed", "{status}");
    let stored = s
        .objects
        .read(&layout::source_key(&id, "clip.mp4"), 1 << 20)
        .await
        .expect("read");
    assert_eq!(stored.as_deref(), Some(&file[..]));
    assert_eq!(inside.seen().len(), 1);
    s.stop().await;
}
