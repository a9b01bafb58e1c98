//! Idempotency keys, If-Match, rate limits, authentication, the error shape, the document.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{code, exp, register_body, server, server_with, settings, token, token_with, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_first_answer_and_refuses_another_body() {
    let s = server().await;
    let alice = token("alice", "creator");
    let post = |body: serde_json::Value, key: &str| {
        s.req(Method::POST, "/v1/videos", &alice)
            .header("Idempotency-Key", key)
            .json(&body)
    };
    let (first_status, first) = s.send(post(register_body("once", 5), "k-1")).await;
    assert_eq!(first_status, StatusCode::CREATED, "{first}");
    let (again_status, again) = s.send(post(register_body("once", 5), "k-1")).await;
    assert_eq!(again_status, StatusCode::CREATED);
    assert_eq!(again["video_id"], first["video_id"], "the same video, not a second one");
    assert_eq!(s.stores.log.head().await.expect("head"), 1, "one event recorded");
    let (status, err) = s.send(post(register_body("twice", 5), "k-1")).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );
    // Keys are per principal: bob's k-1 is his own.
    let (status, bob) = s
        .send(
            s.req(Method::POST, "/v1/videos", &token("bob", "creator"))
                .header("Idempotency-Key", "k-1")
                .json(&register_body("twice", 5)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(bob["video_id"], first["video_id"]);
    // Errors are remembered too.
    let id = first["video_id"].as_str().expect("id");
    let publish = || {
        s.req(Method::POST, &format!("/v1/videos/{id}/publish"), &alice)
            .header("Idempotency-Key", "p-1")
    };
    let (status, err) = s.send(publish()).await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "INVALID_STATE"));
    let (status, err2) = s.send(publish()).await;
    assert_eq!((status, err2), (StatusCode::CONFLICT, err));
    let (status, err) = s
        .send(
            s.req(Method::POST, "/v1/videos", &alice)
                .header("Idempotency-Key", "x".repeat(300))
                .json(&register_body("long key", 5)),
        )
        .await;
    assert_eq!((status, code(&err)), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_makes_a_write_conditional_on_the_version() {
    let s = server().await;
    let alice = token("alice", "creator");
    let (id, _) = s.register("alice", "versioned", 5).await;
    let video = s.until_catalog(&id, "registered", |_| true).await;
    assert_eq!(video["version"], 1);
    let response = s
        .req(Method::GET, &format!("/v1/videos/{id}"), &alice)
        .send()
        .await
        .expect("get");
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("etag");
    assert_eq!(etag, "\"1\"");
    let patch = |if_match: &str, title: &str| {
        s.req(Method::PATCH, &format!("/v1/videos/{id}"), &alice)
            .header("If-Match", if_match)
            .json(&json!({ "title": title }))
    };
    let unchanged = s
        .req(Method::GET, &format!("/v1/videos/{id}"), &alice)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("conditional get");
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    let (status, body) = s.send(patch(&etag, "second")).await;
    assert_eq!((status, body["version"].clone()), (StatusCode::OK, json!(2)));
    s.until_catalog(&id, "version 2", |v| v["version"] == 2).await;
    let changed = s
        .req(Method::GET, &format!("/v1/videos/{id}"), &alice)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("conditional get");
    assert_eq!(changed.status(), StatusCode::OK, "a changed video is sent again");
    let (status, err) = s.send(patch("1", "stale")).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED")
    );
    assert_eq!(err["error"]["details"], json!({"expected": 1, "actual": 2}));
    let (status, err) = s.send(patch("yesterday", "bad")).await;
    assert_eq!((status, code(&err)), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    let (status, _) = s.send(patch("2", "third")).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_principal_has_a_token_bucket() {
    let mut settings = settings();
    settings.auth.rate_per_second = 1;
    settings.auth.burst = 3;
    let s = server_with(settings).await;
    let alice = token("alice", "creator");
    for _ in 0..3 {
        let (status, _) = s.send(s.req(Method::GET, "/v1/videos", &alice)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let limited = s.req(Method::GET, "/v1/videos", &alice).send().await.expect("get");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let header = |name: &str| {
        limited
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert!(header("retry-after").is_some_and(|s| (1..=2).contains(&s)));
    assert_eq!(header("x-ratelimit-limit"), Some(3));
    assert_eq!(header("x-ratelimit-remaining"), Some(0));
    assert!(header("x-ratelimit-reset").is_some());
    let (_, err) = crate::harness::parts(limited).await;
    assert_eq!(code(&err), "RATE_LIMITED");
    // Another principal is not limited by alice's requests.
    let (status, _) = s.send(s.req(Method::GET, "/v1/videos", &token("bob", "viewer"))).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified() {
    let s = server().await;
    let cases = [
        (
            "expired",
            token_with(json!({"sub": "a", "role": "admin", "exp": exp(-3600)}), SECRET),
        ),
        (
            "wrong secret",
            token_with(
                json!({"sub": "a", "role": "admin", "exp": exp(60)}),
                "another-secret-0123456789",
            ),
        ),
        ("no role", token_with(json!({"sub": "a", "exp": exp(60)}), SECRET)),
        (
            "unknown role",
            token_with(json!({"sub": "a", "role": "owner", "exp": exp(60)}), SECRET),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, bad) in cases {
        let response = s.req(Method::GET, "/v1/videos", &bad).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let (_, err) = crate::harness::parts(response).await;
        assert_eq!(code(&err), "UNAUTHORIZED", "{what}");
    }
    let (status, err) = s.send(s.client.get(s.url("/v1/videos"))).await;
    assert_eq!((status, code(&err)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    // A token with several roles acts with the highest.
    let multi = token_with(
        json!({"sub": "m", "roles": ["viewer", "admin"], "exp": exp(60)}),
        SECRET,
    );
    let (status, _) = s.send(s.req(Method::GET, "/v1/admin/projections", &multi)).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_may_be_off_only_on_loopback() {
    let mut open = settings();
    open.auth.hs256_secret = None;
    open.listen = "0.0.0.0:0".into();
    let dir = crate::harness::TempDir::new();
    let (stores, objects) = crate::harness::stores_in(&dir, None).await;
    let refused = vodsource_api::runtime::start(stores, objects, open, vodsource_api::runtime::Roles::SERVE).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("only allowed on a loopback address"), "{message}");

    let mut local = settings();
    local.auth.hs256_secret = None;
    let s = server_with(local).await;
    let (status, body) = s
        .send(s.client.post(s.url("/v1/videos")).json(&register_body("anon", 5)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = s.send(s.client.get(s.url("/v1/admin/projections"))).await;
    assert_eq!(status, StatusCode::OK, "the local caller is an admin");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_one_shape_and_the_document_describes_every_operation() {
    let s = server().await;
    let (status, err) = s
        .send(s.req(Method::GET, "/v1/nothing-here", &token("a", "admin")))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    // A 405 says which methods the path has (RFC 9110 15.5.6), on every kind of route.
    for (method, path, allow) in [
        (Method::PUT, "/v1/videos", "GET, POST, HEAD"),
        (Method::POST, "/v1/videos/some-id/status", "GET, HEAD"),
        (Method::PUT, "/v1/videos/some-id", "GET, PATCH, DELETE, HEAD"),
        (Method::GET, "/uploads/some-token", "PUT"),
        (Method::POST, "/metrics", "GET, HEAD"),
    ] {
        let response = s
            .req(method.clone(), path, &token("a", "admin"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let mut got: Vec<String> = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(", ")
            .map(str::to_owned)
            .collect();
        got.sort();
        let mut want: Vec<&str> = allow.split(", ").collect();
        want.sort_unstable();
        assert_eq!(got, want, "Allow of {path}");
        let (_, err) = crate::harness::parts(response).await;
        assert_eq!(code(&err), "METHOD_NOT_ALLOWED");
    }
    let (status, doc) = s.send(s.client.get(s.url("/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let operations: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|p| p.as_object().into_iter().flat_map(|m| m.values()))
        .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
        .collect();
    for expected in [
        "registerVideo",
        "completeUpload",
        "updateVideo",
        "publishVideo",
        "unpublishVideo",
        "retryEncoding",
        "deleteVideo",
        "listVideos",
        "getVideo",
        "getStatus",
        "getHistory",
        "videoEvents",
        "getPlayback",
        "live",
        "ready",
        "listProjections",
        "rebuildProjection",
        "listDeadLetters",
    ] {
        assert!(
            operations.iter().any(|o| o == expected),
            "{expected} missing from {operations:?}"
        );
    }
    let register = &doc["paths"]["/v1/videos"]["post"];
    for status in [
        "201", "400", "401", "403", "409", "413", "415", "422", "429", "500", "503",
    ] {
        assert!(
            register["responses"][status].is_object(),
            "registerVideo documents {status}"
        );
    }
    let get = &doc["paths"]["/v1/videos/{id}"]["get"]["responses"];
    assert!(
        get["404"].is_object() && get["413"].is_null() && get["412"].is_null(),
        "{get}"
    );
    assert!(doc["paths"]["/v1/videos/{id}"]["patch"]["responses"]["412"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"].is_object());
    let docs = s.client.get(s.url("/docs")).send().await.expect("docs");
    assert_eq!(docs.status(), StatusCode::OK);
    let page = docs.text().await.expect("html");
    let served = s
        .client
        .get(s.url("/openapi.json"))
        .send()
        .await
        .expect("document")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("SwaggerUIBundle") && page.contains(&served),
        "Swagger UI shows the served document"
    );
    s.stop().await;
}

/// A test-only Ed25519 key pair; the JWKS holds the public half under kid "k1".
const ED25519_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIOtnkxnwQnJeVIHfbtFePQQ5Y14BjTc4SIyzsw58DaMu
-----END PRIVATE KEY-----
";
const ED25519_PUBLIC_X: &str = "Gnk02_rmgtTZ7Z1J0AIdyj0GP9cDUqzSwtK0_x9C9lA";
/// Another key, not in the JWKS.
const ED25519_STRANGER: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIN21HpEgnTQ4NjCs0WQhg6UeWfsNjHpWKtQQY4/1bOm9
-----END PRIVATE KEY-----
";

fn eddsa_token(private_pem: &str, kid: &str, claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    use base64::Engine as _;
    let body: String = private_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("pem body");
    let key = jsonwebtoken::EncodingKey::from_ed_der(&der);
    jsonwebtoken::encode(&header, &claims, &key).expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_can_be_checked_against_a_jwks_file_with_issuer_and_audience() {
    let dir = crate::harness::TempDir::new();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED25519_PUBLIC_X, "kid": "k1", "alg": "EdDSA", "use": "sig"}]})
            .to_string(),
    )
    .expect("jwks");
    let mut settings = settings();
    settings.auth.hs256_secret = None;
    settings.auth.jwks_file = Some(jwks);
    settings.auth.issuer = Some("https://id.example".into());
    settings.auth.audience = Some("vodsource".into());
    let s = server_with(settings).await;
    let claims =
        |iss: &str, aud: &str| json!({"sub": "ed", "role": "creator", "iss": iss, "aud": aud, "exp": exp(600)});
    let good = eddsa_token(ED25519_PRIVATE, "k1", claims("https://id.example", "vodsource"));
    let (status, body) = s
        .send(
            s.req(Method::POST, "/v1/videos", &good)
                .json(&register_body("signed elsewhere", 5)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let refused = [
        (
            "a key outside the set",
            eddsa_token(ED25519_STRANGER, "k1", claims("https://id.example", "vodsource")),
        ),
        (
            "an unknown kid",
            eddsa_token(ED25519_PRIVATE, "k2", claims("https://id.example", "vodsource")),
        ),
        (
            "another issuer",
            eddsa_token(ED25519_PRIVATE, "k1", claims("https://evil.example", "vodsource")),
        ),
        (
            "another audience",
            eddsa_token(ED25519_PRIVATE, "k1", claims("https://id.example", "other")),
        ),
        ("an HMAC token", token("ed", "admin")),
    ];
    for (what, bad) in refused {
        let (status, err) = s.send(s.req(Method::GET, "/v1/videos", &bad)).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "{what}"
        );
    }
    s.stop().await;
}

/// An event log on which one stream always loses the race: every append to it conflicts, as
/// if another writer got there first each time.
struct Contended {
    inner: std::sync::Arc<dyn vodsource_commands::ports::EventLog>,
    stream: std::sync::Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl vodsource_commands::ports::EventLog for Contended {
    async fn append(
        &self,
        request: vodsource_commands::ports::AppendRequest,
    ) -> Result<vodsource_commands::ports::Appended, vodsource_commands::ports::StoreError> {
        let contended = self
            .stream
            .lock()
            .map(|s| s.as_deref() == Some(request.stream_id.as_str()));
        if contended.unwrap_or(false) {
            let actual = self.inner.read_stream(&request.stream_id, 0, 10_000).await?.len() as u64;
            return Err(vodsource_commands::ports::StoreError::Conflict {
                stream_id: request.stream_id,
                expected: actual,
                actual: actual + 1,
            });
        }
        self.inner.append(request).await
    }
    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<vodsource_commands::ports::RecordedEvent>, vodsource_commands::ports::StoreError> {
        self.inner.read_stream(stream_id, after_version, limit).await
    }
    async fn stream_version_at(
        &self,
        stream_id: &str,
        position: u64,
    ) -> Result<u64, vodsource_commands::ports::StoreError> {
        self.inner.stream_version_at(stream_id, position).await
    }
    async fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<vodsource_commands::ports::RecordedEvent>, vodsource_commands::ports::StoreError> {
        self.inner.read_all(after, limit).await
    }
    async fn head(&self) -> Result<u64, vodsource_commands::ports::StoreError> {
        self.inner.head().await
    }
    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.watch_head()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_keep_losing_the_race_are_a_version_conflict() {
    let dir = crate::harness::TempDir::new();
    let (mut stores, objects) = crate::harness::stores_in(&dir, None).await;
    let contended = std::sync::Arc::new(Contended {
        inner: stores.log.clone(),
        stream: std::sync::Mutex::new(None),
    });
    stores.log = contended.clone();
    let running = vodsource_api::runtime::start(stores, objects, settings(), vodsource_api::runtime::Roles::SERVE)
        .await
        .expect("start");
    let client = reqwest::Client::new();
    let alice = token("alice", "creator");
    let created: serde_json::Value = client
        .post(format!("{}/v1/videos", running.endpoints().public_url))
        .bearer_auth(&alice)
        .json(&register_body("contended", 5))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = created["video_id"].as_str().expect("id").to_owned();
    if let Ok(mut stream) = contended.stream.lock() {
        *stream = Some(id.clone());
    }
    let response = client
        .patch(format!("{}/v1/videos/{id}", running.endpoints().public_url))
        .bearer_auth(&alice)
        .json(&json!({"title": "mine"}))
        .send()
        .await
        .expect("patch");
    let (status, err) = crate::harness::parts(response).await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "VERSION_CONFLICT"));
    running.shutdown().await.expect("shutdown");
}
