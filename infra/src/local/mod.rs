//! The embedded object store: a local folder. Writes go to a temporary file that is synced
//! and renamed into place, so an object is whole or absent.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use vodsource_commands::ports::{check_key, ObjectMeta, ObjectStore, Part, PutError, StoreError};

mod multipart;

/// Objects as files under a root folder; the key is the relative path.
#[derive(Debug, Clone)]
pub struct LocalObjectStore {
    root: PathBuf,
}

impl LocalObjectStore {
    /// Opens (creating) the folder.
    ///
    /// # Errors
    /// `Unavailable` naming the folder when it cannot be created.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for folder in [".incoming", multipart::FOLDER] {
            tokio::fs::create_dir_all(root.join(folder))
                .await
                .map_err(|e| unavailable(&root, e))?;
        }
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

impl LocalObjectStore {
    /// Writes `body` (at most `max_bytes`) to a synced temporary file and renames it to
    /// `target`: the file is whole or absent.
    async fn write_into(
        &self,
        target: &Path,
        body: &mut (dyn AsyncRead + Send + Unpin),
        max_bytes: u64,
    ) -> Result<u64, PutError> {
        let temp = self
            .root
            .join(".incoming")
            .join(uuid::Uuid::now_v7().simple().to_string());
        let mut file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| unavailable(&temp, e))?;
        let result = async {
            let mut buffer = vec![0u8; 256 * 1024];
            let mut written = 0u64;
            loop {
                let n = body
                    .read(&mut buffer)
                    .await
                    .map_err(|e| PutError::Body(e.to_string()))?;
                if n == 0 {
                    break;
                }
                written += n as u64;
                if written > max_bytes {
                    return Err(PutError::TooLarge { limit: max_bytes });
                }
                file.write_all(&buffer[..n]).await.map_err(|e| unavailable(&temp, e))?;
            }
            file.sync_all().await.map_err(|e| unavailable(&temp, e))?;
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| unavailable(parent, e))?;
            }
            tokio::fs::rename(&temp, target)
                .await
                .map_err(|e| unavailable(target, e))?;
            Ok(written)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }
}

/// I/O errors as the port's, in one place: the file named, the error kept as the cause.
fn unavailable(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::unavailable_from(format_args!("object store folder {}", path.display()), e)
}

#[async_trait]
impl ObjectStore for LocalObjectStore {
    async fn put(
        &self,
        key: &str,
        mut body: Box<dyn AsyncRead + Send + Unpin>,
        max_bytes: u64,
    ) -> Result<u64, PutError> {
        let target = self.path(key)?;
        self.write_into(&target, &mut *body, max_bytes).await
    }

    async fn fetch(&self, key: &str, dest: &Path, expect: Option<&ObjectMeta>) -> Result<u64, StoreError> {
        let path = self.path(key)?;
        if let Some(expect) = expect {
            match tokio::fs::metadata(&path).await {
                Ok(meta) if meta.len() != expect.size => {
                    return Err(StoreError::Invalid(format!(
                        "object {key} is {} bytes, not the {} expected",
                        meta.len(),
                        expect.size
                    )))
                }
                _ => {}
            }
        }
        match tokio::fs::copy(&path, dest).await {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NotFound(format!("no object at {key}"))),
            Err(e) => Err(unavailable(&path, e)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: meta.len(),
                etag: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(&path, e)),
        }
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectMeta>, StoreError> {
        let folder = self.path(prefix.trim_end_matches('/'))?;
        let base = prefix.trim_end_matches('/').to_owned();
        let path = folder.clone();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            walk(&folder, &base, limit, &mut found)?;
            Ok::<_, std::io::Error>(found)
        })
        .await
        .map_err(|e| StoreError::unexpected(format!("object store worker failed: {e}")))?
        .map_err(|e| unavailable(&path, e))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let path = self.path(prefix.trim_end_matches('/'))?;
        let root = path.clone();
        tokio::task::spawn_blocking(move || count_and_remove(&root))
            .await
            .map_err(|e| StoreError::unexpected(format!("object store worker failed: {e}")))?
            .map_err(|e| unavailable(&path, e))
    }

    async fn read(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.len() > max_bytes => Err(StoreError::Invalid(format!(
                "object {key} is {} bytes, more than {max_bytes}",
                meta.len()
            ))),
            Ok(meta) if meta.is_file() => tokio::fs::read(&path)
                .await
                .map(Some)
                .map_err(|e| unavailable(&path, e)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(&path, e)),
        }
    }

    async fn create_multipart(&self, key: &str) -> Result<String, StoreError> {
        self.path(key)?;
        self.create_upload().await
    }

    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        mut body: Box<dyn AsyncRead + Send + Unpin>,
        max_bytes: u64,
    ) -> Result<Part, PutError> {
        self.path(key)?;
        self.store_part(upload_id, number, &mut *body, max_bytes).await
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[Part]) -> Result<ObjectMeta, StoreError> {
        let target = self.path(key)?;
        let size = self.assemble(upload_id, parts, &target).await?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag: None,
        })
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<Part>, StoreError> {
        self.path(key)?;
        self.stored_parts(upload_id).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.path(key)?;
        self.remove_upload(upload_id).await
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    async fn check(&self) -> Result<(), StoreError> {
        match tokio::fs::metadata(self.root.join(".incoming")).await {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::unavailable(format!(
                "object store folder {} is not a folder",
                self.root.display()
            ))),
            Err(e) => Err(unavailable(&self.root, e)),
        }
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

/// Adds the files under `folder` (whose key is `key`) to `found`, up to `limit`.
fn walk(folder: &Path, key: &str, limit: usize, found: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        if found.len() >= limit {
            return Ok(());
        }
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = format!("{key}/{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), &child, limit, found)?;
        } else if kind.is_file() {
            found.push(ObjectMeta {
                key: child,
                size: entry.metadata()?.len(),
                etag: None,
            });
        }
    }
    Ok(())
}

/// Removes a file or a folder tree, returning the number of files removed.
fn count_and_remove(path: &Path) -> std::io::Result<u64> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        std::fs::remove_file(path)?;
        return Ok(1);
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(path)? {
        removed += count_and_remove(&entry?.path())?;
    }
    std::fs::remove_dir(path)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_object_is_not_found_and_a_fetched_one_arrives_whole() {
        let root = std::env::temp_dir().join(format!("vodsource-local-{}", uuid::Uuid::now_v7()));
        let store = LocalObjectStore::open(&root).await.expect("opens");
        let dest = root.join("fetched");
        let missing = store.fetch("sources/v1/none.bin", &dest, None).await;
        assert!(
            matches!(&missing, Err(StoreError::NotFound(m)) if m.contains("none.bin")),
            "{missing:?}"
        );
        store
            .put("sources/v1/a.bin", Box::new(std::io::Cursor::new(vec![7u8; 100])), 100)
            .await
            .expect("put");
        assert_eq!(store.fetch("sources/v1/a.bin", &dest, None).await.expect("fetch"), 100);
        let _ = std::fs::remove_dir_all(&root);
    }
}
