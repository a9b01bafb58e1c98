//! Items: attribute values, the keys of documents, index entries and partitions, and the
//! write requests a document change becomes.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use chrono::{DateTime, Utc};
use vodsource_commands::ports::StoreError;
use vodsource_projections::{Doc, DocChange, IndexKey};

use super::errors::invalid;

/// Shards of a view's documents.
pub(super) const SHARDS: u32 = 16;
pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub(super) fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

pub(super) fn key(pk: String, sk: Option<String>) -> Item {
    let mut item = HashMap::from([("pk".to_owned(), s(pk))]);
    if let Some(sk) = sk {
        item.insert("sk".to_owned(), s(sk));
    }
    item
}

/// The shard of a document key (FNV-1a, so it is the same in every process and version).
pub(super) fn shard(key: &str) -> u32 {
    let hash = key
        .bytes()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    hash % SHARDS
}

pub(super) fn doc_pk(view: &str, generation: u32, shard: u32) -> String {
    format!("{view}#{generation}#{shard:x}")
}

pub(super) fn index_pk(view: &str, generation: u32, partition: &str) -> String {
    format!("{view}#{generation}@{partition}")
}

/// The partition key of the list of a generation's index partitions.
pub(super) fn parts_pk(view: &str, generation: u32) -> String {
    format!("{view}#{generation}$parts")
}

pub(super) fn index_sk(sort: &str, key: &str) -> String {
    format!("{sort}\u{0}{key}")
}

/// A document write of a commit.
pub(super) enum DocWrite {
    /// The document's item, and its version (the condition of a live put).
    Put(Item, u64),
    /// The document's key.
    Delete(Item),
}

/// The items one document change writes: the document, and its index entries to remove
/// (keys) and to add (items).
pub(super) struct DocWrites {
    pub(super) doc: DocWrite,
    pub(super) unindex: Vec<Item>,
    pub(super) index: Vec<Item>,
}

impl DocWrites {
    pub(super) fn of(view: &str, generation: u32, change: DocChange) -> Self {
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

/// A put of `item` in a `BatchWriteItem`.
pub(super) fn put_request(item: Item) -> Result<WriteRequest, StoreError> {
    Ok(WriteRequest::builder()
        .put_request(PutRequest::builder().set_item(Some(item)).build().map_err(invalid)?)
        .build())
}

/// A delete of the item at `key` in a `BatchWriteItem`.
pub(super) fn delete_request(key: Item) -> Result<WriteRequest, StoreError> {
    Ok(WriteRequest::builder()
        .delete_request(DeleteRequest::builder().set_key(Some(key)).build().map_err(invalid)?)
        .build())
}

pub(super) fn item_key(item: &Item) -> Item {
    item.iter()
        .filter(|(name, _)| *name == "pk" || *name == "sk")
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

pub(super) fn index_item(view: &str, generation: u32, entry: &IndexKey, doc_key: &str) -> Item {
    let mut item = key(
        index_pk(view, generation, &entry.partition),
        Some(index_sk(&entry.sort, doc_key)),
    );
    item.insert("k".into(), s(doc_key));
    item.insert("s".into(), s(entry.sort.clone()));
    item
}

pub(super) fn to_doc(item: &Item) -> Option<Doc> {
    Some(Doc {
        key: get_s(item, "sk")?.to_owned(),
        version: get_n(item, "v")?,
        body: get_s(item, "b")?.to_owned(),
        index: None,
        unindex: Vec::new(),
    })
}

pub(super) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
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
