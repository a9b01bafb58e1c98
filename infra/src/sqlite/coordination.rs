//! Leases, process-manager checkpoints and timeouts, kept in the view store's file.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use vodsource_commands::ports::{
    CheckpointStore, IdempotencyStore, JobQueue, LeaseStore, Reservation, ShardCheckpoint, ShardCheckpointStore,
    StoreError, StoredResponse, TimeoutStore,
};

use super::connect::{from_micros, signed, to_micros};
use super::view_store::{lease_lost, SqliteViewStore};

#[async_trait]
impl LeaseStore for SqliteViewStore {
    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.db
            .run(move |conn| {
                let changed = conn.prepare_cached(
                    "INSERT INTO leases (name, owner, until_us) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_us = excluded.until_us WHERE leases.owner = excluded.owner OR leases.until_us < ?4",
                )?
                .execute(params![name, owner, to_micros(until), to_micros(now)])?;
                Ok(changed == 1)
            })
            .await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.db
            .run(move |conn| {
                conn.execute(
                    "DELETE FROM leases WHERE name = ?1 AND owner = ?2",
                    params![name, owner],
                )
                .map(|_| ())
            })
            .await
    }
}

#[async_trait]
impl CheckpointStore for SqliteViewStore {
    async fn load_checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        let name = name.to_owned();
        self.db
            .run(move |conn| {
                let position: Option<i64> = conn
                    .prepare_cached("SELECT position FROM checkpoints WHERE name = ?1")?
                    .query_row([name], |r| r.get(0))
                    .optional()?;
                Ok(position.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
            })
            .await
    }

    async fn save_checkpoint(&self, name: &str, owner: &str, position: u64) -> Result<(), StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let holder = lease_holder(&tx, &name)?;
                // Only a one-shot caller that never took a lease may write without one.
                if holder.is_some_and(|h| h != owner) {
                    return Ok(Err(lease_lost(&name, &owner)));
                }
                tx.prepare_cached(
                    "INSERT INTO checkpoints (name, position) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                )?
                .execute(params![name, signed(position)])?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?
    }
}

#[async_trait]
impl ShardCheckpointStore for SqliteViewStore {
    async fn load_shard_checkpoint(&self, name: &str) -> Result<Option<ShardCheckpoint>, StoreError> {
        let name = name.to_owned();
        self.db
            .run(move |conn| {
                conn.prepare_cached("SELECT sequence, offset FROM shard_checkpoints WHERE name = ?1")?
                    .query_row([name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                    .optional()
            })
            .await?
            .map(|(sequence, offset)| {
                u64::try_from(offset)
                    .map(|offset| ShardCheckpoint { sequence, offset })
                    .map_err(|_| StoreError::unexpected(format!("shard checkpoint offset {offset} is negative")))
            })
            .transpose()
    }

    async fn save_shard_checkpoint(
        &self,
        name: &str,
        owner: &str,
        checkpoint: &ShardCheckpoint,
    ) -> Result<(), StoreError> {
        let (name, owner, checkpoint) = (name.to_owned(), owner.to_owned(), checkpoint.clone());
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let holder = lease_holder(&tx, &name)?;
                if holder.as_deref() != Some(owner.as_str()) {
                    return Ok(Err(lease_lost(&name, &owner)));
                }
                tx.prepare_cached(
                    "INSERT INTO shard_checkpoints (name, sequence, offset) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE SET sequence = excluded.sequence, offset = excluded.offset",
                )?
                .execute(params![name, checkpoint.sequence, signed(checkpoint.offset)])?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?
    }
}

/// Who holds the lease `name`, read inside the transaction that writes under it.
fn lease_holder(tx: &rusqlite::Transaction<'_>, name: &str) -> rusqlite::Result<Option<String>> {
    tx.prepare_cached("SELECT owner FROM leases WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()
}

/// Timeouts and job offers are the same shape: one row per video, (attempt, instant), where an
/// older attempt never replaces a newer one. `table` is one of two constants.
impl SqliteViewStore {
    async fn set_per_video(
        &self,
        table: &'static str,
        video_id: &str,
        attempt: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let video_id = video_id.to_owned();
        self.db
            .run(move |conn| {
                conn.prepare_cached(&format!(
                    "INSERT INTO {table} (video_id, attempt, deadline_us) VALUES (?1, ?2, ?3) ON CONFLICT (video_id) DO UPDATE SET attempt = excluded.attempt, deadline_us = excluded.deadline_us WHERE excluded.attempt >= {table}.attempt"
                ))?
                .execute(params![video_id, i64::from(attempt), to_micros(at)])
                .map(|_| ())
            })
            .await
    }

    async fn clear_per_video(&self, table: &'static str, video_id: &str, attempt: u32) -> Result<(), StoreError> {
        let video_id = video_id.to_owned();
        self.db
            .run(move |conn| {
                conn.prepare_cached(&format!("DELETE FROM {table} WHERE video_id = ?1 AND attempt <= ?2"))?
                    .execute(params![video_id, i64::from(attempt)])
                    .map(|_| ())
            })
            .await
    }

    async fn due_per_video(
        &self,
        table: &'static str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, u32, DateTime<Utc>)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .run(move |conn| {
                let mut statement = conn.prepare_cached(&format!(
                    "SELECT video_id, attempt, deadline_us FROM {table} WHERE deadline_us <= ?1 ORDER BY deadline_us LIMIT ?2"
                ))?;
                let rows = statement.query_map(params![to_micros(now), limit], |r| {
                    let attempt: i64 = r.get(1)?;
                    Ok((r.get(0)?, u32::try_from(attempt).unwrap_or(0), from_micros(r.get(2)?)))
                })?;
                rows.collect()
            })
            .await
    }
}

#[async_trait]
impl TimeoutStore for SqliteViewStore {
    async fn set_deadline(&self, video_id: &str, attempt: u32, deadline: DateTime<Utc>) -> Result<(), StoreError> {
        self.set_per_video("timeouts", video_id, attempt, deadline).await
    }

    async fn clear_deadline(&self, video_id: &str, attempt: u32) -> Result<(), StoreError> {
        self.clear_per_video("timeouts", video_id, attempt).await
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(String, u32, DateTime<Utc>)>, StoreError> {
        self.due_per_video("timeouts", now, limit).await
    }
}

#[async_trait]
impl JobQueue for SqliteViewStore {
    async fn offer_job(&self, video_id: &str, attempt: u32, ready_at: DateTime<Utc>) -> Result<(), StoreError> {
        self.set_per_video("jobs", video_id, attempt, ready_at).await?;
        self.offered.send_replace(());
        Ok(())
    }

    async fn withdraw_job(&self, video_id: &str, attempt: u32) -> Result<(), StoreError> {
        self.clear_per_video("jobs", video_id, attempt).await
    }

    async fn ready_jobs(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, u32, DateTime<Utc>)>, StoreError> {
        self.due_per_video("jobs", now, limit).await
    }

    fn offers(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        Some(self.offered.subscribe())
    }
}

#[async_trait]
impl IdempotencyStore for SqliteViewStore {
    async fn reserve(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        ttl: Duration,
        in_flight: Duration,
    ) -> Result<Reservation, StoreError> {
        let (scope, key, fingerprint) = (scope.to_owned(), key.to_owned(), fingerprint.to_owned());
        let now_us = to_micros(now);
        let expires_us = now_us.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        let abandoned_us = now_us.saturating_sub(i64::try_from(in_flight.as_micros()).unwrap_or(i64::MAX));
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let existing: Option<(String, Option<i64>, Option<String>, i64, i64)> = tx
                    .prepare_cached(
                        "SELECT fingerprint, status, body, created_us, expires_us FROM idempotency WHERE scope = ?1 AND key = ?2",
                    )?
                    .query_row(params![scope, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                    .optional()?;
                let outcome = match existing {
                    Some((_, status, _, created, expires)) if expires < now_us || (status.is_none() && created < abandoned_us) => None,
                    Some((seen, _, _, _, _)) if seen != fingerprint => Some(Reservation::Mismatch),
                    Some((_, Some(status), Some(body), _, _)) => Some(Reservation::Replay(StoredResponse {
                        status: u16::try_from(status).unwrap_or(500),
                        body,
                    })),
                    Some(_) => Some(Reservation::InFlight),
                    None => None,
                };
                if let Some(outcome) = outcome {
                    return Ok(outcome);
                }
                tx.prepare_cached(
                    "INSERT INTO idempotency (scope, key, fingerprint, status, body, created_us, expires_us) VALUES (?1, ?2, ?3, NULL, NULL, ?4, ?5)
                     ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, status = NULL, body = NULL, created_us = excluded.created_us, expires_us = excluded.expires_us",
                )?
                .execute(params![scope, key, fingerprint, now_us, expires_us])?;
                // Expired keys go a few at a time, so the table stays bounded without a sweeper.
                tx.prepare_cached(
                    "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency WHERE expires_us < ?1 LIMIT 16)",
                )?
                .execute([now_us])?;
                tx.commit()?;
                Ok(Reservation::Fresh)
            })
            .await
    }

    async fn complete(&self, scope: &str, key: &str, response: &StoredResponse) -> Result<(), StoreError> {
        let (scope, key, response) = (scope.to_owned(), key.to_owned(), response.clone());
        self.db
            .run(move |conn| {
                conn.prepare_cached("UPDATE idempotency SET status = ?1, body = ?2 WHERE scope = ?3 AND key = ?4")?
                    .execute(params![i64::from(response.status), response.body, scope, key])
                    .map(|_| ())
            })
            .await
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.db
            .run(move |conn| {
                conn.prepare_cached("DELETE FROM idempotency WHERE scope = ?1 AND key = ?2 AND status IS NULL")?
                    .execute(params![scope, key])
                    .map(|_| ())
            })
            .await
    }
}
