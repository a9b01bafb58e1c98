//! Multipart uploads in the folder store, as S3 keeps them: each upload a folder of parts
//! (`.multipart/<upload>/<number>.<etag>`), each part written whole or not at all, a part
//! stored again under its number replacing the earlier one. Completing renames the first
//! part into place and appends the others to it, so an upload sent in one part is never
//! copied.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tokio::io::AsyncRead;
use vodsource_commands::ports::{Part, PutError, StoreError};

use super::{unavailable, LocalObjectStore};

/// The folder of multipart uploads, under the store's root.
pub(super) const FOLDER: &str = ".multipart";

/// An upload id this store made: 32 lowercase hex digits (never a path).
fn check_upload(id: &str) -> Result<(), StoreError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!("no multipart upload {id:?}")))
    }
}

impl LocalObjectStore {
    fn upload_folder(&self, id: &str) -> Result<PathBuf, StoreError> {
        check_upload(id)?;
        Ok(self.root.join(FOLDER).join(id))
    }

    pub(super) async fn create_upload(&self) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let folder = self.upload_folder(&id)?;
        tokio::fs::create_dir_all(&folder)
            .await
            .map_err(|e| unavailable(&folder, e))?;
        Ok(id)
    }

    pub(super) async fn store_part(
        &self,
        id: &str,
        number: u32,
        body: &mut (dyn AsyncRead + Send + Unpin),
        max_bytes: u64,
    ) -> Result<Part, PutError> {
        let folder = self.upload_folder(id)?;
        if !tokio::fs::try_exists(&folder).await.unwrap_or(false) {
            return Err(StoreError::NotFound(format!("no multipart upload {id}")).into());
        }
        let etag = uuid::Uuid::new_v4().simple().to_string();
        let path = folder.join(format!("{number}.{etag}"));
        let size = self.write_into(&path, body, max_bytes).await?;
        // The part's earlier versions go: the newest write of a number is the part.
        let earlier = format!("{number}.");
        if let Ok(mut entries) = tokio::fs::read_dir(&folder).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(&earlier) && !name.ends_with(&etag) {
                    let _ = tokio::fs::remove_file(entry.path()).await;
                }
            }
        }
        Ok(Part { number, size, etag })
    }

    pub(super) async fn stored_parts(&self, id: &str) -> Result<Vec<Part>, StoreError> {
        let folder = self.upload_folder(id)?;
        let mut entries = match tokio::fs::read_dir(&folder).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::NotFound(format!("no multipart upload {id}")));
            }
            Err(e) => return Err(unavailable(&folder, e)),
        };
        let mut parts = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| unavailable(&folder, e))? {
            let name = entry.file_name();
            let Some((number, etag)) = name.to_str().and_then(|n| n.split_once('.')) else {
                continue;
            };
            let (Ok(number), Ok(meta)) = (number.parse::<u32>(), entry.metadata().await) else {
                continue;
            };
            parts.push(Part {
                number,
                size: meta.len(),
                etag: etag.to_owned(),
            });
        }
        parts.sort_by_key(|p| p.number);
        // A part stored again is listed twice only until its older version is removed.
        Ok(parts)
    }

    pub(super) async fn assemble(&self, id: &str, parts: &[Part], target: &Path) -> Result<u64, StoreError> {
        let folder = self.upload_folder(id)?;
        let files: Vec<(PathBuf, u64)> = parts
            .iter()
            .map(|p| (folder.join(format!("{}.{}", p.number, p.etag)), p.size))
            .collect();
        let target = target.to_owned();
        let assembled = tokio::task::spawn_blocking(move || concatenate(&files, &target))
            .await
            .map_err(|e| StoreError::unexpected(format!("object store worker failed: {e}")))??;
        self.remove_upload(id).await?;
        Ok(assembled)
    }

    pub(super) async fn remove_upload(&self, id: &str) -> Result<(), StoreError> {
        let Ok(folder) = self.upload_folder(id) else {
            return Ok(());
        };
        match tokio::fs::remove_dir_all(&folder).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(&folder, e)),
        }
    }
}

/// Appends the parts after the first to the first (the kernel copies, `copy_file_range`),
/// syncs it and renames it to `target`. Each part must have the size it was stored with.
fn concatenate(parts: &[(PathBuf, u64)], target: &Path) -> Result<u64, StoreError> {
    let Some(((first, _), rest)) = parts.split_first() else {
        return Err(StoreError::Invalid("a multipart upload needs at least one part".into()));
    };
    let io = |path: &Path, e: std::io::Error| {
        if e.kind() == ErrorKind::NotFound {
            StoreError::NotFound(format!("part {} of the upload is missing", path.display()))
        } else {
            unavailable(path, e)
        }
    };
    for (path, size) in parts {
        let actual = std::fs::metadata(path).map_err(|e| io(path, e))?.len();
        if actual != *size {
            return Err(StoreError::Invalid(format!(
                "part {} is {actual} bytes, not the {size} it was stored with",
                path.display()
            )));
        }
    }
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .open(first)
        .map_err(|e| io(first, e))?;
    for (path, _) in rest {
        let mut part = std::fs::File::open(path).map_err(|e| io(path, e))?;
        std::io::copy(&mut part, &mut out).map_err(|e| io(path, e))?;
    }
    out.sync_all().map_err(|e| io(first, e))?;
    let size = out.metadata().map_err(|e| io(first, e))?.len();
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    std::fs::rename(first, target).map_err(|e| io(target, e))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use vodsource_commands::ports::ObjectStore;

    use super::*;

    #[tokio::test]
    async fn parts_assemble_in_order_and_a_part_stored_again_replaces_the_first() {
        let root = std::env::temp_dir().join(format!("vodsource-multipart-{}", uuid::Uuid::now_v7()));
        let store = LocalObjectStore::open(&root).await.expect("opens");
        let key = "sources/v1/source.mp4";
        let id = store.create_multipart(key).await.expect("create");
        let one = store
            .put_part(key, &id, 1, Box::new(Cursor::new(b"hello ".to_vec())), 100)
            .await
            .expect("part 1");
        let _stale = store
            .put_part(key, &id, 2, Box::new(Cursor::new(b"there".to_vec())), 100)
            .await
            .expect("part 2");
        let two = store
            .put_part(key, &id, 2, Box::new(Cursor::new(b"world".to_vec())), 100)
            .await
            .expect("part 2 again");
        let too_large = store
            .put_part(key, &id, 3, Box::new(Cursor::new(vec![0u8; 101])), 100)
            .await;
        assert!(
            matches!(too_large, Err(PutError::TooLarge { limit: 100 })),
            "{too_large:?}"
        );
        let meta = store.complete_multipart(key, &id, &[one, two]).await.expect("complete");
        assert_eq!(meta.size, 11);
        assert_eq!(std::fs::read(root.join(key)).expect("object"), b"hello world");
        assert!(!root.join(FOLDER).join(&id).exists(), "the upload's folder is gone");
        // Aborting what is gone, or was never there, is no error; a made-up id is no path.
        store.abort_multipart(key, &id).await.expect("abort again");
        let traversal = store
            .put_part(key, "../../etc", 1, Box::new(Cursor::new(vec![1u8])), 1)
            .await;
        assert!(
            matches!(traversal, Err(PutError::Store(StoreError::NotFound(_)))),
            "{traversal:?}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn an_upload_of_one_part_becomes_the_object_without_a_copy() {
        use std::os::unix::fs::MetadataExt as _;
        let root = std::env::temp_dir().join(format!("vodsource-multipart-{}", uuid::Uuid::now_v7()));
        let store = LocalObjectStore::open(&root).await.expect("opens");
        let key = "sources/v3/source.mp4";
        let id = store.create_multipart(key).await.expect("create");
        let part = store
            .put_part(key, &id, 1, Box::new(Cursor::new(vec![5u8; 1000])), 1000)
            .await
            .expect("part");
        let stored = root.join(FOLDER).join(&id).join(format!("1.{}", part.etag));
        let inode = std::fs::metadata(&stored).expect("the part's file").ino();
        store.complete_multipart(key, &id, &[part]).await.expect("complete");
        assert_eq!(
            std::fs::metadata(root.join(key)).expect("object").ino(),
            inode,
            "renamed, not copied"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn a_stale_or_missing_part_fails_completion_and_stores_nothing() {
        let root = std::env::temp_dir().join(format!("vodsource-multipart-{}", uuid::Uuid::now_v7()));
        let store = LocalObjectStore::open(&root).await.expect("opens");
        let key = "sources/v2/source.mp4";
        let id = store.create_multipart(key).await.expect("create");
        let first = store
            .put_part(key, &id, 1, Box::new(Cursor::new(b"a".to_vec())), 10)
            .await
            .expect("part");
        store
            .put_part(key, &id, 1, Box::new(Cursor::new(b"b".to_vec())), 10)
            .await
            .expect("part again");
        let stale = store.complete_multipart(key, &id, &[first]).await;
        assert!(matches!(stale, Err(StoreError::NotFound(_))), "{stale:?}");
        assert!(!root.join(key).exists());
        store.abort_multipart(key, &id).await.expect("abort");
        assert!(!root.join(FOLDER).join(&id).exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
