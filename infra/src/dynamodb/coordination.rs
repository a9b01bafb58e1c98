//! Coordination on the state table: leases (fencing every write of their holder), checkpoints,
//! shard checkpoints, encoding deadlines and the job queue (the `due` index).

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
use chrono::{DateTime, Utc};
use vodsource_commands::ports::{
    CheckpointStore, JobQueue, LeaseStore, ShardCheckpoint, ShardCheckpointStore, StoreError, TimeoutStore,
};

use super::codec::*;
use super::errors::{invalid, lease_lost, unavailable};
use super::schema::DUE_INDEX;
use super::DynamoViewStore;

impl DynamoViewStore {
    /// A check, inside a transaction, that `owner` holds the lease on `name`.
    pub(super) fn lease_check(&self, name: &str, owner: &str) -> Result<TransactWriteItem, StoreError> {
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
            Err(e) => Err(unavailable("PutItem (lease)", e)),
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
            Err(e) => Err(unavailable("DeleteItem (lease)", e)),
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
                    .map_err(|e| unavailable("PutItem", e))?;
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
            Err(e) => Err(unavailable("PutItem", e)),
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
            Err(e) => Err(unavailable("DeleteItem", e)),
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
            .map_err(|e| unavailable("Query (due)", e))?;
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
