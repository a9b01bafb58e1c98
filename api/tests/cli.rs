//! Small commands of the `vodsource` binary, run as a process.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vodsource");

#[test]
fn athena_ddl_prints_both_tables_and_refuses_a_bad_location() {
    let output = Command::new(BIN)
        .args([
            "athena",
            "ddl",
            "--location",
            "s3://lake-bucket/prod",
            "--from",
            "2026-11-01",
        ])
        .output()
        .expect("runs");
    assert!(output.status.success());
    let ddl = String::from_utf8(output.stdout).expect("utf8");
    assert!(ddl.contains("CREATE EXTERNAL TABLE IF NOT EXISTS qoe_events ("));
    assert!(ddl.contains("CREATE EXTERNAL TABLE IF NOT EXISTS video_events ("));
    assert!(ddl.contains("'projection.event_date.range' = '2026-11-01,NOW'"));
    assert!(ddl.contains("LOCATION 's3://lake-bucket/prod/lake/video_events/'"));

    for args in [
        ["athena", "ddl", "--location", "s3://b/it's", "--from", "2026-11-01"],
        ["athena", "ddl", "--location", "s3://b/x", "--from", "November"],
    ] {
        let output = Command::new(BIN).args(args).output().expect("runs");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(output.stdout.is_empty(), "nothing printed on error");
        assert!(String::from_utf8_lossy(&output.stderr).starts_with("error: "));
    }
}

#[cfg(feature = "lake-sql")]
#[test]
fn qoe_commands_name_what_is_wrong_and_an_empty_lake_is_empty() {
    let dir = std::env::temp_dir().join(format!("vodsource-cli-{}", std::process::id()));
    let store = format!("file://{}", dir.join("objects").display());
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&dir)
            .args(args)
            .args(["--object-store", &store])
            .output()
            .expect("runs")
    };
    let output = run(&[
        "qoe",
        "query",
        "SELECT count(*) AS n FROM qoe_events",
        "--format",
        "csv",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "n\n0\n",
        "a lake without files is empty"
    );

    let output = run(&["qoe", "query", "SELECT nope FROM qoe_events"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: ") && stderr.contains("nope"), "{stderr}");

    let output = run(&["qoe", "query", "SELECT 1 FROM no_such_table"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no_such_table"));

    let output = run(&["qoe", "report", "--from", "November"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--from must be a date"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(all(
    feature = "postgres",
    feature = "dynamodb",
    feature = "kafka",
    feature = "s3",
    feature = "lake-sql"
))]
/// `vodsource setup` on the distributed stores (PostgreSQL, DynamoDB, S3 and Kafka on
/// loopback, as `scripts/services.sh` starts them): it creates each, twice without harm, and
/// names the store that fails.
#[test]
fn setup_creates_the_distributed_stores_and_is_safe_to_run_twice() {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let pg =
        std::env::var("VODSOURCE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let sep = if pg.contains('?') { '&' } else { '?' };
    let aws = std::env::var("VODSOURCE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let bucket = format!("setup-{}", &id[..20]);
    let dir = std::env::temp_dir().join(format!("vodsource-setup-{id}"));
    let run = |object_store: &str, origins: &str| {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&dir)
            .arg("setup")
            .env("VODSOURCE_EVENT_STORE", format!("{pg}{sep}schema=t_setup_{id}"))
            .env("VODSOURCE_VIEW_STORE", format!("dynamodb://?prefix=t-setup-{id}-"))
            .env("VODSOURCE_OBJECT_STORE", object_store)
            .env("VODSOURCE_CORS_ORIGINS", origins)
            .env(
                "VODSOURCE_STREAM",
                format!("kafka://127.0.0.1:9092?prefix=t-setup-{id}-"),
            )
            .env("AWS_ENDPOINT_URL", &aws)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "vodsource")
            .env("AWS_SECRET_ACCESS_KEY", "vodsource")
            .output()
            .expect("runs")
    };
    // Before setup, a role finds no tables and says what creates them.
    let output = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .arg("projections")
        .env("VODSOURCE_VIEW_STORE", format!("dynamodb://?prefix=t-setup-{id}-"))
        .env("AWS_ENDPOINT_URL", &aws)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "vodsource")
        .env("AWS_SECRET_ACCESS_KEY", "vodsource")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ResourceNotFound") && stderr.contains("vodsource setup"),
        "{stderr}"
    );
    for round in 0..2 {
        let output = run(
            &format!("s3://{bucket}/vod"),
            "http://app.example,https://studio.example:8443",
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "round {round}: {stdout}{} (start the services with `scripts/services.sh start postgres kafka aws`)",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("event store  postgres"), "{stdout}");
        assert!(stdout.contains("view store   dynamodb://"), "{stdout}");
        assert!(
            stdout.contains(&format!(
                "object store s3://{bucket}/vod: ready (browsers from http://app.example, https://studio.example:8443)"
            )),
            "{stdout}"
        );
        assert!(stdout.contains("topics qoe-events, video-events ready"), "{stdout}");
    }
    // The bucket is there for any client.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let settings = vodsource_infra::aws::AwsSettings::emulator(&aws);
        let store = vodsource_infra::s3::S3ObjectStore::open(&format!("s3://{bucket}"), &settings)
            .await
            .expect("store");
        vodsource_commands::ports::ObjectStore::check(&store)
            .await
            .expect("the bucket exists");
        // A browser on an allowed origin may PUT an upload and GET media there (CORS
        // preflight); another origin may not.
        let preflight = |origin: &str, method: &str| {
            reqwest::Client::new()
                .request(
                    reqwest::Method::OPTIONS,
                    format!("{aws}/{bucket}/vod/sources/v/clip.mp4"),
                )
                .header("Origin", origin)
                .header("Access-Control-Request-Method", method)
                .header("Access-Control-Request-Headers", "content-type")
                .send()
        };
        for method in ["PUT", "GET"] {
            let allowed = preflight("https://studio.example:8443", method)
                .await
                .expect("preflight");
            assert_eq!(allowed.status(), reqwest::StatusCode::OK);
            let header = |name: &str| {
                allowed
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            assert_eq!(header("access-control-allow-origin"), "https://studio.example:8443");
            assert!(header("access-control-allow-methods").contains(method));
            // The rule's own answers (the emulator echoes origins on anything, so these
            // are what show the bucket's rules are set).
            assert_eq!(header("access-control-max-age"), "3600");
            assert!(header("access-control-expose-headers").contains("ETag"));
        }
        let refused = preflight("https://elsewhere.example", "PUT").await.expect("preflight");
        assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN, "an origin not listed");
    });
    // `qoe query` reads the lake where it lies (empty here, not missing).
    let output = Command::new(BIN)
        .args([
            "qoe",
            "query",
            "SELECT count(*) AS n FROM qoe_events",
            "--format",
            "csv",
        ])
        .args(["--object-store", &format!("s3://{bucket}/vod")])
        .env("AWS_ENDPOINT_URL", &aws)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "vodsource")
        .env("AWS_SECRET_ACCESS_KEY", "vodsource")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "n\n0\n");
    let output = run("s3://Not_A_Bucket", "*");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Not_A_Bucket"));
    let output = run(&format!("s3://{bucket}/vod"), "ftp://app.example");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("\"ftp://app.example\" is not * or scheme://host[:port]"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_prints_the_layers_in_order_with_secrets_redacted_and_refuses_unknown_keys() {
    let dir = std::env::temp_dir().join(format!("vodsource-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("vodsource.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:1\"\nrate_limit = 7\nencoders = 3\nsigning_secret = \"from-the-file-0123456789abcdef-0123\"\n",
    )
    .expect("file");
    let output = Command::new(BIN)
        .args(["--encoders", "5", "config"])
        .env("VODSOURCE_CONFIG", &file)
        .env("VODSOURCE_LISTEN", "0.0.0.0:2")
        .env("VODSOURCE_ENCODERS", "4")
        .env("VODSOURCE_JWT_SECRET", "from-the-environment-0123456789abcdef")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for line in [
        "listen = \"0.0.0.0:2\"",
        "rate_limit = 7",
        "encoders = 5",
        "rate_burst = 200",
        "jwt_secret = \"<redacted>\"",
        "signing_secret = \"<redacted>\"",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
    }
    assert!(!stdout.contains("from-the-"), "{stdout}");

    std::fs::write(&file, "listen = \"0.0.0.0:1\"\nlisten_adress = \"typo\"\n").expect("file");
    let output = Command::new(BIN)
        .args(["--config", &file.display().to_string(), "config"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("listen_adress") && stderr.contains("vodsource.toml"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_minted_token_carries_the_configured_issuer_and_audience() {
    use base64::Engine as _;
    let mint = |issuer: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .args(["token", "--sub", "alice", "--role", "creator"])
            .env("VODSOURCE_JWT_SECRET", "a-secret-of-thirty-two-bytes-0123456789");
        if let Some(issuer) = issuer {
            command
                .env("VODSOURCE_JWT_ISSUER", issuer)
                .env("VODSOURCE_JWT_AUDIENCE", "vodsource");
        }
        let output = command.output().expect("runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let token = String::from_utf8(output.stdout).expect("utf8");
        let payload = token.trim().split('.').nth(1).expect("payload").to_owned();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("claims")
    };
    let claims = mint(Some("https://id.example"));
    assert_eq!(claims["iss"], "https://id.example");
    assert_eq!(claims["aud"], "vodsource");
    assert_eq!(claims["sub"], "alice");
    assert!(mint(None).get("iss").is_none());

    let output = Command::new(BIN)
        .args(["token", "--sub", "alice", "--role", "creator"])
        .env_remove("VODSOURCE_JWT_SECRET")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("VODSOURCE_JWT_SECRET"));
}

#[test]
fn webhooks_lists_endpoints_with_their_lag() {
    let dir = std::env::temp_dir().join(format!("vodsource-cli-webhooks-{}", std::process::id()));
    let output = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .arg("webhooks")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["endpoint", "scope", "state", "position", "lag", "url"]
    );
    assert_eq!(lines[1..], ["0 endpoint(s); log head: 0"], "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn transcode_with_a_lead_says_which_rungs_lead_and_writes_the_same_ladder() {
    let dir = std::env::temp_dir().join(format!("vodsource-transcode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let source = dir.join("source.mp4");
    // 720p: the ladder is 720p, 480p and 360p, and the lead the two smaller.
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=25",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args(["-c:a", "aac", "-shortest"])
        .arg(&source)
        .status()
        .expect("ffmpeg runs; install it with `scripts/services.sh start ffmpeg`");
    assert!(made.success());
    // The default ladder but for the lead's buffer: none, so the lead has a decode of its own.
    let own_decode = dir.join("own-decode.toml");
    std::fs::write(&own_decode, "lead_buffer_mib = 0\n").expect("ladder file");
    let transcode = |out: &str, lead: bool, ladder: Option<&std::path::Path>| {
        let mut command = Command::new(BIN);
        command.arg("--data-dir").arg(dir.join("data")).arg("transcode");
        if lead {
            command.arg("--lead");
        }
        if let Some(ladder) = ladder {
            command.env("VODSOURCE_LADDER", ladder);
        }
        let output = command
            .arg(&source)
            .arg(dir.join(out))
            .env("VODSOURCE_LOG", "vodsource_encoder=debug")
            .output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stdout}{stderr}");
        // The encoder's own word that it ran a lead, beside what the command printed.
        let stdout = stdout + &stderr;
        let mut files: Vec<String> = walk(&dir.join(out))
            .into_iter()
            .map(|f| f.strip_prefix(dir.join(out)).expect("under").display().to_string())
            .collect();
        files.sort();
        (stdout, files)
    };
    let (whole, whole_files) = transcode("whole", false, None);
    let (led, led_files) = transcode("led", true, None);
    let (own, own_files) = transcode("own", true, Some(&own_decode));
    assert!(!whole.contains("lead") && !whole.contains("decodes"), "{whole}");
    // By default the lead shares the one decode: 3 s of 720p fit in its queue, and the
    // memory for the larger rungs' pictures is half of what is available (64 MiB–16 GiB).
    let said = "lead: 480p, 360p ahead, on the one decode; the larger rungs' pictures up to ";
    let mib = led
        .split_once(said)
        .and_then(|(_, rest)| {
            rest.split_once(
                " MiB in memory (a queue of at most 10 s, past it when the lead must go on), then 16384 MiB on disk",
            )
        })
        .and_then(|(mib, _)| mib.parse::<u32>().ok());
    assert!(mib.is_some_and(|mib| (64..=16384).contains(&mib)), "{led}");
    assert!(led.contains("the lead encodes ahead on the one decode"), "{led}");
    assert!(led.contains("decodes: one"), "{led}");
    assert!(
        own.contains("lead: 480p, 360p ahead, from a decode of their own"),
        "{own}"
    );
    assert!(own.contains("the lead encodes ahead from a decode of its own"), "{own}");
    assert!(
        own.contains("decodes: two, the larger rungs' own from picture 0"),
        "{own}"
    );
    assert_eq!(led_files, whole_files, "the same files either way");
    assert_eq!(own_files, whole_files, "the same files either way");
    assert!(whole_files.iter().any(|f| f == "720p/seg_00002.m4s"), "{whole_files:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reads").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
