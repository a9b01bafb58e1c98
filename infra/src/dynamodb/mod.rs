//! The view store on DynamoDB (aws-sdk-dynamodb): views, projection state, leases and
//! checkpoints in two tables per deployment, `<prefix>views` and `<prefix>state`.
//!
//! **`<prefix>views`** (partition key `pk`, sort key `sk`, both strings) holds two kinds of
//! item:
//! - a document: `pk = <view>#<generation>#<shard>`, `sk = <key>`, with `v` (its stream
//!   version) and `b` (its JSON). The shard (one hex digit from a hash of the key) spreads a
//!   view over sixteen partition keys, so a replay writing a million documents is not held to
//!   one partition's throughput; reading in key order merges the sixteen.
//! - an index entry: `pk = <view>#<generation>@<partition>`, `sk = <sort> NUL <key>`: the
//!   adjacency-list form of a secondary index, because a document can be listed under several
//!   partitions at once (`all`, `status:…`, `owner:…`, each tag), which one GSI cannot do.
//!   NUL sorts below every other character, so the order is (sort key, document key), as the
//!   port requires.
//! - a partition of a generation's index: `pk = <view>#<generation>$parts`, `sk = <partition>`,
//!   written before the first entry under that partition. Removing a generation queries these
//!   and then each partition, so it costs what the generation holds, never a scan of the table.
//!
//! **`<prefix>state`** (partition key `pk`) holds `projection#<name>` (live and shadow
//! generation and position, failure), `lease#<name>`, `checkpoint#<name>` and `shard#<name>`.
//!
//! **Writes.** A live document change is one `TransactWriteItems`: a check that the writer
//! holds the projection's lease, the document put on condition that its stored version is
//! older (so a replay or a duplicate changes nothing and nothing moves back), and its index
//! entries, so a document and its entries never disagree. The checkpoint follows in a second
//! transaction, again fenced by the lease and on condition that the generation is still the
//! one written. A crash between the two replays the batch, which the version conditions make
//! harmless. A shadow generation being rebuilt has one writer and nobody reading it, so its
//! changes go by `BatchWriteItem` (index entries before documents, so a crash never leaves a
//! document without its entries), 25 items a request, several requests in flight.
//!
//! Throttling (`ProvisionedThroughputExceeded`, `ThrottlingException`) is retried by the SDK
//! with exponential backoff and jitter, up to ten attempts; unprocessed batch items are sent
//! again with backoff.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::types::{TransactWriteItem, WriteRequest};
use aws_sdk_dynamodb::Client;
use futures::{stream, StreamExt, TryStreamExt};
use vodsource_commands::ports::StoreError;

mod codec;
mod coordination;
mod errors;
mod generations;
mod idempotency;
mod schema;
mod views;

use codec::{key, s, Item};
use errors::{lease_lost, unavailable};

/// Requests in flight for one commit or rebuild step.
const IN_FLIGHT: usize = 16;
/// Items in one `BatchWriteItem`.
const BATCH_WRITE: usize = 25;
/// Keys in one `BatchGetItem`.
const BATCH_GET: usize = 100;

/// The view store, leases and checkpoints on DynamoDB.
#[derive(Clone)]
pub struct DynamoViewStore {
    client: Client,
    views: String,
    state: String,
    /// Index partitions (their `pk`) this process knows are listed under their generation.
    listed: Arc<Mutex<HashSet<String>>>,
}

impl DynamoViewStore {
    /// A store on the tables `<prefix>views` and `<prefix>state` (see [`Self::create_tables`]).
    pub fn new(config: &SdkConfig, prefix: &str) -> Self {
        let config = aws_sdk_dynamodb::config::Builder::from(config)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(10)
                    .with_initial_backoff(Duration::from_millis(50)),
            )
            .build();
        Self {
            client: Client::from_conf(config),
            views: format!("{prefix}views"),
            state: format!("{prefix}state"),
            listed: Arc::default(),
        }
    }

    /// The names of the two tables.
    pub fn tables(&self) -> [&str; 2] {
        [&self.views, &self.state]
    }

    /// Whether the tables can be reached.
    ///
    /// # Errors
    /// `Unavailable` naming the table.
    pub async fn check(&self) -> Result<(), StoreError> {
        for table in self.tables() {
            self.client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| unavailable(&format!("table {table}"), e))?;
        }
        Ok(())
    }

    async fn get_state(&self, pk: String) -> Result<Option<Item>, StoreError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.state)
            .set_key(Some(key(pk, None)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?
            .item)
    }

    /// Runs a transaction; a cancellation is `Ok(Some(reasons))`, one code per item.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Option<Vec<String>>, StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(None),
            Err(e) => {
                if let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(cancelled)) = e.as_service_error() {
                    let reasons = cancelled
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None").to_owned())
                        .collect::<Vec<_>>();
                    if reasons.iter().any(|r| r == "ConditionalCheckFailed") {
                        return Ok(Some(reasons));
                    }
                }
                Err(unavailable("TransactWriteItems", e))
            }
        }
    }

    /// Runs `items` as one transaction after a check that `owner` holds the lease `name`.
    /// Returns false when another condition of the items failed (nothing written).
    ///
    /// # Errors
    /// `LeaseLost` when the lease check failed; `Unavailable`.
    async fn transact_fenced(
        &self,
        name: &str,
        owner: &str,
        items: Vec<TransactWriteItem>,
    ) -> Result<bool, StoreError> {
        let mut all = vec![self.lease_check(name, owner)?];
        all.extend(items);
        match self.transact(all).await? {
            None => Ok(true),
            Some(reasons) if reasons.first().map(String::as_str) == Some("ConditionalCheckFailed") => {
                Err(lease_lost(name, owner))
            }
            Some(_) => Ok(false),
        }
    }

    /// Writes `requests` to the views table in batches, several in flight, sending
    /// unprocessed items again with backoff.
    async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        let chunks: Vec<Vec<WriteRequest>> = requests.chunks(BATCH_WRITE).map(<[_]>::to_vec).collect();
        stream::iter(chunks)
            .map(|chunk| self.batch_write_one(chunk))
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    async fn batch_write_one(&self, mut chunk: Vec<WriteRequest>) -> Result<(), StoreError> {
        let mut backoff = Duration::from_millis(20);
        for _ in 0..12 {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.views, chunk)
                .send()
                .await
                .map_err(|e| unavailable("BatchWriteItem", e))?;
            chunk = out
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.views))
                .unwrap_or_default();
            if chunk.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        Err(StoreError::unavailable(format!(
            "DynamoDB BatchWriteItem: {} items still unprocessed after 12 attempts (throttled)",
            chunk.len()
        )))
    }

    /// Every item of `pk` in the views table, in `sk` order, from after `after`.
    async fn query_all(
        &self,
        pk: String,
        after: Option<String>,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.views)
                .consistent_read(true)
                .expression_attribute_values(":pk", s(pk.clone()))
                .set_exclusive_start_key(start.take());
            request = match &after {
                Some(after) => request
                    .key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", s(after.clone())),
                None => request.key_condition_expression("pk = :pk"),
            };
            if let Some(limit) = limit {
                request = request.limit(i32::try_from(limit - out.len()).unwrap_or(i32::MAX));
            }
            let page = request.send().await.map_err(|e| unavailable("Query", e))?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() || limit.is_some_and(|l| out.len() >= l) {
                return Ok(out);
            }
        }
    }
}
