//! Queries: the catalog listing, one video, status and history, and who sees what.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{code, server, token};

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v["video_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_newest_first_with_filters_cursors_and_visibility() {
    catalog_listing(server().await).await;
}

#[cfg(feature = "distributed")]
/// The same on PostgreSQL and DynamoDB: commands, projections, the supervisor and the
/// listing's index partitions and cursors through the distributed stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_listing_on_postgresql_and_dynamodb() {
    let s = crate::harness::server_distributed().await;
    assert!(s.stores.log.describe().starts_with("postgres"));
    catalog_listing(s).await;
}

async fn catalog_listing(s: crate::harness::Server) {
    let mut alice_ids = Vec::new();
    for i in 0..5 {
        let (id, _) = s.register("alice", &format!("alice {i}"), 5).await;
        alice_ids.push(id);
    }
    let (bob_id, _) = s.register("bob", "bob's", 5).await;
    let published = s.uploaded("bob", "bob published").await;
    s.encode(&published).await;
    let bob = token("bob", "creator");
    let (status, accepted) = s
        .send(s.req(Method::POST, &format!("/v1/videos/{published}/publish"), &bob))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.until_catalog(&published, "published", |v| v["published"] == true)
        .await;

    // One document showing the publish does not say the catalog holds every earlier change:
    // a batch's documents are committed side by side on DynamoDB. The listing waits for the
    // publish's position, as a client reading its own writes does.
    let admin = token("root", "admin");
    let position = accepted["position"].as_u64().expect("the publish's position");
    let (status, all) = s
        .send(s.req(
            Method::GET,
            &format!("/v1/videos?limit=100&min_position={position}"),
            &admin,
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut newest_first: Vec<String> = alice_ids.clone();
    newest_first.push(bob_id.clone());
    newest_first.push(published.clone());
    newest_first.reverse();
    assert_eq!(ids(&all), newest_first);

    // Pages of 3 walk the same order without gaps or repeats.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/videos?limit=3&cursor={c}"),
            None => "/v1/videos?limit=3".to_owned(),
        };
        let (status, page) = s.send(s.req(Method::GET, &path, &admin)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        walked.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(walked, newest_first);

    let (_, mine) = s
        .send(s.req(Method::GET, "/v1/videos?owner=alice", &token("alice", "creator")))
        .await;
    assert_eq!(ids(&mine).len(), 5, "alice sees all her own videos");
    let (_, queued) = s
        .send(s.req(Method::GET, "/v1/videos?status=awaiting_upload&owner=bob", &admin))
        .await;
    assert_eq!(ids(&queued), vec![bob_id.clone()]);
    let (_, tagged) = s.send(s.req(Method::GET, "/v1/videos?tag=TEST&limit=2", &admin)).await;
    assert_eq!(ids(&tagged).len(), 2);
    assert!(tagged["next_cursor"].is_string());
    // Viewers, and creators outside their own videos, see published videos only.
    for viewer in [token("carol", "viewer"), token("alice", "creator")] {
        let (_, seen) = s.send(s.req(Method::GET, "/v1/videos", &viewer)).await;
        assert_eq!(ids(&seen), vec![published.clone()]);
        let (_, none) = s.send(s.req(Method::GET, "/v1/videos?published=false", &viewer)).await;
        assert!(ids(&none).is_empty());
    }
    let (status, err) = s.send(s.req(Method::GET, "/v1/videos?limit=101", &admin)).await;
    assert_eq!((status, code(&err)), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    let (status, err) = s.send(s.req(Method::GET, "/v1/videos?cursor=%%%", &admin)).await;
    assert_eq!((status, code(&err)), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    let (status, err) = s.send(s.req(Method::GET, "/v1/videos?status=lost", &admin)).await;
    assert_eq!((status, code(&err)), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_video_its_status_and_history() {
    let s = server().await;
    let id = s.uploaded("alice", "watched").await;
    let completed = s.encode(&id).await;
    let alice = token("alice", "creator");
    let video = s.until_catalog(&id, "ready", |v| v["status"] == "ready").await;
    assert_eq!(
        video["renditions"],
        json!([{"name": "360p", "width": 640, "height": 360, "bitrate_bps": 800000}])
    );
    assert_eq!(video["duration_ms"], 4000);
    // Unpublished: the owner and admins see it, others get 404 (no existence leak).
    for other in [token("carol", "viewer"), token("bob", "creator")] {
        let (status, err) = s.send(s.req(Method::GET, &format!("/v1/videos/{id}"), &other)).await;
        assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"));
        // Another owner's video is not found, exactly as an unknown one is.
        for read in [
            format!("/v1/videos/{id}/status"),
            format!("/v1/history/{id}"),
            format!("/v1/videos/{id}/events"),
        ] {
            let (status, err) = s.send(s.req(Method::GET, &read, &other)).await;
            assert_eq!(
                (status, code(&err)),
                (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"),
                "{read}"
            );
        }
    }
    let (status, body) = s.send(s.req(Method::GET, &format!("/v1/videos/{id}"), &alice)).await;
    assert_eq!((status, body["title"].clone()), (StatusCode::OK, json!("watched")));

    // The status view is its own projection: read it at the completion's position.
    let (status, st) = s
        .send(s.req(
            Method::GET,
            &format!("/v1/videos/{id}/status?min_position={completed}"),
            &alice,
        ))
        .await;
    assert_eq!((status, st["status"].clone()), (StatusCode::OK, json!("ready")), "{st}");
    assert_eq!(st["attempt"], 1);
    assert_eq!(st["renditions"]["360p"], 100.0);

    let (status, first) = s
        .send(s.req(Method::GET, &format!("/v1/history/{id}?limit=2"), &alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = first["events"].as_array().expect("events");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "VideoRegistered");
    assert_eq!(events[0]["data"]["title"], "watched");
    assert_eq!(events[0]["actor"], "alice");
    let next = first["next_after_version"].as_u64().expect("more");
    let (_, rest) = s
        .send(s.req(
            Method::GET,
            &format!("/v1/history/{id}?after_version={next}&limit=1000"),
            &alice,
        ))
        .await;
    let rest = rest["events"].as_array().expect("events");
    assert_eq!(rest[0]["version"], 3);
    assert_eq!(rest.last().map(|e| e["type"].clone()), Some(json!("EncodingCompleted")));
    let (status, err) = s.send(s.req(Method::GET, "/v1/history/missing", &alice)).await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"));
    let (status, err) = s.send(s.req(Method::GET, "/v1/videos/missing", &alice)).await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "VIDEO_NOT_FOUND"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_position_reads_a_command_s_own_write() {
    let s = server().await;
    let alice = token("alice", "creator");
    for i in 0..20 {
        let (status, created) = s
            .send(
                s.req(Method::POST, "/v1/videos", &alice)
                    .json(&crate::harness::register_body(&format!("mine {i}"), 5)),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let id = created["video_id"].as_str().expect("id");
        let position = created["position"].as_u64().expect("position");
        // No polling: the read waits for the view to reach the write.
        let (status, video) = s
            .send(s.req(Method::GET, &format!("/v1/videos/{id}?min_position={position}"), &alice))
            .await;
        assert_eq!(
            (status, video["title"].clone()),
            (StatusCode::OK, json!(format!("mine {i}")))
        );
        let (status, page) = s
            .send(s.req(
                Method::GET,
                &format!("/v1/videos?owner=alice&limit=1&min_position={position}"),
                &alice,
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&page), vec![id.to_owned()]);
    }
    let (status, err) = s
        .send(s.req(Method::GET, "/v1/videos?min_position=1000000", &alice))
        .await;
    // A well-formed position the log has not reached: a conflict with the log's state, not
    // a malformed request (the document cannot know the head).
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "POSITION_AHEAD_OF_LOG"));
    assert_eq!(err["error"]["details"]["field"], "min_position");
    s.stop().await;
}
