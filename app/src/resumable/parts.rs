//! Storing a request's bytes: as one streamed part where the store takes parts of any size,
//! else in parts of the store's size after the upload's tail, the rest kept as the new tail.

use std::collections::VecDeque;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use vodsource_commands::layout;
use vodsource_commands::ports::{Part, PutError};

use super::received::Received;
use super::{Manifest, Resumable, Tail};
use crate::error::{AppError, ErrorKind};

/// Parts of one request sent to the store at once (each buffered: 4 × 8 MiB on S3).
const PARTS_IN_FLIGHT: usize = 4;

impl Resumable<'_> {
    /// Stores the body as one part (stores whose parts may have any size).
    pub(super) async fn append_part(
        &self,
        manifest: &mut Manifest,
        body: Received<Box<dyn AsyncRead + Send + Unpin>>,
        remaining: u64,
    ) -> Result<(), AppError> {
        let number = manifest.parts.len() as u32 + 1;
        let part = self
            .core
            .ports
            .objects
            .put_part(&manifest.key, &manifest.multipart, number, Box::new(body), remaining)
            .await
            .map_err(|e| put_error(&e, remaining))?;
        // An empty part is named nowhere (the next request stores its number again).
        if part.size > 0 {
            manifest.parts.push(part);
        }
        Ok(())
    }

    /// Stores the body in parts of `size` bytes after the tail, keeping the rest as the new
    /// tail. With `durable_parts`, the manifest names each part as soon as it is stored.
    pub(super) async fn append_parts(
        &self,
        manifest: &mut Manifest,
        body: Received<Box<dyn AsyncRead + Send + Unpin>>,
        remaining: u64,
        size: u64,
        durable_parts: bool,
    ) -> Result<(), AppError> {
        let objects = &self.core.ports.objects;
        let part_size = usize::try_from(size).unwrap_or(usize::MAX);
        let mut buffer = Vec::with_capacity(part_size);
        if let Some(tail) = &manifest.tail {
            let key = layout::upload_tail(&manifest.id, &tail.name);
            let bytes = objects
                .read(&key, size)
                .await
                .map_err(|e| AppError::store("reading an upload's tail", &e))?
                .ok_or_else(|| AppError::internal("an upload's tail is missing", &key))?;
            buffer = bytes;
        }
        let end = manifest.length;
        // One byte past the end is enough to know a body is too long.
        let mut body = body.take(remaining + 1);
        // Bytes in parts stored or on their way; parts go out while the next one arrives.
        let mut queued: u64 = manifest.parts.iter().map(|p| p.size).sum();
        let mut next = manifest.parts.len() as u32 + 1;
        let mut in_flight: VecDeque<JoinHandle<Result<Part, PutError>>> = VecDeque::new();
        let sent = async {
            loop {
                let start = buffer.len();
                buffer.resize(part_size, 0);
                let mut filled = start;
                while filled < part_size {
                    let n = body
                        .read(&mut buffer[filled..])
                        .await
                        .map_err(|e| AppError::internal("reading an upload", &e))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                buffer.truncate(filled);
                let reached = queued + buffer.len() as u64;
                if reached > end {
                    return Err(too_large(remaining));
                }
                // The body ended inside a part: what there is becomes the tail.
                if buffer.is_empty() || (buffer.len() < part_size && reached < end) {
                    break;
                }
                if reached == end && body_has_more(&mut body).await {
                    return Err(too_large(remaining));
                }
                let chunk = std::mem::replace(&mut buffer, Vec::with_capacity(part_size));
                let (objects, key, upload) = (
                    self.core.ports.objects.clone(),
                    manifest.key.clone(),
                    manifest.multipart.clone(),
                );
                let number = next;
                in_flight.push_back(tokio::spawn(async move {
                    objects
                        .put_part(&key, &upload, number, Box::new(std::io::Cursor::new(chunk)), size)
                        .await
                }));
                next += 1;
                queued = reached;
                // Every part stored is named at once (a crash keeps it); the oldest is waited
                // for when too many are on their way.
                while in_flight.front().is_some_and(JoinHandle::is_finished) || in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Some(oldest) = in_flight.pop_front() {
                        self.record(manifest, oldest, size, durable_parts).await?;
                    }
                }
                if reached == end {
                    break;
                }
            }
            // Parts are named in order, each once it is stored.
            while let Some(oldest) = in_flight.pop_front() {
                self.record(manifest, oldest, size, durable_parts).await?;
            }
            Ok(())
        }
        .await;
        if sent.is_err() {
            for part in &in_flight {
                part.abort();
            }
        }
        sent?;
        if !buffer.is_empty() {
            let name = uuid::Uuid::now_v7().simple().to_string();
            let key = layout::upload_tail(&manifest.id, &name);
            let length = buffer.len() as u64;
            objects
                .put(&key, Box::new(std::io::Cursor::new(buffer)), length)
                .await
                .map_err(|e| put_error(&e, length))?;
            manifest.tail = Some(Tail { name, size: length });
        }
        Ok(())
    }

    /// Names a stored part in the manifest (the tail it began with is then spent); with
    /// `durable`, saves the manifest at once.
    async fn record(
        &self,
        manifest: &mut Manifest,
        part: JoinHandle<Result<Part, PutError>>,
        size: u64,
        durable: bool,
    ) -> Result<(), AppError> {
        let part = part
            .await
            .map_err(|e| AppError::internal("storing a part of an upload", &e))?
            .map_err(|e| put_error(&e, size))?;
        let old_tail = manifest.tail.take();
        manifest.parts.push(part);
        if durable {
            self.save(manifest).await?;
            self.drop_tail(manifest, old_tail.as_ref()).await;
        }
        Ok(())
    }
}

/// Whether a body has bytes left after the upload's end.
pub(super) async fn body_has_more(body: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut probe = [0u8; 1];
    matches!(body.read(&mut probe).await, Ok(n) if n > 0)
}

pub(super) fn too_large(remaining: u64) -> AppError {
    AppError::new(
        ErrorKind::TooLarge,
        "PAYLOAD_TOO_LARGE",
        format!("the body runs past the upload's length: {remaining} bytes were left"),
        serde_json::json!({ "remaining": remaining }),
    )
}

pub(super) fn put_error(error: &PutError, limit: u64) -> AppError {
    match error {
        PutError::TooLarge { .. } => too_large(limit),
        PutError::Body(message) => AppError::invalid("body", format!("the body could not be read: {message}")),
        PutError::Store(e) => AppError::store("storing an upload", e),
    }
}
