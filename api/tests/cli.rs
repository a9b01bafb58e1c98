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
