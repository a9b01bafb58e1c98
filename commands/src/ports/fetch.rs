//! Where a source that sits at a URL is read from (the ingest of `source_url`).

use async_trait::async_trait;
use tokio::io::AsyncRead;

/// An open download: its length, when the server said it, and its bytes. The body may resume
/// across broken connections on its own (HTTP ranges); a body error means it could not.
pub struct Download {
    /// `Content-Length` of the whole file, when given.
    pub length: Option<u64>,
    /// The file's bytes, from the first.
    pub body: Box<dyn AsyncRead + Send + Unpin>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// Why a download could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// For good: the URL or an address it leads to is not allowed, the server refused
    /// (4xx), or the file is too large. The reason is for the video's owner to read.
    #[error("{0}")]
    Refused(String),
    /// For now: the server could not be reached or failed (5xx, timeout); a later attempt
    /// may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// Reads files at URLs on behalf of their owners, which makes it the one place a server-side
/// request forgery could start: implementations refuse addresses inside the network.
#[async_trait]
pub trait Fetcher: Send + Sync + 'static {
    /// Opens `url` for reading, refusing a file declared larger than `max_bytes`.
    ///
    /// # Errors
    /// [`FetchError`]: whether another attempt could succeed, and why not.
    async fn open(&self, url: &str, max_bytes: u64) -> Result<Download, FetchError>;
}
