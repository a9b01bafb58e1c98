//! Leases, process-manager checkpoints and timeouts, kept in the view store's file.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use vodsource_commands::ports::{CheckpointStore, LeaseStore, StoreError, TimeoutStore};

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
                let holder: Option<String> = tx
                    .prepare_cached("SELECT owner FROM leases WHERE name = ?1")?
                    .query_row([&name], |r| r.get(0))
                    .optional()?;
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
impl TimeoutStore for SqliteViewStore {
    async fn set_deadline(&self, video_id: &str, attempt: u32, deadline: DateTime<Utc>) -> Result<(), StoreError> {
        let video_id = video_id.to_owned();
        self.db
            .run(move |conn| {
                // Never let an older attempt's deadline replace a newer one's.
                conn.prepare_cached(
                    "INSERT INTO timeouts (video_id, attempt, deadline_us) VALUES (?1, ?2, ?3) ON CONFLICT (video_id) DO UPDATE SET attempt = excluded.attempt, deadline_us = excluded.deadline_us WHERE excluded.attempt >= timeouts.attempt",
                )?
                .execute(params![video_id, i64::from(attempt), to_micros(deadline)])
                .map(|_| ())
            })
            .await
    }

    async fn clear_deadline(&self, video_id: &str, attempt: u32) -> Result<(), StoreError> {
        let video_id = video_id.to_owned();
        self.db
            .run(move |conn| {
                conn.prepare_cached("DELETE FROM timeouts WHERE video_id = ?1 AND attempt <= ?2")?
                    .execute(params![video_id, i64::from(attempt)])
                    .map(|_| ())
            })
            .await
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(String, u32, DateTime<Utc>)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .run(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT video_id, attempt, deadline_us FROM timeouts WHERE deadline_us <= ?1 ORDER BY deadline_us LIMIT ?2",
                )?;
                let rows = statement.query_map(params![to_micros(now), limit], |r| {
                    let attempt: i64 = r.get(1)?;
                    Ok((r.get(0)?, u32::try_from(attempt).unwrap_or(0), from_micros(r.get(2)?)))
                })?;
                rows.collect()
            })
            .await
    }
}
