//! `vodsource setup`: creates, idempotently, what the configured deployment needs — the event
//! store's schema, the view store's tables, the object store's bucket or folder, the stream's
//! topics — and checks each can be reached. Safe to run twice, or from several hosts.

use std::sync::Arc;

use anyhow::Context;
use vodsource_commands::ports::ObjectStore;
use vodsource_infra::aws::AwsSettings;
#[cfg(feature = "s3")]
use vodsource_infra::s3::S3ObjectStore;
use vodsource_infra::{open_object_store, StreamUrl};

use crate::config::Config;
use crate::roles::Stores;

/// Creates and checks every store `config` names, printing one line per store.
///
/// # Errors
/// The first store that cannot be created or reached, with its own message.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let aws = AwsSettings::default();
    // Opening the stores runs the event store's migrations and creates DynamoDB tables.
    let stores = Stores::create(config, &aws).await?;
    println!("event store  {}: schema up to date", stores.log.describe());
    println!("view store   {}: tables ready", config.view_store_url());

    let url = config.object_store_url();
    // On S3: the bucket, and which browser origins its CORS rules let in.
    let origins: Vec<String> = config
        .options()
        .cors_origins
        .as_deref()
        .unwrap_or("*")
        .split(',')
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    let (objects, browsers) = match bucket(&url, &aws, &origins).await? {
        Some(prepared) => prepared,
        None => (
            open_object_store(&url, &aws)
                .await
                .context("opening the object store")?,
            String::new(),
        ),
    };
    objects.check().await.context("checking the object store")?;
    println!("object store {}: ready{browsers}", objects.describe());

    let stream = config.stream_url()?;
    if !matches!(stream, StreamUrl::Embedded(_)) {
        let streams = stores.open_stream(&stream, &aws).await?;
        println!(
            "stream       {}: topics qoe-events, video-events ready",
            streams.describe()
        );
    } else {
        println!("stream       embedded: nothing to create");
    }
    Ok(())
}

/// The bucket `url` names, created, with CORS rules for `origins`; `None` for another store.
#[cfg(feature = "s3")]
async fn bucket(
    url: &str,
    aws: &AwsSettings,
    origins: &[String],
) -> anyhow::Result<Option<(Arc<dyn ObjectStore>, String)>> {
    if !url.starts_with("s3://") {
        return Ok(None);
    }
    let store = S3ObjectStore::open(url, aws).await?;
    store.create_bucket().await.context("creating the bucket")?;
    store
        .allow_browsers(origins)
        .await
        .context("setting the bucket's CORS rules")?;
    Ok(Some((
        Arc::new(store),
        format!(" (browsers from {})", origins.join(", ")),
    )))
}

/// Without S3 in this build there is no bucket: opening an `s3://` URL names the feature.
#[cfg(not(feature = "s3"))]
#[allow(clippy::unused_async)]
async fn bucket(
    _url: &str,
    _aws: &AwsSettings,
    _origins: &[String],
) -> anyhow::Result<Option<(Arc<dyn ObjectStore>, String)>> {
    Ok(None)
}
