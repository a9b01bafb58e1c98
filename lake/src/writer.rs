//! One Parquet file of the lake, written as records arrive: rows gather in Arrow builders and
//! go to the Parquet writer a batch at a time, so an open file holds its encoded pages and at
//! most one batch of rows in memory.
//!
//! Files are ZSTD-compressed, dictionary-encoded where it pays (Parquet falls back to plain
//! per page otherwise), with page-level statistics and the page index, so a reader (Athena,
//! DataFusion) can skip row groups and pages by `ts`, `cid` or `event_type`.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::columnar::{Row, RowError, Rows};
use crate::tables::{ColumnType, Table};

/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 8192;
/// Rows per row group (Parquet's default): one dictionary per column for a million rows, 4 %
/// smaller than 256 Ki-row groups at the same speed; pages (1 MiB) still carry statistics for
/// skipping.
const ROW_GROUP_ROWS: usize = 1024 * 1024;
/// ZSTD level: 3 is the library default, the usual speed and size balance.
const ZSTD_LEVEL: i32 = 1;

/// Why a lake file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LakeFileError {
    /// Local file I/O failed.
    #[error("lake file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The Parquet writer failed.
    #[error("writing Parquet: {0}")]
    Parquet(#[from] ParquetError),
    /// A row of another table.
    #[error(transparent)]
    Row(#[from] RowError),
    /// Rows did not match the schema (a bug in the row types).
    #[error("building Arrow columns: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// The writer settings of every lake file of `table`.
pub fn writer_properties(table: &Table) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default()))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("vodsource {}", env!("CARGO_PKG_VERSION")));
    // Unique per row by definition: a dictionary would only cost the time to build and drop it.
    // Lengths apart from bytes (all 36) leave ZSTD a plain run of hex: 6 % smaller than PLAIN.
    builder = builder
        .set_column_dictionary_enabled(ColumnPath::from("event_id"), false)
        .set_column_encoding(ColumnPath::from("event_id"), Encoding::DELTA_LENGTH_BYTE_ARRAY);
    for column in table.columns {
        // Times rise nearly monotonically within a partition's rows: deltas pack them in a few
        // bits, where a dictionary of distinct milliseconds would not pay.
        if column.ty == ColumnType::Timestamp {
            let path = ColumnPath::from(column.name);
            builder = builder
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
        }
    }
    builder.build()
}

/// A lake file being written to a local path.
pub struct LakeFileWriter {
    path: PathBuf,
    rows: Rows,
    writer: ArrowWriter<File>,
    count: u64,
}

impl LakeFileWriter {
    /// Creates (or truncates) `path` for rows of `table`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path, table: &'static Table) -> Result<Self, LakeFileError> {
        let file = File::create(path).map_err(|source| LakeFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let rows = Rows::new(table, BATCH_ROWS);
        let writer = ArrowWriter::try_new(file, crate::columnar::schema(table), Some(writer_properties(table)))?;
        Ok(Self {
            path: path.to_owned(),
            rows,
            writer,
            count: 0,
        })
    }

    /// Appends a parsed row.
    ///
    /// # Errors
    /// The row is of another table, or writing failed.
    pub fn push(&mut self, row: &Row<'_>) -> Result<(), LakeFileError> {
        self.rows.push(row)?;
        self.count += 1;
        if self.rows.len() >= BATCH_ROWS {
            self.write_batch()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), LakeFileError> {
        if !self.rows.is_empty() {
            let batch = self.rows.finish()?;
            self.writer.write(&batch)?;
        }
        Ok(())
    }

    /// Rows appended.
    pub fn rows(&self) -> u64 {
        self.count
    }

    /// About how large the file would be if closed now: what is written, what is encoded in
    /// memory, and an estimate for rows not yet encoded.
    pub fn estimated_size(&self) -> u64 {
        let pending = self.rows.len() as u64 * 40;
        self.writer.bytes_written() as u64 + self.writer.in_progress_size() as u64 + pending
    }

    /// Abandons the file: its rows are not written and the local file is removed.
    pub fn discard(self) {
        let path = self.path.clone();
        drop(self);
        let _ = std::fs::remove_file(path);
    }

    /// Writes the remaining rows and the footer, syncs, and returns the path and file size.
    ///
    /// # Errors
    /// Writing or syncing failed.
    pub fn close(mut self) -> Result<(PathBuf, u64), LakeFileError> {
        self.write_batch()?;
        let file = self.writer.into_inner()?;
        let io = |source| LakeFileError::Io {
            path: self.path.clone(),
            source,
        };
        file.sync_all().map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        Ok((self.path, size))
    }
}
