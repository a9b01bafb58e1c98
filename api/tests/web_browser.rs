//! The web app end to end in a real browser: `vodsource serve` (embedded; authentication on,
//! and again off) and headless Chromium driven by `web/e2e/play.mjs` (playwright-core): sign in with a
//! token, upload a generated 12 s clip, wait for ready, publish, play for 5 s, seek, play on
//! to a heartbeat, close. Then: the video element went past 4 s; the session's QoE events are
//! in the lake with a startup time and a heartbeat; continue watching has a position > 0 for
//! the viewer, in the API and on the page; resumed from there with the DASH toggle, dash.js
//! starts at the saved position and its session reaches the lake. A screenshot of the player is kept at
//! `$CARGO_TARGET_TMPDIR/web-player.png` (`web-player-no-auth.png` for the run without).
//! A third run (`web/e2e/stall.mjs`) plays a two-rung video on a network shaped through
//! Chromium's DevTools protocol, so that it stalls and moves down the ladder: the lake has the
//! stall with its length and the switch.
//! A fourth run (`web/e2e/resume.mjs`) uploads on a shaped link and reloads the page a third of
//! the way: the bar survives the reload, choosing the same file resumes from the offset the
//! server acknowledged (tus-js-client in the page), and the video encodes.
//! (A video played while it is still encoding: `web_progressive.rs`.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::browser::{drive, sql, start, token};
use common::{clip, ready, until, upload};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_a_creator_uploads_publishes_and_plays_in_chromium_and_the_lake_and_continue_watching_show_it() {
    in_chromium(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_without_authentication_the_same_works_as_the_local_admin() {
    in_chromium(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shaped_network_the_player_switches_rungs_stalls_and_resumes_and_the_lake_has_each() {
    let setup = start(false).await;
    let (data, base, client) = (&setup.server.data, &setup.base, &setup.client);
    // A 480p source gets two rungs (480p, 360p); 40 s so the buffer cannot hold it all.
    let source = data.join("long.mp4");
    clip(&source, 40, "854x480");
    let (id, _) = upload(client, base, "on a train", &source).await;
    ready(client, base, &id, Duration::from_secs(240)).await;
    let published = client
        .post(format!("{base}/v1/videos/{id}/publish"))
        .send()
        .await
        .expect("publish");
    assert!(published.status().is_success(), "publish: {}", published.status());

    let seen = drive(&setup, "stall.mjs", &[("VIDEO_ID", id.as_ref())]);
    assert_eq!(seen["playerError"], "", "{seen:#}");
    assert!(
        seen["startedWith"].as_str().is_some_and(|s| s.contains("480p")),
        "playback started on the upper rung: {seen:#}"
    );
    assert!(
        seen["stalledAt"].as_f64().is_some_and(|t| t > 4.0),
        "the stall came after the start, not as part of it: {seen:#}"
    );

    // In the lake: the switch with the rung it went to, and the stall with its length.
    let sid = seen["qoe"]["sid"].as_str().expect("sid").to_owned();
    let query = format!(
        "SELECT count(*) FILTER (WHERE event_type = 'bitrate_change') AS switches, \
         count(DISTINCT br) AS rungs, \
         count(*) FILTER (WHERE event_type = 'rebuffer_start') AS stalls, \
         count(*) FILTER (WHERE event_type = 'rebuffer_end' AND rebuffer_ms > 0) AS resumes, \
         coalesce(max(rebuffer_ms), 0) AS longest \
         FROM qoe_events WHERE sid = '{sid}' AND cid = '{id}'"
    );
    let row = until("the stall in the lake", Duration::from_secs(60), async || {
        let csv = sql(data, &query);
        let row: Vec<u64> = csv.lines().nth(1)?.split(',').filter_map(|n| n.parse().ok()).collect();
        (row.len() == 5 && row[0] >= 1 && row[2] >= 1 && row[3] >= 1).then_some(row)
    })
    .await;
    eprintln!("lake: switches, rungs, stalls, resumes, longest stall ms = {row:?}");
    assert!(row[1] >= 2, "the session's events carry both rungs' bitrates: {row:?}");
    assert!(row[4] >= 100, "a stall lasts while the link is a trickle: {row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_survives_a_page_reload_and_resumes_where_the_server_got_to() {
    let setup = start(false).await;
    let (data, base, client) = (&setup.server.data, &setup.base, &setup.client);
    let source = data.join("resumed.mp4");
    clip(&source, 6, "1280x720");
    let size = std::fs::metadata(&source).expect("clip").len();
    let seen = drive(
        &setup,
        "resume.mjs",
        &[("CLIP", source.as_os_str()), ("TITLE", "reloaded mid-way".as_ref())],
    );
    // The bar was kept across the reload (it shows what the server acknowledged, which may be
    // a little past what the page had drawn when it reloaded), and the upload carried on from
    // the server's offset.
    let before = seen["beforeReload"].as_u64().unwrap_or(0);
    let after = seen["afterReload"].as_u64().unwrap_or(0);
    assert!(before >= 35 && after > 0 && after.abs_diff(before) <= 3, "{seen:#}");
    let resumed_from = seen["offsets"]
        .as_array()
        .and_then(|o| o.iter().filter_map(Value::as_u64).max())
        .unwrap_or(0);
    assert!(
        resumed_from > 0 && resumed_from < size,
        "resumed from {resumed_from} of {size}: {seen:#}"
    );
    let id = seen["videoId"].as_str().expect("the video is listed").to_owned();
    ready(client, base, &id, Duration::from_secs(240)).await;
}

/// The whole run, with authentication on (sign in as alice) or off (the local admin).
async fn in_chromium(auth: bool) {
    let setup = start(auth).await;
    let (server, base, client) = (&setup.server, &setup.base, &setup.client);
    // The page and its scripts come from the binary, hls.js and dash.js included.
    for (path, needle) in [
        ("/", "<video id=\"video\""),
        ("/app/hls.min.js", "Hls"),
        ("/app/dash.mediaplayer.min.js", "dashjs"),
    ] {
        let r = client.get(format!("{base}{path}")).send().await.expect("get");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        assert!(r.text().await.expect("text").contains(needle), "{path}");
    }

    let source = server.data.join("clip.mp4");
    clip(&source, 12, "640x360");
    // Signed in as alice, or the local admin (whose subject is `local`) without a token.
    let (viewer, bearer) = if auth {
        ("alice", token(&server.data, "alice", "creator"))
    } else {
        ("local", String::new())
    };
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(if auth {
        "web-player.png"
    } else {
        "web-player-no-auth.png"
    });
    let _ = std::fs::remove_file(&screenshot);
    let title = format!("browser {}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let seen = drive(
        &setup,
        "play.mjs",
        &[
            ("CLIP", source.as_os_str()),
            ("TITLE", title.as_ref()),
            ("SCREENSHOT", screenshot.as_os_str()),
            ("TOKEN", bearer.as_ref()),
        ],
    );
    // (1) The video element played past 4 s before the seek, and the seek took.
    let max_time = seen["maxTime"].as_f64().expect("maxTime");
    assert!(max_time > 4.0, "played to {max_time} s: {seen:#}");
    assert!(seen["afterSeek"].as_f64().is_some_and(|t| t < 2.0), "{seen:#}");
    let who = if auth {
        "alice (creator)"
    } else {
        "local (authentication off)"
    };
    assert!(seen["who"].as_str().is_some_and(|w| w.contains(who)), "{seen:#}");
    assert_eq!(
        seen["steps"][0] == "signed in",
        auth,
        "the sign-in form only with authentication on: {seen:#}"
    );
    assert_eq!(seen["playerError"], "", "{seen:#}");
    let screenshot_bytes = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(screenshot_bytes.starts_with(b"\x89PNG"), "a PNG");
    eprintln!("screenshot of the player: {}", screenshot.display());

    // (2) The session's events are in the lake, with a startup time and a heartbeat.
    let sid = seen["qoe"]["sid"].as_str().expect("sid").to_owned();
    let video_id = seen["videoId"].as_str().expect("videoId").to_owned();
    let query = format!(
        "SELECT count(*) FILTER (WHERE event_type = 'session_start') AS starts, \
         count(*) FILTER (WHERE event_type = 'playing' AND startup_ms > 0) AS startups, \
         count(*) FILTER (WHERE event_type = 'heartbeat') AS heartbeats, \
         count(*) FILTER (WHERE event_type = 'seek') AS seeks, \
         count(*) FILTER (WHERE event_type = 'session_end') AS ends \
         FROM qoe_events WHERE sid = '{sid}' AND cid = '{video_id}' AND viewer_id = '{viewer}'"
    );
    let counts = until("the session in the lake", Duration::from_secs(60), async || {
        let csv = sql(&server.data, &query);
        let row: Vec<u64> = csv.lines().nth(1)?.split(',').filter_map(|n| n.parse().ok()).collect();
        (row.len() == 5 && row[0] == 1 && row[1] >= 1 && row[2] >= 1 && row[3] >= 1 && row[4] == 1).then_some(row)
    })
    .await;
    eprintln!("lake: starts, startups, heartbeats, seeks, ends = {counts:?}");

    // (3) Continue watching has a position for the viewer: on the page, and in the API.
    assert!(seen["resumeMs"].as_u64().is_some_and(|ms| ms > 0), "{seen:#}");
    let mut request = client.get(format!("{base}/v1/viewers/{viewer}/continue-watching"));
    if auth {
        request = request.bearer_auth(&bearer);
    }
    let page: Value = request
        .send()
        .await
        .expect("continue watching")
        .json()
        .await
        .expect("json");
    // (4) Resumed from there with the DASH toggle: dash.js started at the saved position and
    // its session reached the lake as dash.js's.
    let resume_s = seen["resumeMs"].as_f64().unwrap_or_default() / 1000.0;
    let dash_start = seen["dashStart"].as_f64().expect("dashStart");
    assert!(
        dash_start >= resume_s - 1.0,
        "DASH resumed at {dash_start} s, saved {resume_s} s: {seen:#}"
    );
    assert_eq!(seen["dashError"], "", "{seen:#}");
    let dash_sid = seen["dashSid"].as_str().expect("dashSid").to_owned();
    assert_ne!(dash_sid, sid, "a session per play");
    let dash = format!(
        "SELECT count(*) AS n FROM qoe_events WHERE sid = '{dash_sid}' AND event_type = 'playing' \
         AND player_name = 'dash.js' AND startup_ms > 0"
    );
    until("the DASH session in the lake", Duration::from_secs(60), async || {
        (sql(&server.data, &dash) == "n\n1\n").then_some(())
    })
    .await;

    let item = page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["video_id"] == video_id.as_str()))
        .unwrap_or_else(|| panic!("{video_id} under continue watching: {page}"));
    assert!(item["position_ms"].as_u64().is_some_and(|ms| ms > 0), "{item}");
}
