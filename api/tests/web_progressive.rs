//! A video played while it is still encoding, in a real browser: `vodsource serve` (embedded,
//! authentication off) and headless Chromium driven by `web/e2e/progressive.mjs`. 90 s of 720p
//! is registered to publish itself once playable; it becomes playable (and published) while
//! the status says `encoding`; hls.js and dash.js, each in a page of its own, play it at once
//! from the catalog: both start while it is still encoding, from 0 (not the live edge), and play
//! 30 s without the video element waiting for data. The playlist hls.js first loaded was an
//! `EVENT` one and dash.js's MPD `dynamic`; at the end the same playlist is `VOD` and ended with
//! the same segments first (the whole 90 s), and the MPD static. A binary of its own, so that no
//! other browser test shares the two cores with this encode.

mod common;

use std::time::Duration;

use common::browser::{drive, start};
use common::{clip, get_json, ready, until, upload_with, video};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_still_encoding_plays_from_growing_playlists_without_a_stall_and_ends_as_vod() {
    let setup = start(false).await;
    let (data, base, client) = (&setup.server.data, &setup.base, &setup.client);
    // 90 s of 720p: its encode lasts well past the player's start-up.
    let source = data.join("long.mp4");
    clip(&source, 90, "1280x720");
    let (id, _) = upload_with(
        client,
        base,
        "still encoding",
        &source,
        json!({ "publish_when_playable": true }),
    )
    .await;
    let status = until("the video is playable", Duration::from_secs(120), async || {
        let status = encoding_status(client, base, &id).await?;
        assert_ne!(status["status"], "failed", "{status}");
        (status["playable"] == true).then_some(status)
    })
    .await;
    assert_eq!(
        status["status"], "encoding",
        "playable before the ladder is done: {status}"
    );
    assert!(status["playable_at"].is_string(), "{status}");
    // Registered to publish itself once playable: the catalog (a view of its own, which may
    // trail the status view by a moment) shows it playable and published in the same change.
    let video = until("the catalog shows it playable", Duration::from_secs(30), async || {
        let video = video(client, base, &id).await?;
        (video["playable"] == true).then_some(video)
    })
    .await;
    assert_eq!(video["published"], true, "{video}");

    // A viewer arriving once a good part is stored: a player joining a growing playlist at its
    // live edge would start well past 0 now.
    until("a third is encoded", Duration::from_secs(120), async || {
        let status = encoding_status(client, base, &id).await?;
        (status["percent"].as_f64()? >= 33.0).then_some(())
    })
    .await;
    // hls.js and dash.js at once, each in a page of its own.
    let seen = drive(&setup, "progressive.mjs", &[("VIDEO_ID", id.as_ref())]);
    for player in ["hls", "dash"] {
        let seen = &seen[player];
        assert_eq!(
            seen["statusAtStart"]["status"], "encoding",
            "{player}: playback started while the encode ran: {seen:#}"
        );
        assert_eq!(
            seen["progressive"]["waiting"], 0,
            "{player}: the player never waited for data: {seen:#}"
        );
        assert!(
            seen["qoe"]["sent"]["rebuffer_start"].as_u64().unwrap_or(0) == 0,
            "{player}: no rebuffering: {seen:#}"
        );
        assert!(
            seen["startedAt"].as_f64().is_some_and(|t| t < 2.0),
            "{player}: from the start, not the live edge: {seen:#}"
        );
        assert_eq!(seen["playerError"], "", "{player}: {seen:#}");
        eprintln!(
            "{player}: start-up {} ms at {} % encoded",
            seen["startupMs"], seen["statusAtStart"]["percent"]
        );
    }
    // (The audio is encoded from a decode of its own and complete within seconds: the
    // playlists that grow are the video's.)
    let first = |player: &str, suffix: &str| {
        seen[player]["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter().find(|m| {
                    m["url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with(suffix) && !u.contains("/audio/"))
                })
            })
            .cloned()
            .unwrap_or_else(|| panic!("{player} loaded no {suffix}: {seen:#}"))
    };
    // The first video playlist hls.js loaded was still growing, and so was dash.js's MPD.
    let playlist = first("hls", "/index.m3u8");
    let growing = playlist["text"].as_str().expect("text");
    assert!(growing.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"), "{growing}");
    assert!(!growing.contains("#EXT-X-ENDLIST"), "{growing}");
    let mpd = first("dash", ".mpd");
    let dynamic = mpd["text"].as_str().expect("text");
    assert!(dynamic.contains("type=\"dynamic\""), "{dynamic}");

    // At the end the same playlist is VOD, ended, with the same segments first; the MPD static.
    ready(client, base, &id, Duration::from_secs(240)).await;
    let mpd = client
        .get(mpd["url"].as_str().expect("url"))
        .send()
        .await
        .expect("mpd")
        .text()
        .await
        .expect("text");
    assert!(
        mpd.contains("type=\"static\"") && mpd.contains("mediaPresentationDuration"),
        "{mpd}"
    );
    let url = playlist["url"].as_str().expect("url");
    let complete = client.get(url).send().await.expect("playlist");
    assert_eq!(
        complete.headers().get("cache-control").and_then(|v| v.to_str().ok()),
        Some("private, no-cache"),
        "a playlist that grows is revalidated"
    );
    let complete = complete.text().await.expect("text");
    assert!(complete.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{complete}");
    assert!(complete.ends_with("#EXT-X-ENDLIST\n"), "{complete}");
    let (early, full) = (segments(growing), segments(&complete));
    assert!(
        !early.is_empty() && early.len() < full.len() && full.starts_with(&early),
        "the growing playlist's segments start the complete one: {early:?} / {full:?}"
    );
    let total: f64 = full.iter().map(|(d, _)| d.parse::<f64>().unwrap_or(0.0)).sum();
    assert!(
        (total - 90.0).abs() < 1.0,
        "the complete playlist holds the whole 90 s: {total}"
    );
}

/// `(EXTINF duration, URI)` of each segment of a media playlist.
fn segments(playlist: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = playlist.lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let duration = w[0].strip_prefix("#EXTINF:")?.trim_end_matches(',');
            Some((duration.to_owned(), w[1].to_owned()))
        })
        .collect()
}

/// The video's encoding status, if the API answers.
async fn encoding_status(client: &reqwest::Client, base: &str, id: &str) -> Option<Value> {
    get_json(client, &format!("{base}/v1/videos/{id}/status")).await
}
