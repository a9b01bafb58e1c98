//! The standard QoE metrics, as Mux Data defines them, computed with SQL over the lake.
//!
//! A *view* is one playback session (`sid`). Per view: its first and last event time, its
//! first `playing` (the first frame), its errors, stalls and rung switches. Then:
//!
//! - **plays**: views;
//! - **video start failures**: views whose first error comes before any first frame;
//! - **exits before video start**: views with neither a first frame nor an error (the viewer
//!   left while it was starting);
//! - **startup time**: the player's `startup_ms` on the first `playing`, else the time from
//!   the view's first event to it; p50 and p95 over views that started;
//! - **rebuffer percentage**: stalled time (`rebuffer_ms` of `rebuffer_end`) over watch time
//!   (first to last event of the views that started);
//! - **rebuffers per minute** of watch time;
//! - **average bitrate**: mean `br` of `playing` and `heartbeat` events, which come at a fixed
//!   period, so it is weighted by time;
//! - **bitrate switches per hour** of watch time;
//! - **playback failure percentage**: views that started and then had an error.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;

use crate::query::{Lake, QueryError};

/// What to report on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportFilter {
    /// First `event_date` (yyyy-mm-dd, inclusive).
    pub from: Option<String>,
    /// Last `event_date` (inclusive).
    pub to: Option<String>,
    /// One video (`cid`).
    pub video: Option<String>,
}

impl ReportFilter {
    /// The SQL condition (dates filter the partition column, so other days' files are not
    /// read). Values were checked by the caller: dates as yyyy-mm-dd; the video id is quoted.
    fn condition(&self) -> String {
        let mut parts = vec!["TRUE".to_owned()];
        if let Some(from) = &self.from {
            parts.push(format!("event_date >= '{}'", quote(from)));
        }
        if let Some(to) = &self.to {
            parts.push(format!("event_date <= '{}'", quote(to)));
        }
        if let Some(video) = &self.video {
            parts.push(format!("cid = '{}'", quote(video)));
        }
        parts.join(" AND ")
    }
}

fn quote(value: &str) -> String {
    value.replace('\'', "''")
}

/// The metrics over a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Views.
    pub plays: i64,
    /// Views that failed before the first frame.
    pub video_start_failures: i64,
    /// Views abandoned before the first frame.
    pub exits_before_video_start: i64,
    /// Startup time p50, ms.
    pub startup_p50_ms: Option<f64>,
    /// Startup time p95, ms.
    pub startup_p95_ms: Option<f64>,
    /// Stalled time over watch time, percent.
    pub rebuffer_percentage: Option<f64>,
    /// Stalls per minute of watch time.
    pub rebuffers_per_minute: Option<f64>,
    /// Mean encoded bitrate while playing, kbit/s.
    pub average_bitrate_kbps: Option<f64>,
    /// Rung switches per hour of watch time.
    pub bitrate_switches_per_hour: Option<f64>,
    /// Views that started and then failed, percent of plays.
    pub playback_failure_percentage: Option<f64>,
    /// Watch time, ms.
    pub watch_ms: i64,
}

/// One hour of the time series.
#[derive(Debug, Clone, PartialEq)]
pub struct HourPoint {
    /// `YYYY-MM-DD HH`.
    pub hour: String,
    /// Views.
    pub plays: i64,
    /// Startup time p50, ms.
    pub startup_p50_ms: Option<f64>,
    /// Stalled time over watch time, percent.
    pub rebuffer_percentage: Option<f64>,
}

/// Per-view facts, the base of every metric.
fn views_sql(filter: &ReportFilter, by_hour: bool) -> String {
    let hour = if by_hour {
        "min(event_date || ' ' || event_hour) AS hour,"
    } else {
        ""
    };
    format!(
        "SELECT sid, {hour}
            min(CAST(ts AS BIGINT)) AS first_ms,
            max(CAST(ts AS BIGINT)) AS last_ms,
            min(CASE WHEN event_type = 'playing' THEN CAST(ts AS BIGINT) END) AS play_ms,
            min(CASE WHEN event_type = 'error' THEN CAST(ts AS BIGINT) END) AS first_error_ms,
            max(CASE WHEN event_type = 'error' THEN CAST(ts AS BIGINT) END) AS last_error_ms,
            min(CASE WHEN event_type = 'playing' THEN startup_ms END) AS reported_startup_ms,
            sum(CASE WHEN event_type = 'rebuffer_end' THEN coalesce(rebuffer_ms, 0) ELSE 0 END) AS stalled_ms,
            sum(CASE WHEN event_type = 'rebuffer_start' THEN 1 ELSE 0 END) AS stalls,
            sum(CASE WHEN event_type = 'bitrate_change' THEN 1 ELSE 0 END) AS switches,
            sum(CASE WHEN event_type IN ('playing', 'heartbeat') AND br IS NOT NULL THEN CAST(br AS DOUBLE) ELSE 0 END) AS br_sum,
            sum(CASE WHEN event_type IN ('playing', 'heartbeat') AND br IS NOT NULL THEN 1 ELSE 0 END) AS br_count
         FROM qoe_events WHERE {} GROUP BY sid",
        filter.condition()
    )
}

const AGGREGATES: &str = "
    count(*) AS plays,
    sum(CASE WHEN first_error_ms IS NOT NULL AND (play_ms IS NULL OR first_error_ms < play_ms) THEN 1 ELSE 0 END) AS vsf,
    sum(CASE WHEN play_ms IS NULL AND first_error_ms IS NULL THEN 1 ELSE 0 END) AS ebvs,
    approx_percentile_cont(CAST(coalesce(reported_startup_ms, play_ms - first_ms) AS DOUBLE), 0.5) AS startup_p50,
    approx_percentile_cont(CAST(coalesce(reported_startup_ms, play_ms - first_ms) AS DOUBLE), 0.95) AS startup_p95,
    sum(CASE WHEN play_ms IS NOT NULL THEN last_ms - first_ms ELSE 0 END) AS watch_ms,
    sum(CASE WHEN play_ms IS NOT NULL THEN stalled_ms ELSE 0 END) AS stalled_ms,
    sum(CASE WHEN play_ms IS NOT NULL THEN stalls ELSE 0 END) AS stalls,
    sum(switches) AS switches,
    sum(br_sum) / nullif(sum(br_count), 0) AS avg_br,
    sum(CASE WHEN play_ms IS NOT NULL AND last_error_ms IS NOT NULL AND last_error_ms > play_ms THEN 1 ELSE 0 END) AS failed_after_start";

fn int(batch: &RecordBatch, name: &str, row: usize) -> i64 {
    let Some(column) = batch.column_by_name(name) else {
        return 0;
    };
    if column.is_null(row) {
        return 0;
    }
    column
        .as_primitive_opt::<Int64Type>()
        .map(|a| a.value(row))
        .or_else(|| column.as_primitive_opt::<Float64Type>().map(|a| a.value(row) as i64))
        .unwrap_or(0)
}

fn float(batch: &RecordBatch, name: &str, row: usize) -> Option<f64> {
    let column = batch.column_by_name(name)?;
    if column.is_null(row) {
        return None;
    }
    column
        .as_primitive_opt::<Float64Type>()
        .map(|a| a.value(row))
        .or_else(|| column.as_primitive_opt::<Int64Type>().map(|a| a.value(row) as f64))
}

fn ratio(part: i64, whole: i64, scale: f64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * scale / whole as f64)
}

/// The metrics over everything `filter` selects.
///
/// # Errors
/// The lake cannot be read.
pub async fn metrics(lake: &Lake, filter: &ReportFilter) -> Result<Metrics, QueryError> {
    let sql = format!("SELECT {AGGREGATES} FROM ({}) AS views", views_sql(filter, false));
    let batches = lake.sql(&sql).await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(Metrics::default());
    };
    let plays = int(batch, "plays", 0);
    let watch_ms = int(batch, "watch_ms", 0);
    Ok(Metrics {
        plays,
        video_start_failures: int(batch, "vsf", 0),
        exits_before_video_start: int(batch, "ebvs", 0),
        startup_p50_ms: float(batch, "startup_p50", 0),
        startup_p95_ms: float(batch, "startup_p95", 0),
        rebuffer_percentage: ratio(int(batch, "stalled_ms", 0), watch_ms, 100.0),
        rebuffers_per_minute: ratio(int(batch, "stalls", 0), watch_ms, 60_000.0),
        average_bitrate_kbps: float(batch, "avg_br", 0),
        bitrate_switches_per_hour: ratio(int(batch, "switches", 0), watch_ms, 3_600_000.0),
        playback_failure_percentage: ratio(int(batch, "failed_after_start", 0), plays, 100.0),
        watch_ms,
    })
}

/// Plays, startup p50 and rebuffer percentage per hour (of each view's first event).
///
/// # Errors
/// The lake cannot be read.
pub async fn hourly(lake: &Lake, filter: &ReportFilter) -> Result<Vec<HourPoint>, QueryError> {
    let sql = format!(
        "SELECT hour, {AGGREGATES} FROM ({}) AS views GROUP BY hour ORDER BY hour",
        views_sql(filter, true)
    );
    let mut points = Vec::new();
    for batch in lake.sql(&sql).await? {
        let hours = batch
            .column_by_name("hour")
            .and_then(|c| c.as_string_opt::<i32>().cloned());
        for row in 0..batch.num_rows() {
            let hour = hours
                .as_ref()
                .filter(|h| !h.is_null(row))
                .map(|h| h.value(row).to_owned())
                .unwrap_or_default();
            points.push(HourPoint {
                hour,
                plays: int(&batch, "plays", row),
                startup_p50_ms: float(&batch, "startup_p50", row),
                rebuffer_percentage: ratio(int(&batch, "stalled_ms", row), int(&batch, "watch_ms", row), 100.0),
            });
        }
    }
    Ok(points)
}

/// The metrics as text, one per line.
pub fn render(metrics: &Metrics) -> String {
    let pct = |part: i64| ratio(part, metrics.plays, 100.0);
    let show = |v: Option<f64>, unit: &str| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}{unit}"));
    [
        format!("plays                          {}", metrics.plays),
        format!(
            "video start failures           {} ({})",
            metrics.video_start_failures,
            show(pct(metrics.video_start_failures), " %")
        ),
        format!(
            "exits before video start       {} ({})",
            metrics.exits_before_video_start,
            show(pct(metrics.exits_before_video_start), " %")
        ),
        format!("startup time p50               {}", show(metrics.startup_p50_ms, " ms")),
        format!("startup time p95               {}", show(metrics.startup_p95_ms, " ms")),
        format!(
            "rebuffer percentage            {}",
            show(metrics.rebuffer_percentage, " %")
        ),
        format!(
            "rebuffers per minute           {}",
            show(metrics.rebuffers_per_minute, "")
        ),
        format!(
            "average bitrate                {}",
            show(metrics.average_bitrate_kbps, " kbit/s")
        ),
        format!(
            "bitrate switches per hour      {}",
            show(metrics.bitrate_switches_per_hour, "")
        ),
        format!(
            "playback failure percentage    {}",
            show(metrics.playback_failure_percentage, " %")
        ),
        format!(
            "watch time                     {:.1} min",
            metrics.watch_ms as f64 / 60_000.0
        ),
    ]
    .join("\n")
}
