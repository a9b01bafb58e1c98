use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use vodsource_commands::ports::StoreError;

use crate::projector::IndexKey;

/// One document of a view and the stream version it reflects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Doc {
    /// The document key (a video id for the built-in views).
    pub key: String,
    /// Stream version of the last event folded into it.
    pub version: u64,
    /// JSON text.
    pub body: String,
    /// Secondary index entries. In a commit: the entries to add (`None` when the view has no
    /// index); read back by `dump`: all of the document's entries.
    #[serde(skip)]
    pub index: Option<Vec<IndexKey>>,
    /// In a commit: entries the document had and no longer has.
    #[serde(skip)]
    pub unindex: Vec<IndexKey>,
}

impl Doc {
    /// Index entries left without their document, as a store's `dump` shows them: version 0,
    /// no body, the entries in `index`.
    #[must_use]
    pub fn orphan(key: String, entries: Vec<IndexKey>) -> Self {
        Self {
            key,
            version: 0,
            body: String::new(),
            index: Some(entries),
            unindex: Vec::new(),
        }
    }
}

/// A document found through a secondary index, with its sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedDoc {
    /// The entry's sort key.
    pub sort: String,
    /// The document.
    pub doc: Doc,
}

impl IndexedDoc {
    /// Where a page that ends with this entry continues.
    pub fn cursor(&self) -> IndexCursor {
        IndexCursor {
            sort: self.sort.clone(),
            key: self.doc.key.clone(),
        }
    }
}

/// A place in a partition: entries order by sort key, then document key (sort keys need not
/// be unique, as in a DynamoDB index).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexCursor {
    /// Sort key.
    pub sort: String,
    /// Document key.
    pub key: String,
}

/// A change to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocChange {
    /// Write `doc` unless the stored one is at the same or a newer version.
    Put(Doc),
    /// Remove the document.
    Delete {
        /// Its key.
        key: String,
        /// Its index entries, to remove with it.
        unindex: Vec<IndexKey>,
    },
}

/// Whether a projection is keeping up or stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProjectionStatus {
    /// Following the log.
    Running,
    /// Stopped at an event it could not handle.
    Failed {
        /// Position of that event.
        position: u64,
        /// Why.
        error: String,
    },
}

/// A projection's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionState {
    /// Its name (and its view's).
    pub name: String,
    /// The live generation of its view.
    pub generation: u32,
    /// Position of the last event folded into the live generation.
    pub position: u64,
    /// Running or failed.
    pub status: ProjectionStatus,
    /// Last change of this state.
    pub updated_at: Option<DateTime<Utc>>,
}

/// Storage of views, shaped for a key-value store with conditional writes.
///
/// Every view belongs to one projection (same name) and lives in generations: the live one
/// that readers see, and at most one shadow being rebuilt.
#[async_trait]
pub trait ViewStore: Send + Sync + 'static {
    /// The projection's state, created (generation 1, position 0) when first asked.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn projection(&self, name: &str) -> Result<ProjectionState, StoreError>;

    /// Documents of `generation` of `view` for `keys`; missing keys are absent.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn get_many(&self, view: &str, generation: u32, keys: &[String]) -> Result<HashMap<String, Doc>, StoreError>;

    /// One document of the live generation.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn get(&self, view: &str, key: &str) -> Result<Option<Doc>, StoreError>;

    /// Up to `limit` documents of the live generation listed in `partition`, greatest
    /// (sort key, document key) first, starting below `before` when given.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn query(
        &self,
        view: &str,
        partition: &str,
        before: Option<&IndexCursor>,
        limit: usize,
    ) -> Result<Vec<IndexedDoc>, StoreError>;

    /// Documents of the live generation in key order after `after`.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn scan(&self, view: &str, after: Option<&str>, limit: usize) -> Result<Vec<Doc>, StoreError>;

    /// Applies `changes` to `generation` of `view` and records `position` as its checkpoint —
    /// atomically where the store allows — provided `owner` holds the projection's lease.
    /// Puts are conditional on the stored version being older, so replays change nothing.
    ///
    /// # Errors
    /// `Conflict` when `owner` lost the lease or `generation` is no longer the one being
    /// written; `Unavailable`.
    async fn commit(
        &self,
        view: &str,
        generation: u32,
        owner: &str,
        changes: Vec<DocChange>,
        position: u64,
    ) -> Result<(), StoreError>;

    /// Records that the projection stopped at `position`.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn record_failure(&self, name: &str, position: u64, error: &str) -> Result<(), StoreError>;

    /// Starts a shadow generation (empty, checkpoint 0) and returns its number. Any earlier
    /// unfinished shadow is discarded.
    ///
    /// # Errors
    /// `Conflict` when `owner` does not hold the lease; `Unavailable`.
    async fn begin_rebuild(&self, name: &str, owner: &str) -> Result<u32, StoreError>;

    /// Makes the shadow `generation` live in one step, clears any failure, and removes the
    /// generation it replaces.
    ///
    /// # Errors
    /// `Conflict` when `owner` does not hold the lease or the shadow is gone; `Unavailable`.
    async fn finish_rebuild(&self, name: &str, owner: &str, generation: u32) -> Result<(), StoreError>;
}
