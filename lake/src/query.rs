//! Local SQL over the lake with DataFusion: the same table names (`qoe_events`,
//! `video_events`), columns and partition columns (`event_date`, `event_hour`, strings) as the
//! Athena DDL, so a query written for Athena runs here unchanged, and a filter on the
//! partition columns skips whole folders, as partition projection does in Athena.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::columnar;
use crate::tables::TABLES;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The lake folder cannot be used.
    #[error("lake {path}: {message}")]
    Lake {
        /// The folder.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Planning or running the SQL failed (the message names the problem: a table, a column,
    /// a syntax error).
    #[error("{0}")]
    Sql(#[from] DataFusionError),
}

/// The lake's tables, ready for SQL.
pub struct Lake {
    ctx: SessionContext,
}

impl Lake {
    /// The lake under a local object store folder (`<root>/lake/<table>/…`). Tables without
    /// files yet are empty, not missing.
    ///
    /// # Errors
    /// The folder cannot be created or read.
    pub async fn open_local(root: &Path) -> Result<Self, QueryError> {
        let mut locations = Vec::new();
        for table in TABLES {
            let dir = root.join("lake").join(table.name);
            let lake_error = |e: std::io::Error| QueryError::Lake {
                path: dir.display().to_string(),
                message: e.to_string(),
            };
            std::fs::create_dir_all(&dir).map_err(lake_error)?;
            let dir = dir.canonicalize().map_err(lake_error)?;
            locations.push(ListingTableUrl::parse(format!("{}/", dir.display()))?);
        }
        Self::with_tables(SessionContext::new_with_config(Self::config()), locations)
    }

    /// The lake under `base` (`s3://bucket[/prefix]`, holding `lake/<table>/…`), read through
    /// `store`, a client rooted at the bucket.
    ///
    /// # Errors
    /// `base` is not a URL with a bucket.
    pub async fn open_remote(base: &str, store: Arc<dyn object_store::ObjectStore>) -> Result<Self, QueryError> {
        let lake_error = |message: &str| QueryError::Lake {
            path: base.to_owned(),
            message: message.to_owned(),
        };
        let (scheme, rest) = base.split_once("://").ok_or_else(|| lake_error("not a URL"))?;
        let bucket = rest
            .split('/')
            .next()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| lake_error("names no bucket"))?;
        let ctx = SessionContext::new_with_config(Self::config());
        let root = ObjectStoreUrl::parse(format!("{scheme}://{bucket}"))?;
        ctx.register_object_store(root.as_ref(), store);
        let base = base.trim_end_matches('/');
        let locations = TABLES
            .iter()
            .map(|table| ListingTableUrl::parse(format!("{base}/lake/{}/", table.name)))
            .collect::<Result<Vec<_>, _>>()?;
        Self::with_tables(ctx, locations)
    }

    fn config() -> SessionConfig {
        SessionConfig::new().with_information_schema(true)
    }

    /// Registers each table of [`TABLES`] at its location.
    fn with_tables(ctx: SessionContext, locations: Vec<ListingTableUrl>) -> Result<Self, QueryError> {
        for (table, url) in TABLES.iter().zip(locations) {
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![
                    ("event_date".to_owned(), DataType::Utf8),
                    ("event_hour".to_owned(), DataType::Utf8),
                ]);
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(columnar::schema(table));
            ctx.register_table(table.name, Arc::new(ListingTable::try_new(config)?))?;
        }
        Ok(Self { ctx })
    }

    /// Runs one SQL statement and returns its rows.
    ///
    /// # Errors
    /// The statement does not plan (unknown table or column, syntax) or fails to run.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        Ok(self.ctx.sql(sql).await?.collect().await?)
    }

    /// The plan DataFusion would run, with the files it would read (to see pruning).
    ///
    /// # Errors
    /// As [`Lake::sql`].
    pub async fn explain(&self, sql: &str) -> Result<String, QueryError> {
        let batches = self.sql(&format!("EXPLAIN {sql}")).await?;
        Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .map_err(DataFusionError::from)?
            .to_string())
    }
}

/// How to print rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per line.
    Json,
}

/// Renders `batches` as `format`.
///
/// # Errors
/// A value the writer cannot render.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String, QueryError> {
    let arrow = |e: datafusion::arrow::error::ArrowError| QueryError::Sql(e.into());
    match format {
        Format::Table => Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches)
            .map_err(arrow)?
            .to_string()),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for batch in batches {
                    writer.write(batch).map_err(arrow)?;
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
                for batch in batches {
                    writer.write(batch).map_err(arrow)?;
                }
                writer.finish().map_err(arrow)?;
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
    }
}
