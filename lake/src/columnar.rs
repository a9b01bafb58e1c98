//! Stream records to Arrow columns: the lake tables' Arrow schemas (from [`crate::tables`]'s one
//! column list) and builders that take a record as it travels on its stream (JSON) straight
//! into column builders, borrowing strings from the record instead of building a
//! [`vodsource_qoe::QoeEvent`] per row.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use crate::tables::{ColumnType, Table, QOE_EVENTS, VIDEO_EVENTS};
use vodsource_qoe::wire::WireEvent;

/// Why a record could not become a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// The record is not the table's JSON.
    #[error("not a {table} record: {message}")]
    Malformed {
        /// The table.
        table: &'static str,
        /// What the parser said.
        message: String,
    },
    /// A row of one table offered to another's builders.
    #[error("a {row} row cannot go into {table}")]
    WrongTable {
        /// The builders' table.
        table: &'static str,
        /// The row's table.
        row: &'static str,
    },
}

/// The Arrow type of a lake column: UTF-8, signed integers, booleans, and timestamps in
/// milliseconds adjusted to UTC (Parquet `TIMESTAMP(MILLIS, true)`, Athena `timestamp`).
pub fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::String => DataType::Utf8,
        ColumnType::BigInt => DataType::Int64,
        ColumnType::Int => DataType::Int32,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    }
}

/// The Arrow schema of `table`'s files (partition columns excluded: they are in the path).
pub fn schema(table: &Table) -> SchemaRef {
    Arc::new(Schema::new(
        table
            .columns
            .iter()
            .map(|c| Field::new(c.name, arrow_type(c.ty), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

enum Column {
    Str(StringBuilder),
    I64(Int64Builder),
    I32(Int32Builder),
    Bool(BooleanBuilder),
    Time(TimestampMillisecondBuilder),
}

impl Column {
    fn new(ty: ColumnType, capacity: usize) -> Self {
        match ty {
            ColumnType::String => Self::Str(StringBuilder::with_capacity(capacity, capacity * 16)),
            ColumnType::BigInt => Self::I64(Int64Builder::with_capacity(capacity)),
            ColumnType::Int => Self::I32(Int32Builder::with_capacity(capacity)),
            ColumnType::Boolean => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Timestamp => {
                Self::Time(TimestampMillisecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
        }
    }

    /// The column so far; the builder starts over with the same capacity, so the next batch
    /// fills buffers of the right size instead of growing them by doubling (copies and fresh
    /// pages were a fifth of the writer's time).
    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Str(b) => {
                let array = b.finish();
                let bytes = array.value_data().len();
                *b = StringBuilder::with_capacity(array.len(), bytes + bytes / 8);
                Arc::new(array)
            }
            Self::I64(b) => {
                let array = b.finish();
                *b = Int64Builder::with_capacity(array.len());
                Arc::new(array)
            }
            Self::I32(b) => {
                let array = b.finish();
                *b = Int32Builder::with_capacity(array.len());
                Arc::new(array)
            }
            Self::Bool(b) => {
                let array = b.finish();
                *b = BooleanBuilder::with_capacity(array.len());
                Arc::new(array)
            }
            Self::Time(b) => {
                let array = b.finish();
                *b = TimestampMillisecondBuilder::with_capacity(array.len()).with_timezone("UTC");
                Arc::new(array)
            }
        }
    }
}

/// Column builders for one table: rows go in, record batches come out.
pub struct Rows {
    table: &'static Table,
    schema: SchemaRef,
    columns: Vec<Column>,
    len: usize,
}

impl Rows {
    /// Empty builders for `table`, sized for `capacity` rows.
    pub fn new(table: &'static Table, capacity: usize) -> Self {
        Self {
            table,
            schema: schema(table),
            columns: table.columns.iter().map(|c| Column::new(c.ty, capacity)).collect(),
            len: 0,
        }
    }

    /// Rows appended since the last [`Rows::finish`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a parsed row. A row of another table is refused (and nothing appended).
    ///
    /// # Errors
    /// The row belongs to another table.
    pub fn push(&mut self, row: &Row<'_>) -> Result<(), RowError> {
        if row.table().name != self.table.name {
            return Err(RowError::WrongTable {
                table: self.table.name,
                row: row.table().name,
            });
        }
        let mut cells = Cells::new(&mut self.columns);
        match row {
            Row::QoeWire(row) => append_wire(row, &mut cells),
            Row::Qoe(row) => row.append(&mut cells),
            Row::Video(row) => row.append(&mut cells),
        }
        self.len += 1;
        Ok(())
    }

    /// Parses and appends one stream record (its JSON); returns its event time.
    ///
    /// # Errors
    /// The record is not this table's JSON (nothing appended).
    pub fn push_json(&mut self, record: &[u8]) -> Result<i64, RowError> {
        let row = Row::parse(self.table, record)?;
        self.push(&row)?;
        Ok(row.time())
    }

    /// The rows so far as a record batch; the builders start over.
    ///
    /// # Errors
    /// Never for rows appended through [`Rows::push_json`] (a test holds the row types to the
    /// schema); the error names the mismatch otherwise.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let arrays = self.columns.iter_mut().map(Column::finish).collect();
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
    }
}

/// One record of a lake table, parsed from its stream JSON with strings borrowed from it.
pub enum Row<'a> {
    /// A QoE event in the stream's binary format ([`vodsource_qoe::wire`]).
    QoeWire(Box<WireEvent<'a>>),
    /// A QoE event as JSON (records written before the binary format, or by other producers).
    Qoe(Box<QoeRow<'a>>),
    /// A relayed video event.
    Video(Box<VideoRow<'a>>),
}

impl<'a> Row<'a> {
    /// Parses `record` as a row of `table`.
    ///
    /// # Errors
    /// The record is not the table's JSON.
    pub fn parse(table: &'static Table, record: &'a [u8]) -> Result<Self, RowError> {
        let malformed = |e: serde_json::Error| RowError::Malformed {
            table: table.name,
            message: e.to_string(),
        };
        if table.name == QOE_EVENTS.name && record.first() != Some(&b'{') {
            vodsource_qoe::wire::decode(record)
                .map(|r| Self::QoeWire(Box::new(r)))
                .map_err(|e| RowError::Malformed {
                    table: table.name,
                    message: e.to_string(),
                })
        } else if table.name == QOE_EVENTS.name {
            serde_json::from_slice(record)
                .map(|r| Self::Qoe(Box::new(r)))
                .map_err(malformed)
        } else if table.name == VIDEO_EVENTS.name {
            serde_json::from_slice(record)
                .map(|r| Self::Video(Box::new(r)))
                .map_err(malformed)
        } else {
            Err(RowError::Malformed {
                table: table.name,
                message: "the lake has no such table".into(),
            })
        }
    }

    /// Its table.
    pub fn table(&self) -> &'static Table {
        match self {
            Self::QoeWire(_) | Self::Qoe(_) => &QOE_EVENTS,
            Self::Video(_) => &VIDEO_EVENTS,
        }
    }

    /// Its event id folded to 64 bits (the halves of the UUID xored): what the sink
    /// de-duplicates by. `None` for an id that is not a UUID.
    pub fn dedup_key(&self) -> Option<u64> {
        let id = match self {
            Self::QoeWire(row) => row.event_id,
            Self::Qoe(row) => uuid::Uuid::parse_str(&row.event_id).ok()?,
            Self::Video(row) => uuid::Uuid::parse_str(&row.event_id).ok()?,
        };
        let (high, low) = id.as_u64_pair();
        Some(high ^ low)
    }

    /// Its event time, ms since the epoch (UTC): what picks its lake partition.
    pub fn time(&self) -> i64 {
        match self {
            Self::QoeWire(row) => row.ts,
            Self::Qoe(row) => row.ts,
            Self::Video(row) => row.occurred_at,
        }
    }
}

/// Appends one row's cells in column order. A cell of the wrong type is a bug in this module;
/// it appends a null so the batch's own check (`RecordBatch::try_new` on a non-nullable
/// column, or a length mismatch) reports it rather than a panic in a sink.
struct Cells<'c> {
    columns: &'c mut [Column],
    at: usize,
}

impl<'c> Cells<'c> {
    fn new(columns: &'c mut [Column]) -> Self {
        Self { columns, at: 0 }
    }

    fn next(&mut self) -> Option<&mut Column> {
        let column = self.columns.get_mut(self.at);
        self.at += 1;
        column
    }

    fn str(&mut self, value: Option<&str>) {
        if let Some(Column::Str(b)) = self.next() {
            b.append_option(value);
        }
    }

    fn i64(&mut self, value: Option<i64>) {
        if let Some(Column::I64(b)) = self.next() {
            b.append_option(value);
        }
    }

    fn i32(&mut self, value: Option<i32>) {
        if let Some(Column::I32(b)) = self.next() {
            b.append_option(value);
        }
    }

    fn bool(&mut self, value: Option<bool>) {
        if let Some(Column::Bool(b)) = self.next() {
            b.append_option(value);
        }
    }

    fn time(&mut self, value: i64) {
        if let Some(Column::Time(b)) = self.next() {
            b.append_value(value);
        }
    }
}

/// A QoE event as the beacon endpoint puts it on the stream (the fields of
/// [`vodsource_qoe::QoeEvent`], already validated), with borrowed strings.
#[derive(Deserialize)]
#[doc(hidden)]
pub struct QoeRow<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    sid: Cow<'a, str>,
    #[serde(borrow)]
    cid: Cow<'a, str>,
    #[serde(default, borrow)]
    viewer_id: Option<Cow<'a, str>>,
    ts: i64,
    #[serde(default)]
    received_at: i64,
    #[serde(default)]
    position_ms: Option<i64>,
    #[serde(default)]
    duration_ms: Option<i64>,
    #[serde(default)]
    br: Option<i32>,
    #[serde(default)]
    bl: Option<i32>,
    #[serde(default)]
    mtp: Option<i32>,
    #[serde(default, borrow)]
    ot: Option<Cow<'a, str>>,
    #[serde(default)]
    su: Option<bool>,
    #[serde(default)]
    bs: Option<bool>,
    #[serde(default)]
    startup_ms: Option<i32>,
    #[serde(default)]
    rebuffer_ms: Option<i32>,
    #[serde(default, borrow)]
    error_code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error_message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    player_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    player_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    device_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    os: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    browser: Option<Cow<'a, str>>,
}

impl QoeRow<'_> {
    /// In [`QOE_EVENTS`]' column order.
    fn append(&self, cells: &mut Cells<'_>) {
        cells.str(Some(&self.event_id));
        cells.str(Some(&self.event_type));
        cells.str(Some(&self.sid));
        cells.str(Some(&self.cid));
        cells.str(self.viewer_id.as_deref());
        cells.time(self.ts);
        cells.time(self.received_at);
        cells.i64(self.position_ms);
        cells.i64(self.duration_ms);
        cells.i32(self.br);
        cells.i32(self.bl);
        cells.i32(self.mtp);
        cells.str(self.ot.as_deref());
        cells.bool(self.su);
        cells.bool(self.bs);
        cells.i32(self.startup_ms);
        cells.i32(self.rebuffer_ms);
        cells.str(self.error_code.as_deref());
        cells.str(self.error_message.as_deref());
        cells.str(self.player_name.as_deref());
        cells.str(self.player_version.as_deref());
        cells.str(self.device_type.as_deref());
        cells.str(self.os.as_deref());
        cells.str(self.browser.as_deref());
    }
}

/// In [`QOE_EVENTS`]' column order. Validation keeps every number inside the signed types.
fn append_wire(e: &WireEvent<'_>, cells: &mut Cells<'_>) {
    let mut id = uuid::Uuid::encode_buffer();
    cells.str(Some(e.event_id.hyphenated().encode_lower(&mut id)));
    cells.str(Some(e.event_type.as_str()));
    cells.str(Some(e.sid));
    cells.str(Some(e.cid));
    cells.str(e.viewer_id);
    cells.time(e.ts);
    cells.time(e.received_at);
    let i64_of = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    let i32_of = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    cells.i64(i64_of(e.position_ms));
    cells.i64(i64_of(e.duration_ms));
    cells.i32(i32_of(e.br));
    cells.i32(i32_of(e.bl));
    cells.i32(i32_of(e.mtp));
    cells.str(e.ot.map(vodsource_qoe::ObjectType::as_str));
    cells.bool(e.su);
    cells.bool(e.bs);
    cells.i32(i32_of(e.startup_ms));
    cells.i32(i32_of(e.rebuffer_ms));
    cells.str(e.error_code);
    cells.str(e.error_message);
    cells.str(e.player_name);
    cells.str(e.player_version);
    cells.str(e.device_type);
    cells.str(e.os);
    cells.str(e.browser);
}

/// A stored event as the relay puts it on `video-events` (`RecordedEvent`'s JSON).
#[derive(Deserialize)]
#[doc(hidden)]
pub struct VideoRow<'a> {
    position: i64,
    #[serde(borrow)]
    stream_id: Cow<'a, str>,
    version: i64,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    schema_version: i32,
    #[serde(deserialize_with = "rfc3339_ms")]
    occurred_at: i64,
    #[serde(default)]
    metadata: Metadata<'a>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

#[derive(Deserialize, Default)]
struct Metadata<'a> {
    #[serde(default, borrow)]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    causation_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    actor: Option<Cow<'a, str>>,
}

fn rfc3339_ms<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let text = Cow::<'de, str>::deserialize(deserializer)?;
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|t| t.timestamp_millis())
        .map_err(serde::de::Error::custom)
}

impl VideoRow<'_> {
    /// In [`VIDEO_EVENTS`]' column order.
    fn append(&self, cells: &mut Cells<'_>) {
        cells.str(Some(&self.event_id));
        cells.i64(Some(self.position));
        cells.str(Some(&self.stream_id));
        cells.i64(Some(self.version));
        cells.str(Some(&self.event_type));
        cells.i32(Some(self.schema_version));
        cells.time(self.occurred_at);
        cells.str(self.metadata.correlation_id.as_deref());
        cells.str(self.metadata.causation_id.as_deref());
        cells.str(self.metadata.actor.as_deref());
        // A payload that was text rather than JSON is relayed as a JSON string: store the text.
        let payload = self.payload.get();
        match serde_json::from_str::<Cow<'_, str>>(payload) {
            Ok(text) if payload.starts_with('"') => cells.str(Some(&text)),
            _ => cells.str(Some(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, TimestampMillisecondType};

    const QOE: &str = r#"{"event_id":"0192f0c4-0000-7000-8000-000000000001","event_type":"heartbeat","sid":"s-1","cid":"v-1","viewer_id":"ann","ts":1763856000000,"received_at":1763856000100,"position_ms":5000,"br":2800,"su":false,"player_name":"hls.js","os":"Linux \"x\""}"#;

    #[test]
    fn a_qoe_record_fills_every_column_in_schema_order() {
        let mut rows = Rows::new(&QOE_EVENTS, 4);
        assert_eq!(rows.push_json(QOE.as_bytes()), Ok(1_763_856_000_000));
        let minimal = r#"{"event_id":"0192f0c4-0000-7000-8000-000000000002","event_type":"session_start","sid":"s-1","cid":"v-1","ts":1763856000001,"received_at":1763856000101}"#;
        assert!(rows.push_json(minimal.as_bytes()).is_ok());
        let batch = rows.finish().expect("the rows match the schema");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.num_columns(), QOE_EVENTS.columns.len());
        let column = |name: &str| batch.column_by_name(name).expect(name).clone();
        assert_eq!(column("br").as_primitive::<Int32Type>().value(0), 2800);
        assert!(column("br").is_null(1));
        assert_eq!(
            column("os").as_string::<i32>().value(0),
            "Linux \"x\"",
            "escaped text is unescaped"
        );
        assert_eq!(
            column("received_at")
                .as_primitive::<TimestampMillisecondType>()
                .value(1),
            1_763_856_000_101
        );
        assert!(rows.is_empty(), "the builders start over");
    }

    #[test]
    fn binary_and_json_records_make_the_same_rows() {
        let event: vodsource_qoe::QoeEvent = serde_json::from_str(QOE).expect("event");
        let mut json = Rows::new(&QOE_EVENTS, 1);
        json.push_json(QOE.as_bytes()).expect("json row");
        let mut binary = Rows::new(&QOE_EVENTS, 1);
        binary
            .push_json(&vodsource_qoe::wire::encode(&event))
            .expect("binary row");
        assert_eq!(json.finish().expect("batch"), binary.finish().expect("batch"));
    }

    #[test]
    fn a_record_that_is_not_the_tables_json_is_refused_and_leaves_no_partial_row() {
        let mut rows = Rows::new(&QOE_EVENTS, 4);
        let error = rows.push_json(br#"{"event_id":"x","sid":"s"}"#).expect_err("refused");
        assert!(error.to_string().contains("not a qoe_events record"), "{error}");
        assert!(rows.push_json(b"not json").is_err());
        assert!(rows.push_json(QOE.as_bytes()).is_ok());
        assert_eq!(rows.finish().expect("batch").num_rows(), 1);
    }

    #[test]
    fn a_relayed_event_fills_the_video_events_columns() {
        let record = r#"{"position":7,"stream_id":"v-1","stream_type":"video","version":3,"event_id":"0192f0c4-0000-7000-8000-000000000003","event_type":"VideoPublished","schema_version":1,"occurred_at":"2026-11-23T01:02:03.456Z","metadata":{"actor":"ann"},"payload":{"published_at":"2026-11-23T01:02:03Z"}}"#;
        let mut rows = Rows::new(&VIDEO_EVENTS, 1);
        let time = rows.push_json(record.as_bytes()).expect("row");
        assert_eq!(time, 1_795_395_723_456);
        let batch = rows.finish().expect("batch");
        let payload = batch.column_by_name("payload").expect("payload");
        assert_eq!(
            payload.as_string::<i32>().value(0),
            r#"{"published_at":"2026-11-23T01:02:03Z"}"#
        );
        assert!(batch.column_by_name("correlation_id").expect("column").is_null(0));
        assert_eq!(
            batch
                .column_by_name("actor")
                .expect("actor")
                .as_string::<i32>()
                .value(0),
            "ann"
        );
    }

    #[test]
    fn the_arrow_schema_is_the_lake_column_list() {
        let schema = schema(&QOE_EVENTS);
        assert_eq!(schema.fields().len(), QOE_EVENTS.columns.len());
        let ts = schema.field_with_name("ts").expect("ts");
        assert_eq!(
            ts.data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        assert!(!ts.is_nullable());
        assert!(schema.field_with_name("viewer_id").expect("viewer").is_nullable());
    }
}
