//! Views: projection state, generations (live, shadow, dropped), documents and their index
//! entries, fenced commits (the `ViewStore` port).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{Delete, KeysAndAttributes, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use futures::{stream, StreamExt, TryStreamExt};
use vodsource_commands::ports::StoreError;
use vodsource_projections::{Doc, DocChange, IndexCursor, IndexedDoc, ProjectionState, ProjectionStatus, ViewStore};

use super::codec::*;
use super::errors::{invalid, lease_lost, unavailable};
use super::{DynamoViewStore, BATCH_GET, IN_FLIGHT};

impl DynamoViewStore {
    /// The projection's item, created (generation 1, position 0) when missing.
    pub(super) async fn projection_item(&self, name: &str) -> Result<Item, StoreError> {
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
            Err(e) => return Err(unavailable("PutItem", e)),
        }
        self.get_state(pk)
            .await?
            .ok_or_else(|| StoreError::unexpected(format!("projection {name} vanished as it was created")))
    }

    pub(super) async fn live_generation(&self, view: &str) -> Result<u32, StoreError> {
        Ok(get_n(&self.projection_item(view).await?, "gen").unwrap_or(1))
    }

    /// Applies `update` (its key and condition included) to the projection item of `name`,
    /// fenced by the lease; a failed condition is a `Conflict` on `expected`.
    pub(super) async fn update_projection(
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
            Err(StoreError::GenerationConflict {
                view: name.to_owned(),
                generation: expected,
                live: None,
            })
        }
    }

    /// Documents of `generation` of `view` for `keys`.
    pub(super) async fn get_docs(
        &self,
        view: &str,
        generation: u32,
        keys: &[String],
    ) -> Result<HashMap<String, Doc>, StoreError> {
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
                .map_err(|e| unavailable("BatchGetItem", e))?;
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

    /// One live document change as a transaction fenced by the lease. Returns false when
    /// the stored document is as new or newer (nothing written).
    pub(super) async fn commit_live(
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
            let page = request.send().await.map_err(|e| unavailable("Query", e))?;
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
            .map_err(|e| unavailable("UpdateItem", e))?;
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
