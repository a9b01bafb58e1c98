//! What an attacker tries, and what must hold: tokens that leave out claims, pages on other
//! sites calling a server without authentication, reused upload links, one token used as
//! another kind, slow clients, too many live streams, and what the server tells strangers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{code, exp, server_with, settings, token, token_with, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_issuer_and_audience_are_required_and_nbf_and_lifetime_are_checked() {
    let mut config = settings();
    config.auth.issuer = Some("https://id.example".into());
    config.auth.audience = Some("vodsource".into());
    config.auth.max_lifetime = Some(Duration::from_secs(3600));
    let s = server_with(config).await;
    let now = chrono::Utc::now().timestamp();
    let claims = |extra: serde_json::Value| {
        let mut claims = json!({"sub": "a", "role": "admin", "iss": "https://id.example", "aud": "vodsource", "iat": now, "exp": exp(600)});
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        token_with(claims, SECRET)
    };
    let good = claims(json!({}));
    let (status, body) = s.send(s.req(Method::GET, "/v1/admin/projections", &good)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (what, refused) in [
        ("no iss", claims(json!({"iss": null}))),
        ("no aud", claims(json!({"aud": null}))),
        ("not valid before an hour from now", claims(json!({"nbf": now + 3600}))),
        ("no iat, with a maximum lifetime", claims(json!({"iat": null}))),
        (
            "a lifetime of two hours",
            claims(json!({"iat": now, "exp": now + 7200})),
        ),
        (
            "issued in the future",
            claims(json!({"iat": now + 3600, "exp": now + 4000})),
        ),
    ] {
        let (status, err) = s.send(s.req(Method::GET, "/v1/admin/projections", &refused)).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "{what}: {err}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_hs256_secret_is_refused_at_start_up() {
    let mut config = settings();
    config.auth.hs256_secret = Some("only-twenty-bytes-xx".into());
    let dir = crate::harness::TempDir::new();
    let (stores, objects) = crate::harness::stores_in(&dir, None).await;
    let refused = vodsource_api::runtime::start(stores, objects, config, vodsource_api::runtime::Roles::SERVE).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("is 20 bytes; HS256 needs at least 32"), "{message}");
}

/// One raw HTTP/1.1 exchange with headers of our choosing (a browser's, an attacker's).
fn exchange(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_foreign_hosts_and_cross_site_changes_are_refused() {
    let mut config = settings();
    config.auth.hs256_secret = None;
    let s = server_with(config).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let body = r#"{"title":"t","filename":"a.mp4","content_type":"video/mp4","size_bytes":5}"#;
    let post = |host: &str, extra: &str| {
        format!(
            "POST /v1/videos HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // DNS rebinding: the attacker's name, resolved to 127.0.0.1.
    let rebound = exchange(
        &addr,
        "GET /v1/videos HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n",
    );
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    assert!(rebound.contains("HOST_NOT_ALLOWED"), "{rebound}");
    // A form on another site posting here (a "simple" request: no preflight).
    for origin in ["https://evil.example", "http://localhost:3000", "null"] {
        let forged = exchange(&addr, &post(&addr, &format!("Origin: {origin}\r\n")));
        assert!(
            forged.starts_with("HTTP/1.1 403") && forged.contains("CROSS_ORIGIN_REFUSED"),
            "{origin}: {forged}"
        );
    }
    let forged = exchange(&addr, &post(&addr, "Sec-Fetch-Site: cross-site\r\n"));
    assert!(forged.contains("CROSS_ORIGIN_REFUSED"), "{forged}");
    let admin = exchange(
        &addr,
        &format!("POST /v1/admin/projections/catalog/rebuild HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert!(admin.contains("CROSS_ORIGIN_REFUSED"), "{admin}");
    // The server's own page, and tools that send no Origin, still work.
    let own = exchange(
        &addr,
        &post(
            &addr,
            &format!("Origin: http://{addr}\r\nSec-Fetch-Site: same-origin\r\n"),
        ),
    );
    assert!(own.starts_with("HTTP/1.1 201"), "{own}");
    let local = exchange(
        &addr,
        &post(&format!("localhost:{}", addr.rsplit(':').next().unwrap_or("")), ""),
    );
    assert!(local.starts_with("HTTP/1.1 201"), "{local}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_link_works_once_and_never_harms_a_good_source() {
    let s = crate::harness::server().await;
    let alice = token("alice", "creator");
    let good = b"0123456789".to_vec();
    let (id, url) = s.register("alice", "once", good.len() as u64).await;
    let stored = s.dir.path().join(format!("objects/sources/{id}/source.mp4"));

    // Two PUTs at once with one link: the second is refused while the first runs.
    let addr = s.base.trim_start_matches("http://").to_owned();
    let path = url.split_once(&addr).expect("a link to this server").1.to_owned();
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    slow.write_all(
        format!("PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123")
            .as_bytes(),
    )
    .expect("first part");
    // It is being written once its temporary file exists.
    let incoming = s.dir.path().join("objects/.incoming");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&incoming).map_or(0, Iterator::count) == 0 {
        assert!(Instant::now() < deadline, "the slow upload never began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = s.client.put(&url).body(good.clone()).send().await.expect("second put");
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let (_, err) = crate::harness::parts(second).await;
    assert_eq!(code(&err), "UPLOAD_IN_PROGRESS");
    slow.write_all(b"456789").expect("rest");
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(std::fs::read(&stored).expect("stored"), good, "exactly one whole file");

    // A short body (declared whole, cut off) fails and leaves the good source in place.
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    tx.unbounded_send(Ok(b"xx".to_vec())).expect("part");
    drop(tx);
    let short = s
        .client
        .put(&url)
        .body(reqwest::Body::wrap_stream(rx))
        .send()
        .await
        .expect("short put");
    assert_eq!(short.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (_, err) = crate::harness::parts(short).await;
    assert_eq!(code(&err), "SIZE_MISMATCH");
    let declared_short = s.client.put(&url).body(b"abc".to_vec()).send().await.expect("put");
    assert_eq!(declared_short.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        std::fs::read(&stored).expect("stored"),
        good,
        "a failed PUT never removes a good source"
    );

    // Once the source is recorded, the link is spent.
    let (status, body) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/upload-complete"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let again = s
        .client
        .put(&url)
        .body(b"9876543210".to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let (_, err) = crate::harness::parts(again).await;
    assert_eq!(code(&err), "UPLOAD_COMPLETED");
    assert_eq!(std::fs::read(&stored).expect("stored"), good);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_token_is_no_media_token() {
    let s = crate::harness::server().await;
    let alice = token("alice", "creator");
    // One video's own upload link, kept after it is played: its token names the video.
    let bytes = b"ten bytes!".to_vec();
    let (id, upload) = s.register("alice", "two kinds", bytes.len() as u64).await;
    assert_eq!(
        s.client.put(&upload).body(bytes).send().await.expect("put").status(),
        StatusCode::OK
    );
    let (status, _) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/upload-complete"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.encode(&id).await;
    let (status, _) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{id}/publish"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.until_catalog(&id, "published", |v| v["published"] == true).await;
    let (status, playback) = s
        .send(s.req(Method::GET, &format!("/v1/videos/{id}/playback"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK, "{playback}");
    let hls = playback["hls_url"].as_str().expect("hls");
    let media_token = hls.split('/').nth(4).expect("token in the path");
    let upload_token = upload.rsplit('/').next().expect("token");
    let (status, _) = crate::harness::parts(s.client.get(hls).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::OK, "the media token works");
    let forged = hls.replace(media_token, upload_token);
    let (status, err) = crate::harness::parts(s.client.get(&forged).send().await.expect("get")).await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_are_capped_per_caller_and_in_all() {
    let mut config = settings();
    config.limits.streams_per_principal = 2;
    config.limits.streams_total = 3;
    let s = server_with(config).await;
    let (id, _) = s.register("alice", "watched", 10).await;
    let (other, _) = s.register("bob", "watched too", 10).await;
    let open = |who: &str, video: &str| {
        s.req(
            Method::GET,
            &format!("/v1/videos/{video}/events"),
            &token(who, "creator"),
        )
        .send()
    };
    let a1 = open("alice", &id).await.expect("sse");
    let a2 = open("alice", &id).await.expect("sse");
    assert_eq!((a1.status(), a2.status()), (StatusCode::OK, StatusCode::OK));
    let refused = open("alice", &id).await.expect("sse");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().get("retry-after").is_some());
    let (_, err) = crate::harness::parts(refused).await;
    assert_eq!(code(&err), "TOO_MANY_STREAMS");
    let b1 = open("bob", &other).await.expect("sse");
    assert_eq!(b1.status(), StatusCode::OK);
    let full = open("bob", &other).await.expect("sse");
    assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS, "the server's cap");
    // A client that goes away frees its slot.
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = open("bob", &other).await.expect("sse");
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((a2, b1));
    s.stop().await;
}

/// Whether the server closed `stream` (EOF or reset) before `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + within;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&answer).into_owned()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                // Keep trickling, as a slowloris does: a byte every 100 ms.
                if stream.write_all(b"x").is_err() {
                    return Some(String::from_utf8_lossy(&answer).into_owned());
                }
            }
            Err(_) => return Some(String::from_utf8_lossy(&answer).into_owned()),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_a_byte_at_a_time_is_cut_off() {
    let mut config = settings();
    config.limits.header_timeout = Duration::from_secs(1);
    config.limits.body_timeout = Duration::from_secs(1);
    let s = server_with(config).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    // Headers that never end.
    let mut head = TcpStream::connect(&addr).expect("connect");
    head.write_all(b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .expect("write");
    let started = Instant::now();
    let closed = closed_within(&mut head, Duration::from_secs(15));
    assert!(closed.is_some(), "a head trickling in for 15 s kept its connection");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        started.elapsed()
    );
    // A body that never ends.
    let mut body = TcpStream::connect(&addr).expect("connect");
    body.write_all(
        format!(
            "POST /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
            token("alice", "creator")
        )
        .as_bytes(),
    )
    .expect("write");
    let started = Instant::now();
    let answer =
        closed_within(&mut body, Duration::from_secs(15)).expect("a body trickling in for 15 s kept its connection");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        started.elapsed()
    );
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    // Everyone else is served meanwhile.
    let (status, _) = s.send(s.client.get(s.url("/v1/health/live"))).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_forbids_framing_sniffing_and_foreign_scripts() {
    let s = crate::harness::server().await;
    let page = s.client.get(s.url("/")).send().await.expect("page");
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = header("content-security-policy");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("x-frame-options"), "DENY");
    let api = s.client.get(s.url("/v1/health/live")).send().await.expect("api");
    assert_eq!(
        api.headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_address_need_no_token() {
    let mut config = settings();
    config.metrics_listen = Some("127.0.0.1:0".into());
    let s = server_with(config).await;
    let addr = s
        .running
        .as_ref()
        .and_then(|r| r.endpoints().metrics_addr)
        .expect("metrics address");
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.expect("text").contains("vodsource_event_log_head"));
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    let api = reqwest::get(format!("http://{addr}/v1/videos")).await.expect("api");
    assert_eq!(api.status(), StatusCode::NOT_FOUND, "only metrics and probes there");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_reasons_shown_to_owners_carry_no_server_paths() {
    let s = crate::harness::server().await;
    let id = s.uploaded("alice", "fails").await;
    let attempt = s.requested_attempt(&id).await;
    let commands = s.stores.commands();
    let ctx = vodsource_commands::CommandContext::actor("test-encoder");
    for command in [
        vodsource_domain::VideoCommand::ClaimEncoding {
            worker_id: "w".into(),
            attempt,
            lease_secs: 60,
        },
        vodsource_domain::VideoCommand::FailEncoding {
            worker_id: "w".into(),
            attempt,
            reason: "cannot open /var/lib/vodsource/work/abc-1-w/out/360p/init.mp4: disk full".into(),
            retryable: false,
        },
    ] {
        commands.execute(&id, command, &ctx).await.expect("command");
    }
    let status = s.until_status(&format!("/v1/videos/{id}/status"), StatusCode::OK).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = status;
    while status["last_error"].is_null() {
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = s.until_status(&format!("/v1/videos/{id}/status"), StatusCode::OK).await;
    }
    assert_eq!(status["last_error"], "cannot open init.mp4: disk full");
    s.stop().await;
}

/// A condition that is not text is refused, not dropped: poem reads a header value that is not
/// visible ASCII as absent, which made `If-Match: ×ø` an unconditional write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_that_is_not_text_is_refused_not_ignored() {
    let s = crate::harness::server().await;
    let id = s.uploaded("alice", "conditional").await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut request = format!(
        "POST /v1/videos/{id}/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\nIf-Match: ",
        token("alice", "creator")
    )
    .into_bytes();
    request.extend_from_slice(&[0xd7, 0xf8, 0x9b]);
    request.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(&request).expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("VALIDATION_FAILED") && response.contains("if-match"),
        "{response}"
    );
    s.stop().await;
}

/// The document's lengths are the raw text's: a tag of 41 characters is refused even when
/// trimming would shorten it (the schema cannot trim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_as_long_as_the_document_says() {
    let s = crate::harness::server().await;
    let mut body = crate::harness::register_body("tagged", 10);
    body["tags"] = json!([format!(" {}", "x".repeat(40))]);
    let (status, err) = s
        .send(
            s.req(Method::POST, "/v1/videos", &token("alice", "creator"))
                .json(&body),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
        "{err}"
    );
    body["tags"] = json!(["x".repeat(40)]);
    let (status, err) = s
        .send(
            s.req(Method::POST, "/v1/videos", &token("alice", "creator"))
                .json(&body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{err}");
    s.stop().await;
}
