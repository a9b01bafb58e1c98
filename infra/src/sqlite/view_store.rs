use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use vodsource_commands::ports::StoreError;
use vodsource_projections::{
    Doc, DocChange, IndexCursor, IndexKey, IndexedDoc, ProjectionState, ProjectionStatus, ViewStore,
};

use super::connect::{from_micros, signed, to_micros, SqliteSettings};
use super::db::Db;

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS view_docs (
    view       TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    key        TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT    NOT NULL,
    PRIMARY KEY (view, generation, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS view_index (
    view       TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    partition  TEXT    NOT NULL,
    sort       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    PRIMARY KEY (view, generation, partition, sort, key)
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
CREATE TABLE IF NOT EXISTS shard_checkpoints (
    name     TEXT PRIMARY KEY,
    sequence TEXT NOT NULL,
    offset   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS timeouts (
    video_id    TEXT PRIMARY KEY,
    attempt     INTEGER NOT NULL,
    deadline_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS timeouts_by_deadline ON timeouts (deadline_us);
CREATE TABLE IF NOT EXISTS jobs (
    video_id    TEXT PRIMARY KEY,
    attempt     INTEGER NOT NULL,
    deadline_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_ready ON jobs (deadline_us);
CREATE TABLE IF NOT EXISTS idempotency (
    scope       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    status      INTEGER,
    body        TEXT,
    created_us  INTEGER NOT NULL,
    expires_us  INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
";

/// A SQL result that may also be a refusal (lost lease, superseded generation).
type Checked<T> = rusqlite::Result<Result<T, StoreError>>;

/// The embedded view store: views, projection checkpoints, leases and process-manager
/// timeouts in one SQLite file. A view change and its checkpoint commit in one transaction,
/// which runs to completion even if its caller is cancelled.
#[derive(Clone)]
pub struct SqliteViewStore {
    pub(super) db: Db,
    /// Changed by every job offer, for the workers of this process (`JobQueue::offers`).
    pub(super) offered: tokio::sync::watch::Sender<()>,
}

impl SqliteViewStore {
    /// Opens (creating if needed) the view store at `path`.
    ///
    /// # Errors
    /// `Unavailable` naming the file when it cannot be created, opened or is locked.
    pub async fn open(path: impl AsRef<Path>, settings: &SqliteSettings) -> Result<Self, StoreError> {
        Ok(Self {
            db: Db::open(path.as_ref(), settings, SCHEMA).await?,
            offered: tokio::sync::watch::Sender::new(()),
        })
    }

    /// Every document of the live generation of `view`, in key order, with its index
    /// entries (for comparisons). Index entries whose document is gone appear too, as a
    /// document with that key, version 0 and no body, so a comparison sees them.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn dump(&self, view: &str) -> Result<Vec<Doc>, StoreError> {
        let owned = view.to_owned();
        let mut index: HashMap<String, Vec<IndexKey>> = self
            .db
            .run(move |conn| {
                let mut statement = conn.prepare(
                    "SELECT i.key, i.partition, i.sort FROM view_index i JOIN projections p ON p.name = i.view AND p.generation = i.generation WHERE i.view = ?1 ORDER BY i.key, i.partition, i.sort",
                )?;
                let mut out: HashMap<String, Vec<IndexKey>> = HashMap::new();
                let rows = statement.query_map([&owned], |r| {
                    Ok((r.get::<_, String>(0)?, IndexKey { partition: r.get(1)?, sort: r.get(2)? }))
                })?;
                for row in rows {
                    let (key, entry) = row?;
                    out.entry(key).or_default().push(entry);
                }
                Ok(out)
            })
            .await?;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.scan(view, after.as_deref(), 1000).await?;
            let done = page.len() < 1000;
            after = page.last().map(|d| d.key.clone());
            out.extend(page.into_iter().map(|mut doc| {
                doc.index = index.remove(&doc.key);
                doc
            }));
            if done {
                out.extend(index.into_iter().map(|(key, entries)| Doc::orphan(key, entries)));
                out.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(out);
            }
        }
    }
}

fn ensure_projection(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO projections (name, generation, position, updated_at_us) VALUES (?1, 1, 0, ?2) ON CONFLICT (name) DO NOTHING",
    )?
    .execute(params![name, to_micros(Utc::now())])?;
    Ok(())
}

pub(super) fn holds_lease(conn: &Connection, name: &str, owner: &str) -> rusqlite::Result<bool> {
    let holder: Option<String> = conn
        .prepare_cached("SELECT owner FROM leases WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(holder.as_deref() == Some(owner))
}

pub(super) fn lease_lost(name: &str, owner: &str) -> StoreError {
    tracing::warn!(name, owner, "lease no longer held");
    StoreError::LeaseLost(name.to_owned())
}

fn doc(row: &rusqlite::Row<'_>) -> rusqlite::Result<Doc> {
    let version: i64 = row.get(1)?;
    Ok(Doc {
        key: row.get(0)?,
        version: u64::try_from(version).unwrap_or(0),
        body: row.get(2)?,
        index: None,
        unindex: Vec::new(),
    })
}

fn commit_changes(
    conn: &mut Connection,
    view: &str,
    generation: u32,
    owner: &str,
    changes: &[DocChange],
    position: u64,
) -> Checked<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !holds_lease(&tx, view, owner)? {
        return Ok(Err(lease_lost(view, owner)));
    }
    let generations: Option<(i64, Option<i64>)> = tx
        .prepare_cached("SELECT generation, shadow_generation FROM projections WHERE name = ?1")?
        .query_row([view], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (live, shadow) = generations.unwrap_or((1, None));
    let generation = i64::from(generation);
    let column = if generation == live {
        "position"
    } else if shadow == Some(generation) {
        "shadow_position"
    } else {
        return Ok(Err(StoreError::GenerationConflict {
            view: view.to_owned(),
            generation: u32::try_from(generation).unwrap_or(u32::MAX),
            live: u32::try_from(live).ok(),
        }));
    };
    {
        // Conditional on the version: replaying an event never moves a document back.
        let mut put = tx.prepare_cached(
            "INSERT INTO view_docs (view, generation, key, version, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (view, generation, key) DO UPDATE SET version = excluded.version, body = excluded.body
             WHERE excluded.version > view_docs.version",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM view_docs WHERE view = ?1 AND generation = ?2 AND key = ?3")?;
        // Index entries go by their whole key: the runner knows what a document had.
        let mut unindex = tx.prepare_cached(
            "DELETE FROM view_index WHERE view = ?1 AND generation = ?2 AND partition = ?3 AND sort = ?4 AND key = ?5",
        )?;
        let mut index = tx.prepare_cached(
            "INSERT OR IGNORE INTO view_index (view, generation, partition, sort, key) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        // Index entries are written after the documents, in key order: a rebuild adds
        // hundreds of thousands, and sorted inserts fill B-tree pages in sequence.
        let mut removed: Vec<(&str, &str, &str)> = Vec::new();
        let mut added: Vec<(&str, &str, &str)> = Vec::new();
        for change in changes {
            match change {
                DocChange::Put(doc) => {
                    let changed = put.execute(params![view, generation, doc.key, signed(doc.version), doc.body])?;
                    if changed == 1 {
                        removed.extend(
                            doc.unindex
                                .iter()
                                .map(|k| (k.partition.as_str(), k.sort.as_str(), doc.key.as_str())),
                        );
                        added.extend(
                            doc.index
                                .iter()
                                .flatten()
                                .map(|k| (k.partition.as_str(), k.sort.as_str(), doc.key.as_str())),
                        );
                    }
                }
                DocChange::Delete { key, unindex: entries } => {
                    delete.execute(params![view, generation, key])?;
                    removed.extend(
                        entries
                            .iter()
                            .map(|k| (k.partition.as_str(), k.sort.as_str(), key.as_str())),
                    );
                }
            }
        }
        removed.sort_unstable();
        added.sort_unstable();
        for (partition, sort, key) in removed {
            unindex.execute(params![view, generation, partition, sort, key])?;
        }
        for (partition, sort, key) in added {
            index.execute(params![view, generation, partition, sort, key])?;
        }
    }
    tx.execute(
        &format!("UPDATE projections SET {column} = ?1, updated_at_us = ?2 WHERE name = ?3"),
        params![signed(position), to_micros(Utc::now()), view],
    )?;
    tx.commit()?;
    Ok(Ok(()))
}

#[async_trait]
impl ViewStore for SqliteViewStore {
    async fn projection(&self, name: &str) -> Result<ProjectionState, StoreError> {
        let name = name.to_owned();
        self.db
            .run(move |conn| {
                ensure_projection(conn, &name)?;
                conn.prepare_cached(
                    "SELECT generation, position, failed_position, error, updated_at_us FROM projections WHERE name = ?1",
                )?
                .query_row([&name], |r| {
                    let generation: i64 = r.get(0)?;
                    let position: i64 = r.get(1)?;
                    let failed: Option<i64> = r.get(2)?;
                    let error: Option<String> = r.get(3)?;
                    let status = match (failed, error) {
                        (Some(position), Some(error)) => ProjectionStatus::Failed {
                            position: u64::try_from(position).unwrap_or(0),
                            error,
                        },
                        _ => ProjectionStatus::Running,
                    };
                    Ok(ProjectionState {
                        name: name.clone(),
                        generation: u32::try_from(generation).unwrap_or(1),
                        position: u64::try_from(position).unwrap_or(0),
                        status,
                        updated_at: Some(from_micros(r.get(4)?)),
                    })
                })
            })
            .await
    }

    async fn get_many(&self, view: &str, generation: u32, keys: &[String]) -> Result<HashMap<String, Doc>, StoreError> {
        let view = view.to_owned();
        let keys = keys.to_vec();
        self.db
            .run(move |conn| {
                let mut out = HashMap::with_capacity(keys.len());
                for chunk in keys.chunks(500) {
                    let marks = vec!["?"; chunk.len()].join(", ");
                    let mut statement = conn.prepare_cached(&format!(
                        "SELECT key, version, body FROM view_docs WHERE view = ? AND generation = ? AND key IN ({marks})"
                    ))?;
                    let args = [view.clone(), generation.to_string()].into_iter().chain(chunk.iter().cloned());
                    for doc in statement.query_map(params_from_iter(args), doc)? {
                        let doc = doc?;
                        out.insert(doc.key.clone(), doc);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn get(&self, view: &str, key: &str) -> Result<Option<Doc>, StoreError> {
        self.db.read_inline(|conn| {
            conn.prepare_cached(
                "SELECT d.key, d.version, d.body FROM view_docs d JOIN projections p ON p.name = d.view AND p.generation = d.generation WHERE d.view = ?1 AND d.key = ?2",
            )?
            .query_row([view, key], doc)
            .optional()
        })
    }

    async fn query(
        &self,
        view: &str,
        partition: &str,
        before: Option<&IndexCursor>,
        limit: usize,
    ) -> Result<Vec<IndexedDoc>, StoreError> {
        let (view, partition, before) = (view.to_owned(), partition.to_owned(), before.cloned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .run(move |conn| {
                const SELECT: &str = "SELECT d.key, d.version, d.body, i.sort FROM view_index i \
                    JOIN projections p ON p.name = i.view AND p.generation = i.generation \
                    JOIN view_docs d ON d.view = i.view AND d.generation = i.generation AND d.key = i.key \
                    WHERE i.view = ?1 AND i.partition = ?2";
                let row = |r: &rusqlite::Row<'_>| {
                    Ok(IndexedDoc {
                        sort: r.get(3)?,
                        doc: doc(r)?,
                    })
                };
                match before {
                    Some(before) => conn
                        .prepare_cached(&format!(
                            "{SELECT} AND (i.sort, i.key) < (?3, ?4) ORDER BY i.sort DESC, i.key DESC LIMIT ?5"
                        ))?
                        .query_map(params![view, partition, before.sort, before.key, limit], row)?
                        .collect(),
                    None => conn
                        .prepare_cached(&format!("{SELECT} ORDER BY i.sort DESC, i.key DESC LIMIT ?3"))?
                        .query_map(params![view, partition, limit], row)?
                        .collect(),
                }
            })
            .await
    }

    async fn scan(&self, view: &str, after: Option<&str>, limit: usize) -> Result<Vec<Doc>, StoreError> {
        let (view, after) = (view.to_owned(), after.unwrap_or("").to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .run(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT d.key, d.version, d.body FROM view_docs d JOIN projections p ON p.name = d.view AND p.generation = d.generation WHERE d.view = ?1 AND d.key > ?2 ORDER BY d.key LIMIT ?3",
                )?;
                let docs = statement.query_map(params![view, after, limit], doc)?;
                docs.collect()
            })
            .await
    }

    async fn commit(
        &self,
        view: &str,
        generation: u32,
        owner: &str,
        changes: Vec<DocChange>,
        position: u64,
    ) -> Result<(), StoreError> {
        let (view, owner) = (view.to_owned(), owner.to_owned());
        self.db
            .run(move |conn| commit_changes(conn, &view, generation, &owner, &changes, position))
            .await?
    }

    async fn record_failure(&self, name: &str, position: u64, error: &str) -> Result<(), StoreError> {
        let (name, error) = (name.to_owned(), error.to_owned());
        self.db
            .run(move |conn| {
                conn.execute(
                    "UPDATE projections SET failed_position = ?1, error = ?2, updated_at_us = ?3 WHERE name = ?4",
                    params![signed(position), error, to_micros(Utc::now()), name],
                )
                .map(|_| ())
            })
            .await
    }

    async fn begin_rebuild(&self, name: &str, owner: &str) -> Result<u32, StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !holds_lease(&tx, &name, &owner)? {
                    return Ok(Err(lease_lost(&name, &owner)));
                }
                ensure_projection(&tx, &name)?;
                let (live, shadow): (i64, Option<i64>) = tx.query_row(
                    "SELECT generation, shadow_generation FROM projections WHERE name = ?1",
                    [&name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let next = live.max(shadow.unwrap_or(0)) + 1;
                // Whatever an unfinished rebuild left behind goes.
                for table in ["view_docs", "view_index"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE view = ?1 AND generation <> ?2"),
                        params![name, live],
                    )?;
                }
                tx.execute(
                    "UPDATE projections SET shadow_generation = ?1, shadow_position = 0 WHERE name = ?2",
                    params![next, name],
                )?;
                tx.commit()?;
                Ok(Ok(u32::try_from(next).unwrap_or(u32::MAX)))
            })
            .await?
    }

    async fn finish_rebuild(&self, name: &str, owner: &str, generation: u32) -> Result<(), StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !holds_lease(&tx, &name, &owner)? {
                    return Ok(Err(lease_lost(&name, &owner)));
                }
                let swapped = tx.execute(
                    "UPDATE projections SET generation = shadow_generation, position = shadow_position, shadow_generation = NULL, shadow_position = NULL, failed_position = NULL, error = NULL, updated_at_us = ?1 WHERE name = ?2 AND shadow_generation = ?3",
                    params![to_micros(Utc::now()), name, i64::from(generation)],
                )?;
                if swapped != 1 {
                    return Ok(Err(StoreError::GenerationConflict {
                        view: name.clone(),
                        generation,
                        live: None,
                    }));
                }
                for table in ["view_docs", "view_index"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE view = ?1 AND generation <> ?2"),
                        params![name, i64::from(generation)],
                    )?;
                }
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?
    }
}
