//! Reads a lake folder back with independent Parquet readers (pyarrow and duckdb from PyPI),
//! so tests prove the files are standard Parquet with the declared schema and partitions, not
//! just that vodsource reads its own output.

#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

/// One Parquet file as pyarrow sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct LakeFile {
    /// Path relative to the lake root (`lake/<table>/event_date=…/event_hour=…/<name>`).
    pub path: String,
    /// Rows.
    pub rows: i64,
    /// (column, Arrow type) in file order.
    pub schema: Vec<(String, String)>,
    /// Compression codecs of its column chunks.
    pub codecs: Vec<String>,
    /// Whether every column chunk has statistics.
    pub statistics: bool,
    /// Whether every column chunk has a column index and an offset index (the page index).
    pub page_index: bool,
    /// Encodings used by the `cid` (or `video_id`) column chunks.
    pub key_encodings: Vec<String>,
}

/// A lake table as the readers see it.
#[derive(Debug, Clone, Deserialize)]
pub struct LakeTable {
    /// Its files.
    pub files: Vec<LakeFile>,
    /// Every `event_id`, with how many rows carry it (duckdb, over hive partitions).
    pub event_ids: BTreeMap<String, u64>,
    /// Rows whose partition (`event_date`, `event_hour` from the path) is not the UTC hour of
    /// their event time (duckdb).
    pub misplaced: u64,
}

/// The reader script (also run by the api crate's process tests).
pub const READER: &str = include_str!("lake_reader.py");

/// Reads `table` (`qoe_events`, `video_events`) under the lake rooted at `root` (the object
/// store folder).
///
/// # Panics
/// When python, pyarrow or duckdb is missing (start them with
/// `scripts/services.sh start lake-readers`) or a file does not read.
pub fn read(root: &Path, table: &str) -> LakeTable {
    let time_column = if table == "qoe_events" { "ts" } else { "occurred_at" };
    let output = Command::new("python3")
        .args(["-c", READER])
        .arg(root)
        .arg(table)
        .arg(time_column)
        .output()
        .expect("python3 runs; install the readers with `scripts/services.sh start lake-readers`");
    assert!(
        output.status.success(),
        "the lake readers failed (install them with `scripts/services.sh start lake-readers`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the reader's JSON")
}

/// Reads `table` of the lake under `s3://<bucket>/<prefix>` on the S3 emulator at `endpoint`:
/// pyarrow's own S3 client copies the table's objects to a local folder, which [`read`] reads.
///
/// # Panics
/// As [`read`], or when pyarrow cannot copy the objects.
pub fn read_s3(endpoint: &str, bucket: &str, prefix: &str, table: &str) -> LakeTable {
    let local = crate::TempDir::new();
    let script = r#"
import sys, pyarrow.fs as fs
endpoint, source, dest = sys.argv[1], sys.argv[2], sys.argv[3]
scheme, host = endpoint.split("://", 1)
s3 = fs.S3FileSystem(endpoint_override=host, scheme=scheme, region="us-east-1",
                     access_key="vodsource", secret_key="vodsource")
if s3.get_file_info(source).type == fs.FileType.Directory:
    fs.copy_files(source, dest, source_filesystem=s3, destination_filesystem=fs.LocalFileSystem())
"#;
    let key = [prefix.trim_matches('/'), "lake", table]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    let dest = local.path().join("lake").join(table);
    let output = Command::new("python3")
        .args(["-c", script, endpoint, &format!("{bucket}/{key}")])
        .arg(&dest)
        .output()
        .expect("python3 runs; install the readers with `scripts/services.sh start lake-readers`");
    assert!(
        output.status.success(),
        "pyarrow could not copy s3://{bucket}/{key}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    read(local.path(), table)
}
