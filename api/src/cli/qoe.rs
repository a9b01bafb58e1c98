//! `vodsource qoe query "<SQL>"` and `vodsource qoe report`: local SQL over the QoE lake, with
//! the table names and partitions Athena uses.

use std::path::PathBuf;

use anyhow::Context;
#[cfg(feature = "s3")]
use vodsource_infra::aws::AwsSettings;
#[cfg(feature = "s3")]
use vodsource_infra::s3::S3ObjectStore;
use vodsource_lake::query::{render, Format, Lake};
use vodsource_lake::report::{self, ReportFilter};

use crate::config::Config;

/// `vodsource qoe` commands.
#[derive(Debug, clap::Subcommand)]
pub enum Qoe {
    /// Run one SQL statement over the lake (tables qoe_events and video_events, partition
    /// columns event_date and event_hour, as in Athena).
    Query {
        /// The statement, e.g. "SELECT event_type, count(*) FROM qoe_events GROUP BY 1".
        sql: String,
        /// Output: table, csv or json (one object per line).
        #[arg(long, default_value = "table", value_parser = parse_format)]
        format: Format,
        /// Print the plan (with the files it reads) instead of running it.
        #[arg(long)]
        explain: bool,
    },
    /// Print the standard QoE metrics (as Mux Data defines them) and chart startup time and
    /// rebuffer percentage per hour as a PNG.
    Report {
        /// First day (yyyy-mm-dd, UTC, inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Last day (yyyy-mm-dd, UTC, inclusive).
        #[arg(long)]
        to: Option<String>,
        /// Only this video.
        #[arg(long)]
        video: Option<String>,
        /// Where to write the chart [default: qoe-report.png].
        #[arg(long, default_value = "qoe-report.png")]
        chart: PathBuf,
    },
}

/// The lake in the configured object store (`lake/`).
async fn open_lake(config: &Config) -> anyhow::Result<Lake> {
    {
        let url = config.object_store_url();
        if url.starts_with("s3://") {
            #[cfg(feature = "s3")]
            {
                let store = S3ObjectStore::open(&url, &AwsSettings::default()).await?;
                return Ok(Lake::open_remote(&store.location().url(), store.client()).await?);
            }
            #[cfg(not(feature = "s3"))]
            anyhow::bail!("this vodsource was built without S3 (Cargo feature `s3`): the lake at {url} cannot be read");
        }
        let Some(root) = url.strip_prefix("file://").filter(|p| !p.is_empty()) else {
            anyhow::bail!("the lake's object store must be file:///path or s3://bucket[/prefix], got {url}");
        };
        Ok(Lake::open_local(&PathBuf::from(root)).await?)
    }
}

fn parse_format(text: &str) -> Result<Format, String> {
    match text {
        "table" => Ok(Format::Table),
        "csv" => Ok(Format::Csv),
        "json" => Ok(Format::Json),
        other => Err(format!("unknown format {other:?}: use table, csv or json")),
    }
}

fn date(flag: &str, value: Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(text) = &value {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .with_context(|| format!("{flag} must be a date like 2026-11-23, got {text:?}"))?;
    }
    Ok(value)
}

/// Runs a `qoe` command.
///
/// # Errors
/// A bad argument, an unreadable lake, SQL that does not plan or run.
pub async fn run(config: &Config, command: Qoe) -> anyhow::Result<()> {
    match command {
        Qoe::Query { sql, format, explain } => {
            let lake = open_lake(config).await?;
            if explain {
                println!("{}", lake.explain(&sql).await?);
            } else {
                let batches = lake.sql(&sql).await?;
                println!("{}", render(&batches, format)?.trim_end());
            }
            Ok(())
        }
        Qoe::Report { from, to, video, chart } => {
            let filter = ReportFilter {
                from: date("--from", from)?,
                to: date("--to", to)?,
                video,
            };
            let lake = open_lake(config).await?;
            let metrics = report::metrics(&lake, &filter).await?;
            println!("{}", report::render(&metrics));
            let points = report::hourly(&lake, &filter).await?;
            vodsource_lake::chart::draw(&points, &chart)
                .with_context(|| format!("drawing the chart {}", chart.display()))?;
            println!("chart                          {}", chart.display());
            Ok(())
        }
    }
}
