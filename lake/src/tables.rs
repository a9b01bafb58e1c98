//! The data lake's tables: their columns in one place (the Parquet writer and the Athena DDL
//! read the same list), the layout of their files, and the Athena DDL.
//!
//! Athena reads Parquet by column name and type: no unsigned integers (every count here fits a
//! signed type by validation), times as INT64 milliseconds adjusted to UTC (`timestamp`), text
//! as UTF-8 (`string`).

use std::fmt::Write as _;

/// A column's type in the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// Signed 64-bit.
    BigInt,
    /// Signed 32-bit.
    Int,
    /// true/false.
    Boolean,
    /// Milliseconds since the epoch, UTC.
    Timestamp,
}

impl ColumnType {
    /// The Athena (Hive DDL) type name.
    pub fn athena(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::BigInt => "bigint",
            Self::Int => "int",
            Self::Boolean => "boolean",
            Self::Timestamp => "timestamp",
        }
    }
}

/// One column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Its name (the beacon field's name for QoE events).
    pub name: &'static str,
    /// Its type.
    pub ty: ColumnType,
    /// Whether it may be null.
    pub nullable: bool,
    /// What it holds.
    pub comment: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, nullable: bool, comment: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable,
        comment,
    }
}

/// A lake table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Its name in Athena and in the lake's folder names.
    pub name: &'static str,
    /// Its columns, in file order (partition columns excluded).
    pub columns: &'static [Column],
}

/// Player QoE events, as accepted by `POST /v1/playback/beacons`.
pub const QOE_EVENTS: Table = Table {
    name: "qoe_events",
    columns: &[
        col("event_id", ColumnType::String, false, "UUID chosen by the player; unique per event"),
        col("event_type", ColumnType::String, false, "session_start, playing, heartbeat, pause, seek, rebuffer_start, rebuffer_end, bitrate_change, error, ended, session_end"),
        col("sid", ColumnType::String, false, "CMCD session id"),
        col("cid", ColumnType::String, false, "CMCD content id: the video id"),
        col("viewer_id", ColumnType::String, true, "the viewer"),
        col("ts", ColumnType::Timestamp, false, "client event time, UTC"),
        col("received_at", ColumnType::Timestamp, false, "server receive time, UTC"),
        col("position_ms", ColumnType::BigInt, true, "playhead, ms"),
        col("duration_ms", ColumnType::BigInt, true, "media duration, ms"),
        col("br", ColumnType::Int, true, "CMCD encoded bitrate, kbit/s"),
        col("bl", ColumnType::Int, true, "CMCD buffer length, ms"),
        col("mtp", ColumnType::Int, true, "CMCD measured throughput, kbit/s"),
        col("ot", ColumnType::String, true, "CMCD object type: m, a, v, av, i, c, tt, k, o"),
        col("su", ColumnType::Boolean, true, "CMCD startup"),
        col("bs", ColumnType::Boolean, true, "CMCD buffer starvation"),
        col("startup_ms", ColumnType::Int, true, "time from session_start to the first frame, ms"),
        col("rebuffer_ms", ColumnType::Int, true, "length of the stall that ended, ms"),
        col("error_code", ColumnType::String, true, "player error code"),
        col("error_message", ColumnType::String, true, "player error message"),
        col("player_name", ColumnType::String, true, "player"),
        col("player_version", ColumnType::String, true, "player version"),
        col("device_type", ColumnType::String, true, "device type"),
        col("os", ColumnType::String, true, "operating system"),
        col("browser", ColumnType::String, true, "browser"),
    ],
};

/// Every event of the video event store, relayed through `video-events`.
pub const VIDEO_EVENTS: Table = Table {
    name: "video_events",
    columns: &[
        col("event_id", ColumnType::String, false, "UUID v7 of the event"),
        col(
            "position",
            ColumnType::BigInt,
            false,
            "global position in the event store",
        ),
        col("video_id", ColumnType::String, false, "the video (stream id)"),
        col(
            "version",
            ColumnType::BigInt,
            false,
            "version within the video's stream",
        ),
        col(
            "event_type",
            ColumnType::String,
            false,
            "VideoRegistered, SourceUploaded, EncodingRequested, ...",
        ),
        col("schema_version", ColumnType::Int, false, "payload schema version"),
        col("occurred_at", ColumnType::Timestamp, false, "when it happened, UTC"),
        col("correlation_id", ColumnType::String, true, "flow the event belongs to"),
        col(
            "causation_id",
            ColumnType::String,
            true,
            "event or command that caused it",
        ),
        col(
            "actor",
            ColumnType::String,
            true,
            "principal, worker or process manager",
        ),
        col("payload", ColumnType::String, false, "the event's JSON"),
    ],
};

/// Both tables.
pub const TABLES: [Table; 2] = [QOE_EVENTS, VIDEO_EVENTS];

/// Milliseconds in an hour.
const HOUR_MS: i64 = 3_600_000;

/// The lake partition (UTC hour) of an event time: hours since the epoch.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS)
}

/// `event_date=YYYY-MM-DD/event_hour=HH` of an hour since the epoch (UTC).
pub fn partition_path(hour: i64) -> String {
    let start = chrono::DateTime::from_timestamp(hour.saturating_mul(3600), 0).unwrap_or_default();
    start.format("event_date=%Y-%m-%d/event_hour=%H").to_string()
}

/// The object key of the lake file holding `stream`'s records `first..=last` of `partition`
/// whose event time falls in `hour`:
/// `lake/<table>/event_date=YYYY-MM-DD/event_hour=HH/<stream>-<partition>-<first>-<last>.parquet`.
/// The name comes from the offsets alone, so writing the same records again replaces the file.
pub fn file_key(table: &Table, hour: i64, stream: &str, partition: u32, first: u64, last: u64) -> String {
    format!(
        "lake/{}/{}/{stream}-{partition}-{first}-{last}.parquet",
        table.name,
        partition_path(hour)
    )
}

/// Why a lake location is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the lake location must be s3://bucket[/prefix] without quotes or spaces: {0}")]
pub struct LocationError(String);

/// `s3://bucket/prefix` without a trailing slash, checked.
fn location(location: &str) -> Result<String, LocationError> {
    let trimmed = location.trim_end_matches('/');
    let bucket = trimmed.strip_prefix("s3://").unwrap_or_default();
    let bad = bucket.is_empty()
        || bucket.starts_with('/')
        || trimmed
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | '`' | '\\'));
    if bad {
        return Err(LocationError(location.to_owned()));
    }
    Ok(trimmed.to_owned())
}

/// The folder of `table` under the lake root: `<root>/lake/<table>`.
pub fn table_root(root: &str, table: &Table) -> String {
    format!("{}/lake/{}", root.trim_end_matches('/'), table.name)
}

/// `CREATE EXTERNAL TABLE` statements for every lake table under `location`
/// (`s3://bucket/prefix`): Parquet, partitioned by `event_date` and `event_hour` (UTC), with
/// partition projection so new partitions need no `MSCK REPAIR` or crawler.
///
/// # Errors
/// A location that is not `s3://bucket[/prefix]`.
pub fn athena_ddl(location_url: &str, first_date: &str) -> Result<String, LocationError> {
    let root = location(location_url)?;
    let mut out = String::new();
    for table in TABLES {
        let base = table_root(&root, &table);
        let _ = writeln!(out, "CREATE EXTERNAL TABLE IF NOT EXISTS {} (", table.name);
        let width = table.columns.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for (i, column) in table.columns.iter().enumerate() {
            let comma = if i + 1 < table.columns.len() { "," } else { "" };
            let _ = writeln!(
                out,
                "  `{}`{} {} COMMENT '{}'{comma}",
                column.name,
                " ".repeat(width - column.name.len()),
                column.ty.athena(),
                column.comment.replace('\'', "''"),
            );
        }
        let _ = writeln!(
            out,
            ")\nPARTITIONED BY (`event_date` string, `event_hour` string)\nSTORED AS PARQUET\nLOCATION '{base}/'\nTBLPROPERTIES (\n  'projection.enabled' = 'true',\n  'projection.event_date.type' = 'date',\n  'projection.event_date.format' = 'yyyy-MM-dd',\n  'projection.event_date.range' = '{first_date},NOW',\n  'projection.event_date.interval' = '1',\n  'projection.event_date.interval.unit' = 'DAYS',\n  'projection.event_hour.type' = 'integer',\n  'projection.event_hour.range' = '0,23',\n  'projection.event_hour.digits' = '2',\n  'storage.location.template' = '{base}/event_date=${{event_date}}/event_hour=${{event_hour}}/',\n  'parquet.compression' = 'ZSTD'\n);\n"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ddl_declares_parquet_tables_with_projected_hourly_partitions() {
        let ddl = athena_ddl("s3://analytics-bucket/vod/", "2026-01-01").expect("ddl");
        assert_eq!(ddl.matches("CREATE EXTERNAL TABLE IF NOT EXISTS").count(), 2);
        assert!(ddl.contains("CREATE EXTERNAL TABLE IF NOT EXISTS qoe_events (\n  `event_id`"));
        assert!(ddl.contains("LOCATION 's3://analytics-bucket/vod/lake/qoe_events/'"));
        assert!(ddl.contains(
            "'storage.location.template' = 's3://analytics-bucket/vod/lake/video_events/event_date=${event_date}/event_hour=${event_hour}/'"
        ));
        assert!(ddl.contains("'projection.event_date.range' = '2026-01-01,NOW'"));
        let line = |name: &str| {
            ddl.lines()
                .find(|l| l.trim_start().starts_with(&format!("`{name}`")))
                .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_owned())
        };
        assert_eq!(line("ts").as_deref(), Some("timestamp"));
        assert_eq!(line("received_at").as_deref(), Some("timestamp"));
        assert_eq!(line("br").as_deref(), Some("int"));
        assert_eq!(line("position_ms").as_deref(), Some("bigint"));
        assert_eq!(line("su").as_deref(), Some("boolean"));
        assert!(!ddl.contains("unsigned") && !ddl.contains("tinyint"));
        assert_eq!(
            ddl.matches("PARTITIONED BY (`event_date` string, `event_hour` string)")
                .count(),
            2
        );
    }

    #[test]
    fn every_beacon_field_is_a_qoe_column_and_back() {
        let names: Vec<&str> = QOE_EVENTS.columns.iter().map(|c| c.name).collect();
        for field in vodsource_qoe::beacon::field_names() {
            assert!(names.contains(&field), "{field} has a column");
        }
        assert_eq!(
            names.len(),
            vodsource_qoe::beacon::field_names().count() + 1,
            "plus received_at"
        );
    }

    #[test]
    fn files_are_keyed_by_utc_hour_of_event_time_and_by_offsets() {
        // 2026-11-23T05:59:59.999Z and the next millisecond.
        let last = 1_795_413_599_999;
        assert_eq!(partition_path(hour_of(last)), "event_date=2026-11-23/event_hour=05");
        assert_eq!(partition_path(hour_of(last + 1)), "event_date=2026-11-23/event_hour=06");
        assert_eq!(partition_path(hour_of(-1)), "event_date=1969-12-31/event_hour=23");
        assert_eq!(
            file_key(&QOE_EVENTS, hour_of(last), "qoe-events", 2, 100, 250),
            "lake/qoe_events/event_date=2026-11-23/event_hour=05/qoe-events-2-100-250.parquet"
        );
    }

    #[test]
    fn locations_that_could_break_the_statement_are_refused() {
        for bad in [
            "",
            "/tmp/lake",
            "s3://",
            "s3:///x",
            "s3://b/it's",
            "s3://b/a b",
            "https://b/x",
        ] {
            assert!(athena_ddl(bad, "2026-01-01").is_err(), "{bad:?}");
        }
    }
}
