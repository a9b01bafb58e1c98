//! Generations of a view: the list of a generation's index partitions, counting and dropping
//! a generation (what it holds, never a scan of the table), and dumping the live one.

use std::collections::{BTreeSet, HashMap};

use vodsource_commands::ports::StoreError;
use vodsource_projections::{Doc, DocChange, IndexKey};

use super::codec::*;
use super::errors::{invalid, unavailable};
use super::DynamoViewStore;

impl DynamoViewStore {
    /// Lists, before the first entry goes under it, each index partition of `changes` that
    /// this process has not listed yet (a put of an item that exists changes nothing, so two
    /// processes listing one partition is harmless).
    pub(super) async fn list_partitions(
        &self,
        view: &str,
        generation: u32,
        changes: &[DocChange],
    ) -> Result<(), StoreError> {
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
    pub(super) async fn partitions(&self, view: &str, generation: u32) -> Result<Vec<String>, StoreError> {
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
    pub(super) async fn delete_generation(&self, view: &str, generation: u32) -> Result<(), StoreError> {
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
                .map_err(|e| unavailable("Scan", e))?;
            count += page.items.unwrap_or_default().len();
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(count);
            }
        }
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
        docs.extend(index.into_iter().map(|(key, entries)| Doc::orphan(key, entries)));
        docs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(docs)
    }

    /// The state of `view` for a commit: which generation field `generation` is.
    pub(super) async fn generation_field(&self, view: &str, generation: u32) -> Result<&'static str, StoreError> {
        let item = self.projection_item(view).await?;
        let live: u32 = get_n(&item, "gen").unwrap_or(1);
        if live == generation {
            return Ok("gen");
        }
        if get_n::<u32>(&item, "shadow_gen") == Some(generation) {
            return Ok("shadow_gen");
        }
        Err(StoreError::GenerationConflict {
            view: view.to_owned(),
            generation,
            live: Some(live),
        })
    }
}
