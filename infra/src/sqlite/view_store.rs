use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{QueryBuilder, Row as _, Sqlite};
use vodsource_commands::ports::{CheckpointStore, LeaseStore, StoreError, TimeoutStore};
use vodsource_projections::{Doc, DocChange, ProjectionState, ProjectionStatus, ViewStore};

use super::connect::{from_micros, map_err, prepare, signed, to_micros, SqliteSettings};

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS view_docs (
    view       TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    key        TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT    NOT NULL,
    PRIMARY KEY (view, generation, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projections (
    name              TEXT PRIMARY KEY,
    generation        INTEGER NOT NULL,
    position          INTEGER NOT NULL,
    shadow_generation INTEGER,
    shadow_position   INTEGER,
    failed_position   INTEGER,
    error             TEXT,
    updated_at_us     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name     TEXT PRIMARY KEY,
    owner    TEXT NOT NULL,
    until_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS timeouts (
    video_id    TEXT PRIMARY KEY,
    attempt     INTEGER NOT NULL,
    deadline_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS timeouts_by_deadline ON timeouts (deadline_us);
";

/// The embedded view store: views, projection checkpoints, leases and process-manager
/// timeouts in one SQLite file. A view change and its checkpoint commit in one transaction.
#[derive(Clone)]
pub struct SqliteViewStore {
    path: PathBuf,
    pool: SqlitePool,
}

impl SqliteViewStore {
    /// Opens (creating if needed) the view store at `path`.
    ///
    /// # Errors
    /// `Unavailable` naming the file when it cannot be created, opened or is locked.
    pub async fn open(path: impl AsRef<Path>, settings: &SqliteSettings) -> Result<Self, StoreError> {
        let path = prepare(path.as_ref())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(settings.options(&path))
            .await
            .map_err(|e| map_err(&path, e))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(|e| map_err(&path, e))?;
        Ok(Self { path, pool })
    }

    fn err(&self, e: sqlx::Error) -> StoreError {
        map_err(&self.path, e)
    }

    /// Every document of the live generation of `view`, in key order (for comparisons).
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn dump(&self, view: &str) -> Result<Vec<Doc>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.scan(view, after.as_deref(), 1000).await?;
            let done = page.len() < 1000;
            after = page.last().map(|d| d.key.clone());
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }
}

async fn ensure_projection(conn: &mut SqliteConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO projections (name, generation, position, updated_at_us) VALUES (?, 1, 0, ?) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(to_micros(Utc::now()))
        .execute(conn)
        .await?;
    Ok(())
}

async fn holds_lease(conn: &mut SqliteConnection, name: &str, owner: &str) -> Result<bool, sqlx::Error> {
    let holder: Option<String> = sqlx::query_scalar("SELECT owner FROM leases WHERE name = ?")
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(holder.as_deref() == Some(owner))
}

fn lease_lost(name: &str, owner: &str) -> StoreError {
    tracing::warn!(name, owner, "lease no longer held");
    StoreError::LeaseLost(name.to_owned())
}

#[async_trait]
impl ViewStore for SqliteViewStore {
    async fn projection(&self, name: &str) -> Result<ProjectionState, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.err(e))?;
        ensure_projection(&mut conn, name).await.map_err(|e| self.err(e))?;
        let row = sqlx::query(
            "SELECT generation, position, failed_position, error, updated_at_us FROM projections WHERE name = ?",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.err(e))?;
        let failed: Option<i64> = row.try_get(2).map_err(|e| self.err(e))?;
        let error: Option<String> = row.try_get(3).map_err(|e| self.err(e))?;
        let status = match (failed, error) {
            (Some(position), Some(error)) => ProjectionStatus::Failed {
                position: u64::try_from(position).unwrap_or(0),
                error,
            },
            _ => ProjectionStatus::Running,
        };
        let generation: i64 = row.try_get(0).map_err(|e| self.err(e))?;
        let position: i64 = row.try_get(1).map_err(|e| self.err(e))?;
        Ok(ProjectionState {
            name: name.to_owned(),
            generation: u32::try_from(generation).unwrap_or(1),
            position: u64::try_from(position).unwrap_or(0),
            status,
            updated_at: Some(from_micros(row.try_get(4).map_err(|e| self.err(e))?)),
        })
    }

    async fn get_many(&self, view: &str, generation: u32, keys: &[String]) -> Result<HashMap<String, Doc>, StoreError> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut query = QueryBuilder::<Sqlite>::new("SELECT key, version, body FROM view_docs WHERE view = ");
            query
                .push_bind(view)
                .push(" AND generation = ")
                .push_bind(i64::from(generation))
                .push(" AND key IN (");
            let mut list = query.separated(", ");
            for key in chunk {
                list.push_bind(key.as_str());
            }
            query.push(")");
            for row in query.build().fetch_all(&self.pool).await.map_err(|e| self.err(e))? {
                let doc = doc(&row).map_err(|e| self.err(e))?;
                out.insert(doc.key.clone(), doc);
            }
        }
        Ok(out)
    }

    async fn get(&self, view: &str, key: &str) -> Result<Option<Doc>, StoreError> {
        let row = sqlx::query(
            "SELECT d.key, d.version, d.body FROM view_docs d JOIN projections p ON p.name = d.view AND p.generation = d.generation WHERE d.view = ? AND d.key = ?",
        )
        .bind(view)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.map(|row| doc(&row)).transpose().map_err(|e| self.err(e))
    }

    async fn scan(&self, view: &str, after: Option<&str>, limit: usize) -> Result<Vec<Doc>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.key, d.version, d.body FROM view_docs d JOIN projections p ON p.name = d.view AND p.generation = d.generation WHERE d.view = ? AND d.key > ? ORDER BY d.key LIMIT ?",
        )
        .bind(view)
        .bind(after.unwrap_or(""))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(doc).collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    async fn commit(
        &self,
        view: &str,
        generation: u32,
        owner: &str,
        changes: Vec<DocChange>,
        position: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.err(e))?;
        if !holds_lease(&mut tx, view, owner).await.map_err(|e| self.err(e))? {
            return Err(lease_lost(view, owner));
        }
        let row = sqlx::query("SELECT generation, shadow_generation FROM projections WHERE name = ?")
            .bind(view)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let (live, shadow): (i64, Option<i64>) = match row {
            Some(row) => (
                row.try_get(0).map_err(|e| self.err(e))?,
                row.try_get(1).map_err(|e| self.err(e))?,
            ),
            None => (1, None),
        };
        let generation_i = i64::from(generation);
        let column = if generation_i == live {
            "position"
        } else if shadow == Some(generation_i) {
            "shadow_position"
        } else {
            return Err(StoreError::Conflict {
                stream_id: format!("view:{view}"),
                expected: u64::from(generation),
                actual: u64::try_from(live).unwrap_or(0),
            });
        };
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for change in changes {
            match change {
                DocChange::Put(doc) => puts.push(doc),
                DocChange::Delete { key } => deletes.push(key),
            }
        }
        for chunk in puts.chunks(150) {
            let mut query =
                QueryBuilder::<Sqlite>::new("INSERT INTO view_docs (view, generation, key, version, body) ");
            query.push_values(chunk, |mut b, doc| {
                b.push_bind(view)
                    .push_bind(generation_i)
                    .push_bind(doc.key.as_str())
                    .push_bind(signed(doc.version))
                    .push_bind(doc.body.as_str());
            });
            // Conditional on the version: replaying an event never moves a document back.
            query.push(
                " ON CONFLICT (view, generation, key) DO UPDATE SET version = excluded.version, body = excluded.body WHERE excluded.version > view_docs.version",
            );
            query.build().execute(&mut *tx).await.map_err(|e| self.err(e))?;
        }
        for chunk in deletes.chunks(500) {
            let mut query = QueryBuilder::<Sqlite>::new("DELETE FROM view_docs WHERE view = ");
            query
                .push_bind(view)
                .push(" AND generation = ")
                .push_bind(generation_i)
                .push(" AND key IN (");
            let mut list = query.separated(", ");
            for key in chunk {
                list.push_bind(key.as_str());
            }
            query.push(")");
            query.build().execute(&mut *tx).await.map_err(|e| self.err(e))?;
        }
        sqlx::query(&format!(
            "UPDATE projections SET {column} = ?, updated_at_us = ? WHERE name = ?"
        ))
        .bind(signed(position))
        .bind(to_micros(Utc::now()))
        .bind(view)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn record_failure(&self, name: &str, position: u64, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE projections SET failed_position = ?, error = ?, updated_at_us = ? WHERE name = ?")
            .bind(signed(position))
            .bind(error)
            .bind(to_micros(Utc::now()))
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn begin_rebuild(&self, name: &str, owner: &str) -> Result<u32, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.err(e))?;
        if !holds_lease(&mut tx, name, owner).await.map_err(|e| self.err(e))? {
            return Err(lease_lost(name, owner));
        }
        ensure_projection(&mut tx, name).await.map_err(|e| self.err(e))?;
        let (live, shadow): (i64, Option<i64>) =
            sqlx::query_as("SELECT generation, shadow_generation FROM projections WHERE name = ?")
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        if let Some(old) = shadow {
            sqlx::query("DELETE FROM view_docs WHERE view = ? AND generation = ?")
                .bind(name)
                .bind(old)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        let next = live.max(shadow.unwrap_or(0)) + 1;
        sqlx::query("DELETE FROM view_docs WHERE view = ? AND generation = ?")
            .bind(name)
            .bind(next)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        sqlx::query("UPDATE projections SET shadow_generation = ?, shadow_position = 0 WHERE name = ?")
            .bind(next)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(u32::try_from(next).unwrap_or(u32::MAX))
    }

    async fn generation_position(&self, name: &str, generation: u32) -> Result<u64, StoreError> {
        let position: Option<i64> = sqlx::query_scalar(
            "SELECT CASE WHEN generation = ?1 THEN position WHEN shadow_generation = ?1 THEN shadow_position END FROM projections WHERE name = ?2",
        )
        .bind(i64::from(generation))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?
        .flatten();
        Ok(position.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
    }

    async fn finish_rebuild(&self, name: &str, owner: &str, generation: u32) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.err(e))?;
        if !holds_lease(&mut tx, name, owner).await.map_err(|e| self.err(e))? {
            return Err(lease_lost(name, owner));
        }
        let swapped = sqlx::query(
            "UPDATE projections SET generation = shadow_generation, position = shadow_position, shadow_generation = NULL, shadow_position = NULL, failed_position = NULL, error = NULL, updated_at_us = ? WHERE name = ? AND shadow_generation = ?",
        )
        .bind(to_micros(Utc::now()))
        .bind(name)
        .bind(i64::from(generation))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        if swapped.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                stream_id: format!("view:{name}"),
                expected: u64::from(generation),
                actual: 0,
            });
        }
        sqlx::query("DELETE FROM view_docs WHERE view = ? AND generation <> ?")
            .bind(name)
            .bind(i64::from(generation))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))
    }
}

fn doc(row: &sqlx::sqlite::SqliteRow) -> Result<Doc, sqlx::Error> {
    let version: i64 = row.try_get(1)?;
    Ok(Doc {
        key: row.try_get(0)?,
        version: u64::try_from(version).unwrap_or(0),
        body: row.try_get(2)?,
    })
}

#[async_trait]
impl LeaseStore for SqliteViewStore {
    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO leases (name, owner, until_us) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_us = excluded.until_us WHERE leases.owner = excluded.owner OR leases.until_us < ?4",
        )
        .bind(name)
        .bind(owner)
        .bind(to_micros(until))
        .bind(to_micros(now))
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = ? AND owner = ?")
            .bind(name)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for SqliteViewStore {
    async fn load_checkpoint(&self, name: &str) -> Result<u64, StoreError> {
        let position: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(position.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
    }

    async fn save_checkpoint(&self, name: &str, owner: &str, position: u64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.err(e))?;
        let holder: Option<String> = sqlx::query_scalar("SELECT owner FROM leases WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        // Only a one-shot caller that never took a lease may write without one.
        if holder.is_some_and(|h| h != owner) {
            return Err(lease_lost(name, owner));
        }
        sqlx::query("INSERT INTO checkpoints (name, position) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET position = excluded.position")
            .bind(name)
            .bind(signed(position))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))
    }
}

#[async_trait]
impl TimeoutStore for SqliteViewStore {
    async fn set_deadline(&self, video_id: &str, attempt: u32, deadline: DateTime<Utc>) -> Result<(), StoreError> {
        // Never let an older attempt's deadline replace a newer one's.
        sqlx::query("INSERT INTO timeouts (video_id, attempt, deadline_us) VALUES (?, ?, ?) ON CONFLICT (video_id) DO UPDATE SET attempt = excluded.attempt, deadline_us = excluded.deadline_us WHERE excluded.attempt >= timeouts.attempt")
            .bind(video_id)
            .bind(i64::from(attempt))
            .bind(to_micros(deadline))
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn clear_deadline(&self, video_id: &str, attempt: u32) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM timeouts WHERE video_id = ? AND attempt <= ?")
            .bind(video_id)
            .bind(i64::from(attempt))
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(String, u32, DateTime<Utc>)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT video_id, attempt, deadline_us FROM timeouts WHERE deadline_us <= ? ORDER BY deadline_us LIMIT ?",
        )
        .bind(to_micros(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|(id, attempt, deadline)| (id, u32::try_from(attempt).unwrap_or(0), from_micros(deadline)))
            .collect())
    }
}
