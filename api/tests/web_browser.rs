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

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{clip, ready, serve_on_any_port, until, upload, BIN, LOG_WITH_ADDRESS};
use serde_json::Value;

const SECRET: &str = "browser-test-secret-0123456789-0123456789";

struct Server {
    child: Child,
    data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn vodsource(data: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(data)
        .env("VODSOURCE_JWT_SECRET", SECRET)
        .env("VODSOURCE_LAKE_FLUSH_SECS", "1")
        .env("VODSOURCE_LOG", "warn");
    command
}

/// `vodsource serve`, with authentication or without (loopback only), on a port of its own
/// choosing: the child and its base URL.
fn serve(data: &Path, auth: bool) -> (Child, String) {
    let mut command = vodsource(data);
    if !auth {
        command.env_remove("VODSOURCE_JWT_SECRET");
    }
    command
        .env("VODSOURCE_LOG", LOG_WITH_ADDRESS)
        .args(["--log-json", "serve", "--listen", "127.0.0.1:0"]);
    serve_on_any_port(command)
}

fn token(data: &Path, sub: &str, role: &str) -> String {
    let output = vodsource(data)
        .args(["token", "--sub", sub, "--role", role])
        .output()
        .expect("token");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn sql(data: &Path, query: &str) -> String {
    let output = vodsource(data)
        .args(["qoe", "query", "--format", "csv", query])
        .output()
        .expect("qoe query runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `command` to its end, killing it after `within`.
fn output_within(mut command: Command, within: Duration) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (install Node.js)");
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "the browser run took over {within:?}: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

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
    // The bar was kept across the reload, and the upload carried on from the server's offset.
    let before = seen["beforeReload"].as_u64().unwrap_or(0);
    let after = seen["afterReload"].as_u64().unwrap_or(0);
    assert!(before >= 35 && after > 0 && after <= before, "{seen:#}");
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

/// What each browser run needs: Chromium, playwright-core, and a `vodsource serve` answering.
struct Setup {
    server: Server,
    base: String,
    chromium: String,
    web: PathBuf,
    client: reqwest::Client,
}

async fn start(auth: bool) -> Setup {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install it with `scripts/services.sh start browser`"
    );
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in {} (scripts/services.sh start browser does)",
        web.display()
    );
    let data = std::env::temp_dir().join(format!("vodsource-web-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&data).expect("data dir");
    let (child, base) = serve(&data, auth);
    let server = Server { child, data };
    let client = reqwest::Client::new();
    until("the server answers", Duration::from_secs(30), async || {
        let r = client.get(format!("{base}/v1/health/live")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    Setup {
        server,
        base,
        chromium,
        web,
        client,
    }
}

/// Runs `web/e2e/<script>` with `env` to its end: the JSON line it printed last, which must
/// say it succeeded.
fn drive(setup: &Setup, script: &str, env: &[(&str, &std::ffi::OsStr)]) -> Value {
    let mut driver = Command::new("node");
    driver
        .arg(setup.web.join("e2e").join(script))
        .env("BASE", &setup.base)
        .env("CHROMIUM", &setup.chromium);
    for (name, value) in env {
        driver.env(name, value);
    }
    let output = output_within(driver, Duration::from_secs(400));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let seen: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result from the browser run: {stdout}\n{stderr}"));
    assert!(
        output.status.success() && seen["error"].is_null(),
        "the browser run failed: {seen:#}\n{stderr}"
    );
    eprintln!("what the browser saw: {seen}");
    seen
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
