//! Health, metrics and the admin endpoints, rebuild included.

use reqwest::{Method, StatusCode};

use crate::harness::{code, server, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let s = server().await;
    let (status, live) = s.send(s.client.get(s.url("/v1/health/live"))).await;
    assert_eq!((status, live["status"].as_str()), (StatusCode::OK, Some("live")));
    // Anyone may ask whether the server is ready; only names and states are told.
    let (status, ready) = s.send(s.client.get(s.url("/v1/health/ready"))).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let names: Vec<_> = ready["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                c["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("event_store", "up"), ("view_store", "up"), ("object_store", "up")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let store_path = s.dir.path().display().to_string();
    assert!(
        !ready.to_string().contains(&store_path),
        "no paths for strangers: {ready}"
    );
    assert!(ready["checks"][0]["target"].is_null());
    for probe in ["/livez", "/healthz", "/readyz"] {
        let response = s.client.get(s.url(probe)).send().await.expect("probe");
        assert_eq!(response.status(), StatusCode::OK, "{probe}");
        assert!(!response.text().await.expect("text").contains(&store_path), "{probe}");
    }
    // An admin gets where each dependency is.
    let (_, detailed) = s
        .send(s.req(Method::GET, "/v1/health/ready", &token("root", "admin")))
        .await;
    assert!(
        detailed["checks"][0]["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("sqlite://")),
        "{detailed}"
    );
    // Metrics are for admins on the API's address.
    let (status, _) = s.send(s.client.get(s.url("/metrics"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s.send(s.req(Method::GET, "/metrics", &token("alice", "creator"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s.send(s.client.get(s.url("/v1/metrics"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the old public path is gone");
    let id = s.uploaded("alice", "measured").await;
    let _ = s.until_catalog(&id, "queued", |v| v["status"] == "queued").await;
    let (status, _) = s
        .send(s.req(Method::GET, "/v1/videos/nope", &token("a", "admin")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let metrics = s
        .req(Method::GET, "/metrics", &token("root", "admin"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "vodsource_http_request_duration_seconds_count{method=\"POST\",operation=\"registerVideo\",status=\"201\"} 1",
        "vodsource_http_request_duration_seconds_count{method=\"GET\",operation=\"getVideo\",status=\"404\"}",
        "vodsource_http_request_duration_seconds_count{method=\"PUT\",operation=\"upload\",status=\"200\"} 1",
        "vodsource_command_duration_seconds_count{command=\"register\"} 1",
        "vodsource_projection_lag_events{projection=\"catalog\"}",
        "vodsource_event_log_head 3",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    // Once the objects folder is gone, readiness says which dependency is down; why, to
    // admins only.
    std::fs::remove_dir_all(s.dir.path().join("objects")).expect("remove");
    let (status, ready) = s.send(s.client.get(s.url("/v1/health/ready"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"][2]["state"], "down");
    assert!(ready["checks"][2]["error"].is_null(), "{ready}");
    let (status, ready) = s
        .send(s.req(Method::GET, "/v1/health/ready", &token("root", "admin")))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready["checks"][2]["error"].is_string());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_projections_and_rebuild_them_in_process() {
    let s = server().await;
    let root = token("root", "admin");
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(s.uploaded("alice", &format!("v{i}")).await);
    }
    let last = ids.last().cloned().unwrap_or_default();
    s.until_catalog(&last, "queued", |v| v["status"] == "queued").await;
    let (_, before) = s.send(s.req(Method::GET, "/v1/videos?limit=100", &root)).await;

    let (status, err) = s
        .send(s.req(Method::GET, "/v1/admin/projections", &token("alice", "creator")))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, state) = s.send(s.req(Method::GET, "/v1/admin/projections", &root)).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = state["projections"]
        .as_array()
        .expect("projections")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(names, ["catalog", "status", "dead_letters"]);
    assert_eq!(state["projections"][0]["state"], "running");

    let (status, started) = s
        .send(s.req(Method::POST, "/v1/admin/projections/catalog/rebuild", &root))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert!(started["rebuild"]["started_at"].is_string());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let done = loop {
        let (_, state) = s.send(s.req(Method::GET, "/v1/admin/projections", &root)).await;
        let catalog = state["projections"][0].clone();
        if catalog["rebuild"]["finished_at"].is_string() && catalog["state"] == "running" {
            break catalog;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rebuild did not finish: {state}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(done["generation"], 2, "a new generation was swapped in");
    assert!(done["rebuild"]["error"].is_null(), "{done}");
    let (_, after) = s.send(s.req(Method::GET, "/v1/videos?limit=100", &root)).await;
    assert_eq!(after, before, "the rebuilt catalog equals the one it replaced");
    // The runner is back: new events reach the rebuilt view.
    let fresh = s.uploaded("alice", "after rebuild").await;
    s.until_catalog(&fresh, "queued after rebuild", |v| v["status"] == "queued")
        .await;

    let (status, err) = s
        .send(s.req(Method::POST, "/v1/admin/projections/nope/rebuild", &root))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "PROJECTION_NOT_FOUND"));
    let (status, err) = s
        .send(s.req(
            Method::POST,
            "/v1/admin/projections/status/rebuild",
            &token("alice", "creator"),
        ))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    s.stop().await;
}
