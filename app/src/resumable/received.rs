//! A request body read to its end or to its first error: what arrived before a connection
//! broke is kept, the break noted, the bytes hashed when a checksum is named.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use tokio::io::{AsyncRead, ReadBuf};

use super::protocol::Hasher;

/// What a request's body delivered.
#[derive(Default)]
pub(super) struct Delivery {
    /// Why it stopped before its end (the client went away, it was too slow).
    pub(super) broken: Option<String>,
    pub(super) hasher: Option<Hasher>,
}

/// A request body read to its end or to its first error, whichever comes first: what
/// arrived before a connection broke is kept (tus acknowledges it), and the break is noted.
pub(super) struct Received<R> {
    pub(super) inner: R,
    pub(super) delivery: Arc<Mutex<Delivery>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Received<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let mut delivery = this.delivery.lock().unwrap_or_else(PoisonError::into_inner);
                let new = &buf.filled()[before..];
                if let Some(hasher) = delivery.hasher.as_mut() {
                    hasher.update(new);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                buf.set_filled(before);
                self.delivery.lock().unwrap_or_else(PoisonError::into_inner).broken = Some(e.to_string());
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
