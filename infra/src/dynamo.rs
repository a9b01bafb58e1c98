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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, DeleteRequest, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put, PutRequest, ScalarAttributeType,
    TableStatus, TimeToLiveSpecification, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use futures::{stream, StreamExt, TryStreamExt};
use vodsource_commands::ports::{
    CheckpointStore, IdempotencyStore, JobQueue, LeaseStore, Reservation, ShardCheckpoint, ShardCheckpointStore,
    StoreError, StoredResponse, TimeoutStore,
};
use vodsource_projections::{
    Doc, DocChange, IndexCursor, IndexKey, IndexedDoc, ProjectionState, ProjectionStatus, ViewStore,
};

/// Shards of a view's documents.
const SHARDS: u32 = 16;
/// Requests in flight for one commit or rebuild step.
const IN_FLIGHT: usize = 16;
/// Items in one `BatchWriteItem`.
const BATCH_WRITE: usize = 25;
/// Keys in one `BatchGetItem`.
const BATCH_GET: usize = 100;
/// The state table's index of deadlines and ready jobs.
const DUE_INDEX: &str = "due";

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn key(pk: String, sk: Option<String>) -> Item {
    let mut item = HashMap::from([("pk".to_owned(), s(pk))]);
    if let Some(sk) = sk {
        item.insert("sk".to_owned(), s(sk));
    }
    item
}

/// The shard of a document key (FNV-1a, so it is the same in every process and version).
fn shard(key: &str) -> u32 {
    let hash = key
        .bytes()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    hash % SHARDS
}

fn doc_pk(view: &str, generation: u32, shard: u32) -> String {
    format!("{view}#{generation}#{shard:x}")
}

fn index_pk(view: &str, generation: u32, partition: &str) -> String {
    format!("{view}#{generation}@{partition}")
}

/// The partition key of the list of a generation's index partitions.
fn parts_pk(view: &str, generation: u32) -> String {
    format!("{view}#{generation}$parts")
}

fn index_sk(sort: &str, key: &str) -> String {
    format!("{sort}\u{0}{key}")
}

fn unavailable<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    what: &str,
    e: &SdkError<E, R>,
) -> StoreError {
    let detail = match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!("{}: {}", err.code().unwrap_or("error"), err.message().unwrap_or(""))
        }
        other => format!("{other:?}"),
    };
    StoreError::Unavailable(format!("DynamoDB {what}: {detail}"))
}

fn invalid(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unexpected(format!("DynamoDB request: {e}"))
}

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

    /// Creates the tables (on-demand capacity) unless they exist, and waits until they are
    /// active. Safe to run twice, or from two processes at once.
    ///
    /// # Errors
    /// `Unavailable` when DynamoDB refuses or cannot be reached.
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        for (table, sorted) in [(&self.views, true), (&self.state, false)] {
            let attribute = |name: &str| {
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(invalid)
            };
            let element = |name: &str, kind: KeyType| {
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build()
                    .map_err(invalid)
            };
            let mut request = self
                .client
                .create_table()
                .table_name(table.as_str())
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(attribute("pk")?)
                .key_schema(element("pk", KeyType::Hash)?);
            if sorted {
                request = request
                    .attribute_definitions(attribute("sk")?)
                    .key_schema(element("sk", KeyType::Range)?);
            } else {
                // Deadlines and ready jobs by time: a sparse index of the items that carry
                // a queue name `q` and a time `at`.
                request = request
                    .attribute_definitions(attribute("q")?)
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name("at")
                            .attribute_type(ScalarAttributeType::N)
                            .build()
                            .map_err(invalid)?,
                    )
                    .global_secondary_indexes(
                        GlobalSecondaryIndex::builder()
                            .index_name(DUE_INDEX)
                            .key_schema(element("q", KeyType::Hash)?)
                            .key_schema(element("at", KeyType::Range)?)
                            .projection(Projection::builder().projection_type(ProjectionType::All).build())
                            .build()
                            .map_err(invalid)?,
                    );
            }
            match request.send().await {
                Ok(_) => tracing::info!(table = %table, "DynamoDB table created"),
                Err(e) if e.code() == Some("ResourceInUseException") => {}
                Err(e) => return Err(unavailable(&format!("CreateTable {table}"), &e)),
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                let described = self
                    .client
                    .describe_table()
                    .table_name(table.as_str())
                    .send()
                    .await
                    .map_err(|e| unavailable(&format!("DescribeTable {table}"), &e))?;
                let status = described.table().and_then(|t| t.table_status()).cloned();
                if status == Some(TableStatus::Active) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(StoreError::Unavailable(format!(
                        "DynamoDB table {table} is still {status:?} after 120 s"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        // Expired idempotency keys go by DynamoDB's TTL.
        let ttl = self
            .client
            .update_time_to_live()
            .table_name(&self.state)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("expires_s")
                    .build()
                    .map_err(invalid)?,
            )
            .send()
            .await;
        match ttl {
            Ok(_) => Ok(()),
            // Already on (DynamoDB refuses to set it twice).
            Err(e) if e.code() == Some("ValidationException") => Ok(()),
            Err(e) => Err(unavailable(&format!("UpdateTimeToLive {}", self.state), &e)),
        }
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
                .map_err(|e| unavailable(&format!("table {table}"), &e))?;
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
            .map_err(|e| unavailable("GetItem", &e))?
            .item)
    }

    /// The projection's item, created (generation 1, position 0) when missing.
    async fn projection_item(&self, name: &str) -> Result<Item, StoreError> {
        let pk = format!("projection#{name}");
        if let Some(item) = self.get_state(pk.clone()).await? {
            return Ok(item);
        }
        let mut item = key(pk.clone(), None);
        item.insert("gen".into(), n(1));
        item.insert("pos".into(), n(0));
        item.insert("updated_at".into(), n(Utc::now().timestamp_micros()));
        let put = self
            .client
            .put_item()
            .table_name(&self.state)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => {}
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {}
            Err(e) => return Err(unavailable("PutItem", &e)),
        }
        self.get_state(pk)
            .await?
            .ok_or_else(|| StoreError::Unexpected(format!("projection {name} vanished as it was created")))
    }

    async fn live_generation(&self, view: &str) -> Result<u32, StoreError> {
        Ok(get_n(&self.projection_item(view).await?, "gen").unwrap_or(1))
    }

    /// A check, inside a transaction, that `owner` holds the lease on `name`.
    fn lease_check(&self, name: &str, owner: &str) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name(&self.state)
                    .set_key(Some(key(format!("lease#{name}"), None)))
                    .condition_expression("#o = :owner")
                    .expression_attribute_names("#o", "owner")
                    .expression_attribute_values(":owner", s(owner))
                    .build()
                    .map_err(invalid)?,
            )
            .build())
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
                Err(unavailable("TransactWriteItems", &e))
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

    /// Applies `update` (its key and condition included) to the projection item of `name`,
    /// fenced by the lease; a failed condition is a `Conflict` on `expected`.
    async fn update_projection(
        &self,
        name: &str,
        owner: &str,
        update: Update,
        expected: u32,
    ) -> Result<(), StoreError> {
        let update = TransactWriteItem::builder().update(update).build();
        if self.transact_fenced(name, owner, vec![update]).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                stream_id: format!("view:{name}"),
                expected: u64::from(expected),
                actual: 0,
            })
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
                .map_err(|e| unavailable("BatchWriteItem", &e))?;
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
        Err(StoreError::Unavailable(format!(
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
            let page = request.send().await.map_err(|e| unavailable("Query", &e))?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() || limit.is_some_and(|l| out.len() >= l) {
                return Ok(out);
            }
        }
    }

    /// Lists, before the first entry goes under it, each index partition of `changes` that
    /// this process has not listed yet (a put of an item that exists changes nothing, so two
    /// processes listing one partition is harmless).
    async fn list_partitions(&self, view: &str, generation: u32, changes: &[DocChange]) -> Result<(), StoreError> {
        let mut new = BTreeSet::new();
        {
            let listed = self.listed.lock().map_err(|_| invalid("partition list poisoned"))?;
            for change in changes {
                if let DocChange::Put(doc) = change {
                    for entry in doc.index.iter().flatten() {
                        if !listed.contains(&index_pk(view, generation, &entry.partition)) {
                            new.insert(entry.partition.as_str());
                        }
                    }
                }
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let requests = new
            .iter()
            .map(|partition| put_request(key(parts_pk(view, generation), Some((*partition).to_owned()))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.batch_write(requests).await?;
        let mut listed = self.listed.lock().map_err(|_| invalid("partition list poisoned"))?;
        listed.extend(new.iter().map(|partition| index_pk(view, generation, partition)));
        Ok(())
    }

    /// The index partitions listed under `generation` of `view`.
    async fn partitions(&self, view: &str, generation: u32) -> Result<Vec<String>, StoreError> {
        Ok(self
            .query_all(parts_pk(view, generation), None, None)
            .await?
            .iter()
            .filter_map(|item| get_s(item, "sk").map(ToOwned::to_owned))
            .collect())
    }

    /// Deletes every item of `generation` of `view`: its documents (sixteen queries), the
    /// entries of each listed index partition, and last the list (so an interrupted delete
    /// can be run again).
    async fn delete_generation(&self, view: &str, generation: u32) -> Result<(), StoreError> {
        let mut keys: Vec<Item> = Vec::new();
        for shard in 0..SHARDS {
            keys.extend(
                self.query_all(doc_pk(view, generation, shard), None, None)
                    .await?
                    .iter()
                    .map(item_key),
            );
        }
        let partitions = self.partitions(view, generation).await?;
        for partition in &partitions {
            keys.extend(
                self.query_all(index_pk(view, generation, partition), None, None)
                    .await?
                    .iter()
                    .map(item_key),
            );
        }
        self.batch_write(
            keys.into_iter()
                .map(delete_request)
                .collect::<Result<Vec<_>, StoreError>>()?,
        )
        .await?;
        self.batch_write(
            partitions
                .into_iter()
                .map(|partition| delete_request(key(parts_pk(view, generation), Some(partition))))
                .collect::<Result<Vec<_>, StoreError>>()?,
        )
        .await?;
        if let Ok(mut listed) = self.listed.lock() {
            let prefix = format!("{view}#{generation}@");
            listed.retain(|pk| !pk.starts_with(&prefix));
        }
        Ok(())
    }

    /// How many items of `generation` of `view` the table holds — documents, index entries
    /// and the partition list — by a scan of the whole table (for checks, not for serving).
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn generation_items(&self, view: &str, generation: u32) -> Result<usize, StoreError> {
        let mut count = 0;
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.views)
                .consistent_read(true)
                .filter_expression("begins_with(pk, :doc) OR begins_with(pk, :index) OR pk = :parts")
                .expression_attribute_values(":doc", s(format!("{view}#{generation}#")))
                .expression_attribute_values(":index", s(format!("{view}#{generation}@")))
                .expression_attribute_values(":parts", s(parts_pk(view, generation)))
                .projection_expression("pk")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Scan", &e))?;
            count += page.items.unwrap_or_default().len();
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(count);
            }
        }
    }

    /// Documents of `generation` of `view` for `keys`.
    async fn get_docs(&self, view: &str, generation: u32, keys: &[String]) -> Result<HashMap<String, Doc>, StoreError> {
        let mut wanted: Vec<Item> = {
            let mut seen = std::collections::HashSet::new();
            keys.iter()
                .filter(|k| seen.insert(k.as_str()))
                .map(|k| key(doc_pk(view, generation, shard(k)), Some(k.clone())))
                .collect()
        };
        let mut out = HashMap::with_capacity(wanted.len());
        let mut backoff = Duration::from_millis(20);
        while !wanted.is_empty() {
            let rest = wanted.split_off(wanted.len().min(BATCH_GET));
            let batch = std::mem::replace(&mut wanted, rest);
            let page = self
                .client
                .batch_get_item()
                .request_items(
                    &self.views,
                    KeysAndAttributes::builder()
                        .set_keys(Some(batch))
                        .consistent_read(true)
                        .build()
                        .map_err(invalid)?,
                )
                .send()
                .await
                .map_err(|e| unavailable("BatchGetItem", &e))?;
            for item in page
                .responses
                .and_then(|mut r| r.remove(&self.views))
                .unwrap_or_default()
            {
                if let Some(doc) = to_doc(&item) {
                    out.insert(doc.key.clone(), doc);
                }
            }
            if let Some(left) = page.unprocessed_keys.and_then(|mut u| u.remove(&self.views)) {
                if !left.keys().is_empty() {
                    wanted.extend(left.keys().iter().cloned());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        Ok(out)
    }

    /// Every document of the live generation of `view`, in key order, with its index
    /// entries (for comparisons).
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn dump(&self, view: &str) -> Result<Vec<Doc>, StoreError> {
        let generation = self.live_generation(view).await?;
        let mut docs: Vec<Doc> = Vec::new();
        for shard in 0..SHARDS {
            docs.extend(
                self.query_all(doc_pk(view, generation, shard), None, None)
                    .await?
                    .iter()
                    .filter_map(to_doc),
            );
        }
        docs.sort_by(|a, b| a.key.cmp(&b.key));
        let mut index: HashMap<String, Vec<IndexKey>> = HashMap::new();
        for partition in self.partitions(view, generation).await? {
            for item in self
                .query_all(index_pk(view, generation, &partition), None, None)
                .await?
            {
                let (Some(doc), Some(sort)) = (get_s(&item, "k"), get_s(&item, "s")) else {
                    continue;
                };
                index.entry(doc.to_owned()).or_default().push(IndexKey {
                    partition: partition.clone(),
                    sort: sort.to_owned(),
                });
            }
        }
        for entries in index.values_mut() {
            entries.sort_by(|a, b| (&a.partition, &a.sort).cmp(&(&b.partition, &b.sort)));
        }
        for doc in &mut docs {
            doc.index = index.remove(&doc.key);
        }
        // Entries whose document is gone show as a document without a body.
        docs.extend(crate::sqlite::orphans(index));
        docs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(docs)
    }

    /// The state of `view` for a commit: which generation field `generation` is.
    async fn generation_field(&self, view: &str, generation: u32) -> Result<&'static str, StoreError> {
        let item = self.projection_item(view).await?;
        let live: u32 = get_n(&item, "gen").unwrap_or(1);
        if live == generation {
            return Ok("gen");
        }
        if get_n::<u32>(&item, "shadow_gen") == Some(generation) {
            return Ok("shadow_gen");
        }
        Err(StoreError::Conflict {
            stream_id: format!("view:{view}"),
            expected: u64::from(generation),
            actual: u64::from(live),
        })
    }

    /// Who holds (or last held) the lease `name`, and until when (Unix microseconds).
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        Ok(self
            .get_state(format!("lease#{name}"))
            .await?
            .and_then(|item| Some((get_s(&item, "owner")?.to_owned(), get_n(&item, "until").unwrap_or(0)))))
    }

    /// One live document change as a transaction fenced by the lease. Returns false when
    /// the stored document is as new or newer (nothing written).
    async fn commit_live(
        &self,
        view: &str,
        generation: u32,
        owner: &str,
        change: DocChange,
    ) -> Result<bool, StoreError> {
        let writes = DocWrites::of(view, generation, change);
        let put = |item: Item| Put::builder().table_name(&self.views).set_item(Some(item)).build();
        let delete = |key: Item| Delete::builder().table_name(&self.views).set_key(Some(key)).build();
        let mut items = Vec::with_capacity(1 + writes.unindex.len() + writes.index.len());
        items.push(match writes.doc {
            DocWrite::Put(item, version) => TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.views)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(pk) OR v < :v")
                        .expression_attribute_values(":v", n(version))
                        .build()
                        .map_err(invalid)?,
                )
                .build(),
            DocWrite::Delete(key) => TransactWriteItem::builder()
                .delete(delete(key).map_err(invalid)?)
                .build(),
        });
        for key in writes.unindex {
            items.push(
                TransactWriteItem::builder()
                    .delete(delete(key).map_err(invalid)?)
                    .build(),
            );
        }
        for item in writes.index {
            items.push(TransactWriteItem::builder().put(put(item).map_err(invalid)?).build());
        }
        self.transact_fenced(view, owner, items).await
    }
}

/// A document write of a commit.
enum DocWrite {
    /// The document's item, and its version (the condition of a live put).
    Put(Item, u64),
    /// The document's key.
    Delete(Item),
}

/// The items one document change writes: the document, and its index entries to remove
/// (keys) and to add (items).
struct DocWrites {
    doc: DocWrite,
    unindex: Vec<Item>,
    index: Vec<Item>,
}

impl DocWrites {
    fn of(view: &str, generation: u32, change: DocChange) -> Self {
        let (doc_key, doc, added, removed) = match change {
            DocChange::Put(doc) => {
                let mut item = key(doc_pk(view, generation, shard(&doc.key)), Some(doc.key.clone()));
                item.insert("v".into(), n(doc.version));
                item.insert("b".into(), s(doc.body));
                (
                    doc.key,
                    DocWrite::Put(item, doc.version),
                    doc.index.unwrap_or_default(),
                    doc.unindex,
                )
            }
            DocChange::Delete { key: k, unindex } => {
                let item = key(doc_pk(view, generation, shard(&k)), Some(k.clone()));
                (k, DocWrite::Delete(item), Vec::new(), unindex)
            }
        };
        Self {
            doc,
            unindex: removed
                .iter()
                .map(|entry| {
                    key(
                        index_pk(view, generation, &entry.partition),
                        Some(index_sk(&entry.sort, &doc_key)),
                    )
                })
                .collect(),
            index: added
                .iter()
                .map(|entry| index_item(view, generation, entry, &doc_key))
                .collect(),
        }
    }
}

fn lease_lost(name: &str, owner: &str) -> StoreError {
    tracing::warn!(name, owner, "lease no longer held");
    StoreError::LeaseLost(name.to_owned())
}

/// A put of `item` in a `BatchWriteItem`.
fn put_request(item: Item) -> Result<WriteRequest, StoreError> {
    Ok(WriteRequest::builder()
        .put_request(PutRequest::builder().set_item(Some(item)).build().map_err(invalid)?)
        .build())
}

/// A delete of the item at `key` in a `BatchWriteItem`.
fn delete_request(key: Item) -> Result<WriteRequest, StoreError> {
    Ok(WriteRequest::builder()
        .delete_request(DeleteRequest::builder().set_key(Some(key)).build().map_err(invalid)?)
        .build())
}

fn item_key(item: &Item) -> Item {
    item.iter()
        .filter(|(name, _)| *name == "pk" || *name == "sk")
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

fn index_item(view: &str, generation: u32, entry: &IndexKey, doc_key: &str) -> Item {
    let mut item = key(
        index_pk(view, generation, &entry.partition),
        Some(index_sk(&entry.sort, doc_key)),
    );
    item.insert("k".into(), s(doc_key));
    item.insert("s".into(), s(entry.sort.clone()));
    item
}

fn to_doc(item: &Item) -> Option<Doc> {
    Some(Doc {
        key: get_s(item, "sk")?.to_owned(),
        version: get_n(item, "v")?,
        body: get_s(item, "b")?.to_owned(),
        index: None,
        unindex: Vec::new(),
    })
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

#[async_trait]
impl ViewStore for DynamoViewStore {
    async fn projection(&self, name: &str) -> Result<ProjectionState, StoreError> {
        let item = self.projection_item(name).await?;
        let status = match (get_n::<u64>(&item, "failed_pos"), get_s(&item, "error")) {
            (Some(position), Some(error)) => ProjectionStatus::Failed {
                position,
                error: error.to_owned(),
            },
            _ => ProjectionStatus::Running,
        };
        Ok(ProjectionState {
            name: name.to_owned(),
            generation: get_n(&item, "gen").unwrap_or(1),
            position: get_n(&item, "pos").unwrap_or(0),
            status,
            updated_at: get_n::<i64>(&item, "updated_at").and_then(DateTime::from_timestamp_micros),
        })
    }

    async fn get_many(&self, view: &str, generation: u32, keys: &[String]) -> Result<HashMap<String, Doc>, StoreError> {
        self.get_docs(view, generation, keys).await
    }

    async fn get(&self, view: &str, key: &str) -> Result<Option<Doc>, StoreError> {
        let generation = self.live_generation(view).await?;
        Ok(self.get_docs(view, generation, &[key.to_owned()]).await?.remove(key))
    }

    async fn query(
        &self,
        view: &str,
        partition: &str,
        before: Option<&IndexCursor>,
        limit: usize,
    ) -> Result<Vec<IndexedDoc>, StoreError> {
        let generation = self.live_generation(view).await?;
        let mut out = Vec::new();
        let mut below = before.map(|c| index_sk(&c.sort, &c.key));
        while out.len() < limit {
            let want = limit - out.len();
            let mut request = self
                .client
                .query()
                .table_name(&self.views)
                .consistent_read(true)
                .scan_index_forward(false)
                .limit(i32::try_from(want).unwrap_or(i32::MAX))
                .expression_attribute_values(":pk", s(index_pk(view, generation, partition)));
            request = match &below {
                Some(below) => request
                    .key_condition_expression("pk = :pk AND sk < :below")
                    .expression_attribute_values(":below", s(below.clone())),
                None => request.key_condition_expression("pk = :pk"),
            };
            let page = request.send().await.map_err(|e| unavailable("Query", &e))?;
            let entries = page.items.unwrap_or_default();
            let exhausted = page.last_evaluated_key.is_none_or(|k| k.is_empty());
            let Some(last) = entries.last() else { break };
            below = get_s(last, "sk").map(ToOwned::to_owned);
            let keys: Vec<String> = entries
                .iter()
                .filter_map(|e| get_s(e, "k").map(ToOwned::to_owned))
                .collect();
            let mut docs = self.get_docs(view, generation, &keys).await?;
            for entry in &entries {
                let (Some(key), Some(sort)) = (get_s(entry, "k"), get_s(entry, "s")) else {
                    continue;
                };
                // An entry whose document is gone (a delete racing this read) is skipped.
                if let Some(doc) = docs.remove(key) {
                    out.push(IndexedDoc {
                        sort: sort.to_owned(),
                        doc,
                    });
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(out)
    }

    async fn scan(&self, view: &str, after: Option<&str>, limit: usize) -> Result<Vec<Doc>, StoreError> {
        let generation = self.live_generation(view).await?;
        let after = after.map(ToOwned::to_owned);
        let shards = stream::iter(0..SHARDS)
            .map(|shard| self.query_all(doc_pk(view, generation, shard), after.clone(), Some(limit)))
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        let mut docs: Vec<Doc> = shards.iter().flatten().filter_map(to_doc).collect();
        docs.sort_by(|a, b| a.key.cmp(&b.key));
        docs.truncate(limit);
        Ok(docs)
    }

    async fn commit(
        &self,
        view: &str,
        generation: u32,
        owner: &str,
        changes: Vec<DocChange>,
        position: u64,
    ) -> Result<(), StoreError> {
        let field = self.generation_field(view, generation).await?;
        self.list_partitions(view, generation, &changes).await?;
        if field == "gen" {
            stream::iter(changes)
                .map(|change| self.commit_live(view, generation, owner, change))
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<Vec<bool>>()
                .await?;
        } else {
            if self.lease_holder(view).await?.map(|(holder, _)| holder).as_deref() != Some(owner) {
                return Err(lease_lost(view, owner));
            }
            let mut entries = Vec::new();
            let mut docs = Vec::new();
            for change in changes {
                let writes = DocWrites::of(view, generation, change);
                docs.push(match writes.doc {
                    DocWrite::Put(item, _) => put_request(item)?,
                    DocWrite::Delete(key) => delete_request(key)?,
                });
                for key in writes.unindex {
                    entries.push(delete_request(key)?);
                }
                for item in writes.index {
                    entries.push(put_request(item)?);
                }
            }
            // Entries first: a crash between the two leaves documents at their old versions,
            // which the replay brings forward (re-adding or re-removing entries harmlessly).
            self.batch_write(entries).await?;
            self.batch_write(docs).await?;
        }
        let position_field = if field == "gen" { "pos" } else { "shadow_pos" };
        let update = Update::builder()
            .table_name(&self.state)
            .set_key(Some(key(format!("projection#{view}"), None)))
            .update_expression(format!("SET {position_field} = :p, updated_at = :now"))
            .condition_expression(format!("{field} = :g"))
            .expression_attribute_values(":p", n(position))
            .expression_attribute_values(":now", n(micros(Utc::now())))
            .expression_attribute_values(":g", n(generation))
            .build()
            .map_err(invalid)?;
        self.update_projection(view, owner, update, generation).await
    }

    async fn record_failure(&self, name: &str, position: u64, error: &str) -> Result<(), StoreError> {
        self.projection_item(name).await?;
        self.client
            .update_item()
            .table_name(&self.state)
            .set_key(Some(key(format!("projection#{name}"), None)))
            .update_expression("SET failed_pos = :p, #e = :e, updated_at = :now")
            .expression_attribute_names("#e", "error")
            .expression_attribute_values(":p", n(position))
            .expression_attribute_values(":e", s(error))
            .expression_attribute_values(":now", n(micros(Utc::now())))
            .send()
            .await
            .map_err(|e| unavailable("UpdateItem", &e))?;
        Ok(())
    }

    async fn begin_rebuild(&self, name: &str, owner: &str) -> Result<u32, StoreError> {
        let item = self.projection_item(name).await?;
        let live: u32 = get_n(&item, "gen").unwrap_or(1);
        let shadow: Option<u32> = get_n(&item, "shadow_gen");
        let next = live.max(shadow.unwrap_or(0)) + 1;
        let update = Update::builder()
            .table_name(&self.state)
            .set_key(Some(key(format!("projection#{name}"), None)))
            .update_expression("SET shadow_gen = :next, shadow_pos = :zero")
            .condition_expression("gen = :live")
            .expression_attribute_values(":next", n(next))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":live", n(live))
            .build()
            .map_err(invalid)?;
        self.update_projection(name, owner, update, live).await?;
        // Whatever an unfinished rebuild left behind goes.
        if let Some(old) = shadow {
            self.delete_generation(name, old).await?;
        }
        Ok(next)
    }

    async fn finish_rebuild(&self, name: &str, owner: &str, generation: u32) -> Result<(), StoreError> {
        let item = self.projection_item(name).await?;
        let live: u32 = get_n(&item, "gen").unwrap_or(1);
        let update = Update::builder()
            .table_name(&self.state)
            .set_key(Some(key(format!("projection#{name}"), None)))
            .update_expression(
                "SET gen = shadow_gen, pos = shadow_pos, updated_at = :now \
                 REMOVE shadow_gen, shadow_pos, failed_pos, #e",
            )
            .condition_expression("shadow_gen = :g")
            .expression_attribute_names("#e", "error")
            .expression_attribute_values(":g", n(generation))
            .expression_attribute_values(":now", n(micros(Utc::now())))
            .build()
            .map_err(invalid)?;
        self.update_projection(name, owner, update, generation).await?;
        if live != generation {
            self.delete_generation(name, live).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for DynamoViewStore {
    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut item = key(format!("lease#{name}"), None);
        item.insert("owner".into(), s(owner));
        item.insert("until".into(), n(micros(until)));
        let put = self
            .client
            .put_item()
            .table_name(&self.state)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #o = :owner OR #u < :now")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#u", "until")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":now", n(micros(now)))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(unavailable("PutItem (lease)", &e)),
        }
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.state)
            .set_key(Some(key(format!("lease#{name}"), None)))
            .condition_expression("#o = :owner")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(unavailable("DeleteItem (lease)", &e)),
        }
    }
}

impl DynamoViewStore {
    /// Puts `item` into the state table, provided `owner` holds the lease `name` (or, when
    /// `free_ok`, nobody does).
    async fn put_fenced(&self, name: &str, owner: &str, item: Item, free_ok: bool) -> Result<(), StoreError> {
        let holder = self.lease_holder(name).await?;
        match holder {
            None if free_ok => {
                self.client
                    .put_item()
                    .table_name(&self.state)
                    .set_item(Some(item))
                    .send()
                    .await
                    .map_err(|e| unavailable("PutItem", &e))?;
                Ok(())
            }
            Some((holder, _)) if holder == owner => {
                let put = Put::builder()
                    .table_name(&self.state)
                    .set_item(Some(item))
                    .build()
                    .map_err(invalid)?;
                self.transact_fenced(name, owner, vec![TransactWriteItem::builder().put(put).build()])
                    .await
                    .map(|_| ())
            }
            _ => Err(lease_lost(name, owner)),
        }
    }
}

#[async_trait]
impl CheckpointStore for DynamoViewStore {
    async fn load_checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self
            .get_state(format!("checkpoint#{name}"))
            .await?
            .and_then(|item| get_n(&item, "position"))
            .unwrap_or(0))
    }

    async fn save_checkpoint(&self, name: &str, owner: &str, position: u64) -> Result<(), StoreError> {
        let mut item = key(format!("checkpoint#{name}"), None);
        item.insert("position".into(), n(position));
        self.put_fenced(name, owner, item, true).await
    }
}

#[async_trait]
impl ShardCheckpointStore for DynamoViewStore {
    async fn load_shard_checkpoint(&self, name: &str) -> Result<Option<ShardCheckpoint>, StoreError> {
        Ok(self.get_state(format!("shard#{name}")).await?.and_then(|item| {
            Some(ShardCheckpoint {
                sequence: get_s(&item, "sequence")?.to_owned(),
                offset: get_n(&item, "offset")?,
            })
        }))
    }

    async fn save_shard_checkpoint(
        &self,
        name: &str,
        owner: &str,
        checkpoint: &ShardCheckpoint,
    ) -> Result<(), StoreError> {
        let mut item = key(format!("shard#{name}"), None);
        item.insert("sequence".into(), s(checkpoint.sequence.clone()));
        item.insert("offset".into(), n(checkpoint.offset));
        self.put_fenced(name, owner, item, false).await
    }
}

impl DynamoViewStore {
    /// Sets `queue`'s time for `video_id` unless a later attempt holds it.
    async fn set_per_video(
        &self,
        queue: &str,
        video_id: &str,
        attempt: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = key(format!("{queue}#{video_id}"), None);
        item.insert("q".into(), s(queue));
        item.insert("at".into(), n(micros(at)));
        item.insert("att".into(), n(attempt));
        item.insert("video".into(), s(video_id));
        let put = self
            .client
            .put_item()
            .table_name(&self.state)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR att <= :a")
            .expression_attribute_values(":a", n(attempt))
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(unavailable("PutItem", &e)),
        }
    }

    async fn clear_per_video(&self, queue: &str, video_id: &str, attempt: u32) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.state)
            .set_key(Some(key(format!("{queue}#{video_id}"), None)))
            .condition_expression("att <= :a")
            .expression_attribute_values(":a", n(attempt))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(unavailable("DeleteItem", &e)),
        }
    }

    async fn due_per_video(
        &self,
        queue: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, u32, DateTime<Utc>)>, StoreError> {
        let page = self
            .client
            .query()
            .table_name(&self.state)
            .index_name(DUE_INDEX)
            .key_condition_expression("q = :q AND #at <= :now")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":q", s(queue))
            .expression_attribute_values(":now", n(micros(now)))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| unavailable("Query (due)", &e))?;
        Ok(page
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| {
                Some((
                    get_s(item, "video")?.to_owned(),
                    get_n(item, "att")?,
                    DateTime::from_timestamp_micros(get_n(item, "at")?)?,
                ))
            })
            .collect())
    }
}

#[async_trait]
impl TimeoutStore for DynamoViewStore {
    async fn set_deadline(&self, video_id: &str, attempt: u32, deadline: DateTime<Utc>) -> Result<(), StoreError> {
        self.set_per_video("timeout", video_id, attempt, deadline).await
    }

    async fn clear_deadline(&self, video_id: &str, attempt: u32) -> Result<(), StoreError> {
        self.clear_per_video("timeout", video_id, attempt).await
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(String, u32, DateTime<Utc>)>, StoreError> {
        self.due_per_video("timeout", now, limit).await
    }
}

#[async_trait]
impl JobQueue for DynamoViewStore {
    async fn offer_job(&self, video_id: &str, attempt: u32, ready_at: DateTime<Utc>) -> Result<(), StoreError> {
        self.set_per_video("job", video_id, attempt, ready_at).await
    }

    async fn withdraw_job(&self, video_id: &str, attempt: u32) -> Result<(), StoreError> {
        self.clear_per_video("job", video_id, attempt).await
    }

    async fn ready_jobs(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, u32, DateTime<Utc>)>, StoreError> {
        self.due_per_video("job", now, limit).await
    }
}

#[async_trait]
impl IdempotencyStore for DynamoViewStore {
    async fn reserve(
        &self,
        scope: &str,
        key_: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        ttl: Duration,
        in_flight: Duration,
    ) -> Result<Reservation, StoreError> {
        let pk = format!("idem#{scope}#{key_}");
        let now_us = micros(now);
        let expires_us = now_us.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        let abandoned_us = now_us.saturating_sub(i64::try_from(in_flight.as_micros()).unwrap_or(i64::MAX));
        // Read, decide, then claim on condition that nothing changed since the read; a
        // concurrent claim makes the condition fail, and the next round sees it.
        for _ in 0..5 {
            let existing = self.get_state(pk.clone()).await?;
            let seen_created: Option<i64> = existing.as_ref().and_then(|item| get_n(item, "created"));
            if let Some(item) = &existing {
                let status: Option<u16> = get_n(item, "st");
                let created = seen_created.unwrap_or(0);
                let expires: i64 = get_n(item, "expires").unwrap_or(0);
                let abandoned = expires < now_us || (status.is_none() && created < abandoned_us);
                if !abandoned {
                    if get_s(item, "fp") != Some(fingerprint) {
                        return Ok(Reservation::Mismatch);
                    }
                    return Ok(match (status, get_s(item, "bd")) {
                        (Some(status), Some(body)) => Reservation::Replay(StoredResponse {
                            status,
                            body: body.to_owned(),
                        }),
                        _ => Reservation::InFlight,
                    });
                }
            }
            let mut item = key(pk.clone(), None);
            item.insert("fp".into(), s(fingerprint));
            item.insert("created".into(), n(now_us));
            item.insert("expires".into(), n(expires_us));
            item.insert("expires_s".into(), n(expires_us / 1_000_000 + 1));
            let mut put = self.client.put_item().table_name(&self.state).set_item(Some(item));
            put = match seen_created {
                Some(created) => put
                    .condition_expression("created = :seen")
                    .expression_attribute_values(":seen", n(created)),
                None => put.condition_expression("attribute_not_exists(pk)"),
            };
            match put.send().await {
                Ok(_) => return Ok(Reservation::Fresh),
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => continue,
                Err(e) => return Err(unavailable("PutItem (idempotency)", &e)),
            }
        }
        Ok(Reservation::InFlight)
    }

    async fn complete(&self, scope: &str, key_: &str, response: &StoredResponse) -> Result<(), StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.state)
            .set_key(Some(key(format!("idem#{scope}#{key_}"), None)))
            .update_expression("SET st = :st, bd = :bd")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":st", n(response.status))
            .expression_attribute_values(":bd", s(response.body.clone()))
            .send()
            .await;
        match updated {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(unavailable("UpdateItem (idempotency)", &e)),
        }
    }

    async fn release(&self, scope: &str, key_: &str) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.state)
            .set_key(Some(key(format!("idem#{scope}#{key_}"), None)))
            .condition_expression("attribute_not_exists(st)")
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(unavailable("DeleteItem (idempotency)", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_as_sort_key_then_document_key() {
        let mut keys = [
            index_sk("b", "1"),
            index_sk("a", "2"),
            index_sk("a", "10"),
            index_sk("ab", "0"),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                index_sk("a", "10"),
                index_sk("a", "2"),
                index_sk("ab", "0"),
                index_sk("b", "1")
            ]
        );
    }

    #[test]
    fn documents_spread_over_every_shard_the_same_way_everywhere() {
        let shards: std::collections::HashSet<u32> = (0..1000).map(|i| shard(&format!("video-{i}"))).collect();
        assert_eq!(shards.len(), SHARDS as usize);
        assert_eq!(shard("video-1"), shard("video-1"));
        assert_eq!(doc_pk("catalog", 3, 10), "catalog#3#a");
    }
}
