//! Opening stores from the URLs in configuration.

use std::path::PathBuf;
use std::sync::Arc;

use vodsource_commands::ports::{
    CheckpointStore, EventLog, IdempotencyStore, JobQueue, LeaseStore, ObjectStore, ShardCheckpointStore, StoreError,
    TimeoutStore,
};
use vodsource_projections::ViewStore;

use crate::aws::AwsSettings;
#[cfg(feature = "dynamodb")]
use crate::dynamodb::DynamoViewStore;
use crate::local::LocalObjectStore;
#[cfg(feature = "postgres")]
use crate::postgres::PgEventLog;
#[cfg(feature = "s3")]
use crate::s3::S3ObjectStore;
use crate::sqlite::{SqliteEventLog, SqliteSettings, SqliteViewStore};

/// The error of a URL whose service this build leaves out.
#[cfg(not(all(feature = "postgres", feature = "dynamodb", feature = "s3")))]
fn not_built(service: &str, feature: &str) -> StoreError {
    StoreError::Invalid(format!(
        "this vodsource was built without {service} (Cargo feature `{feature}`); rebuild with it, or use another store"
    ))
}

/// A parsed event store URL.
#[derive(Debug, Clone, PartialEq)]
pub enum EventLogUrl {
    /// `sqlite://<path>[?synchronous=normal&busy_timeout_ms=N]`
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The query string.
        query: String,
    },
    /// `postgres://…[?schema=name]`
    Postgres(String),
}

impl EventLogUrl {
    /// Parses a store URL.
    ///
    /// # Errors
    /// `Invalid` naming the URL when its scheme is not `sqlite` or `postgres`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if path.is_empty() {
                return Err(StoreError::Invalid(format!("{url:?} names no file")));
            }
            return Ok(Self::Sqlite {
                path: PathBuf::from(path),
                query: query.to_owned(),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        Err(StoreError::Invalid(format!(
            "unsupported store URL {:?}: expected sqlite://<file> or postgres://…",
            redact(url)
        )))
    }
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Opens the event store a URL names.
///
/// # Errors
/// `Invalid` for a bad URL; `Unavailable` naming the file or host when it cannot be opened.
pub async fn open_event_log(url: &str) -> Result<Arc<dyn EventLog>, StoreError> {
    match EventLogUrl::parse(url)? {
        EventLogUrl::Sqlite { path, query } => {
            let settings = SqliteSettings::from_query(&query)?;
            Ok(Arc::new(SqliteEventLog::open(path, &settings).await?))
        }
        #[cfg(feature = "postgres")]
        EventLogUrl::Postgres(url) => Ok(Arc::new(PgEventLog::connect(&url).await?)),
        #[cfg(not(feature = "postgres"))]
        EventLogUrl::Postgres(_) => Err(not_built("PostgreSQL", "postgres")),
    }
}

/// Everything a view store keeps: views, leases, checkpoints, deadlines, the job queue and
/// idempotency keys.
pub trait Views:
    ViewStore + LeaseStore + CheckpointStore + ShardCheckpointStore + TimeoutStore + JobQueue + IdempotencyStore
{
}

impl<T> Views for T where
    T: ViewStore + LeaseStore + CheckpointStore + ShardCheckpointStore + TimeoutStore + JobQueue + IdempotencyStore
{
}

/// Opens the view store a URL names: `sqlite://<file>` or `dynamodb://[?prefix=P]` (tables
/// `<P>views` and `<P>state`, created first when `create` — `vodsource setup` — and otherwise
/// required to exist, so a role needs no CreateTable permission; region, credentials and
/// endpoint from the AWS environment, overridden by `aws`).
///
/// # Errors
/// `Invalid` for another scheme or option; `Unavailable` naming the file or DynamoDB when it
/// cannot be opened.
pub async fn open_view_store(url: &str, aws: &AwsSettings, create: bool) -> Result<Arc<dyn Views>, StoreError> {
    if let Some(rest) = url.strip_prefix("dynamodb://") {
        let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !host.is_empty() {
            return Err(StoreError::Invalid(format!(
                "{url:?}: DynamoDB takes its region and endpoint from the AWS environment (AWS_REGION, AWS_ENDPOINT_URL), not the URL"
            )));
        }
        let mut prefix = String::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("prefix", value))
                    if value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
                {
                    prefix = value.to_owned();
                }
                _ => {
                    return Err(StoreError::Invalid(format!(
                    "{url:?}: unknown option {pair:?} (dynamodb://?prefix=P, P of letters, digits, '-', '_' and '.')"
                )))
                }
            }
        }
        #[cfg(feature = "dynamodb")]
        {
            let config = crate::aws::load(aws).await.map_err(StoreError::Invalid)?;
            let store = DynamoViewStore::new(&config, &prefix);
            if create {
                store.create_tables().await?;
            }
            store
                .check()
                .await
                .map_err(|e| StoreError::unavailable(format!("{e} (`vodsource setup` creates the tables)")))?;
            return Ok(Arc::new(store));
        }
        #[cfg(not(feature = "dynamodb"))]
        {
            let _ = (aws, create, prefix);
            return Err(not_built("DynamoDB", "dynamodb"));
        }
    }
    match EventLogUrl::parse(url)? {
        EventLogUrl::Sqlite { path, query } => Ok(Arc::new(
            SqliteViewStore::open(path, &SqliteSettings::from_query(&query)?).await?,
        )),
        EventLogUrl::Postgres(_) => Err(StoreError::Invalid(
            "the view store is sqlite://<file> or dynamodb://[?prefix=P], not PostgreSQL".into(),
        )),
    }
}

/// Opens the object store a URL names: `file://<folder>` or `s3://bucket[/prefix]` (AWS
/// settings from `aws`, which defaults to the SDK's standard chain).
///
/// # Errors
/// `Invalid` for another scheme or a bad bucket; `Unavailable` naming the folder when it
/// cannot be created.
pub async fn open_object_store(url: &str, aws: &AwsSettings) -> Result<Arc<dyn ObjectStore>, StoreError> {
    if url.starts_with("s3://") {
        #[cfg(feature = "s3")]
        return Ok(Arc::new(S3ObjectStore::open(url, aws).await?));
        #[cfg(not(feature = "s3"))]
        return Err(not_built("S3", "s3"));
    }
    #[cfg(not(feature = "s3"))]
    let _ = aws;
    match url.strip_prefix("file://") {
        Some(path) if !path.is_empty() => Ok(Arc::new(LocalObjectStore::open(path).await?)),
        _ => Err(StoreError::Invalid(format!(
            "unsupported object store URL {:?}: expected file://<folder> or s3://bucket[/prefix]",
            redact(url)
        ))),
    }
}
