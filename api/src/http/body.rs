//! Request bodies with bounds: a size, a pace and, for uploads, an exact length. A client that
//! sends one byte a second (slowloris) must not hold a connection and a task for hours, and a
//! short or long upload must never replace a good source.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How slow a body may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Longest wait for the next byte.
    pub idle: Duration,
    /// The body must be whole by then (JSON bodies); `None` for uploads, which may take hours.
    pub total: Option<Duration>,
    /// At least this many bytes must arrive in every window of `window` (uploads).
    pub min_bytes_per_window: u64,
    /// The window of `min_bytes_per_window`.
    pub window: Duration,
}

/// An `AsyncRead` that fails with `TimedOut` when its source breaks the pace.
pub struct Paced<R> {
    inner: R,
    pace: Pace,
    idle: Pin<Box<Sleep>>,
    deadline: Option<Pin<Box<Sleep>>>,
    window_ends: Instant,
    window_bytes: u64,
}

impl<R> Paced<R> {
    /// `inner` read at `pace`, from now.
    pub fn new(inner: R, pace: Pace) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle: Box::pin(tokio::time::sleep_until(now + pace.idle)),
            deadline: pace.total.map(|t| Box::pin(tokio::time::sleep_until(now + t))),
            window_ends: now + pace.window,
            window_bytes: 0,
            pace,
        }
    }
}

fn timed_out(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

fn too_slow(bytes: u64, pace: &Pace) -> io::Error {
    timed_out(format!(
        "the body arrived at {bytes} bytes in {:?}, {RATE} {} bytes",
        pace.window, pace.min_bytes_per_window
    ))
}

impl<R: AsyncRead + Unpin> AsyncRead for Paced<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                let now = Instant::now();
                if n > 0 {
                    this.idle.as_mut().reset(now + this.pace.idle);
                }
                this.window_bytes += n;
                if now >= this.window_ends {
                    if n > 0 && this.window_bytes < this.pace.min_bytes_per_window {
                        // An error reads nothing: the bytes of this call are given back.
                        buf.set_filled(before);
                        return Poll::Ready(Err(too_slow(this.window_bytes, &this.pace)));
                    }
                    this.window_ends = now + this.pace.window;
                    this.window_bytes = 0;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(deadline) = this.deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(timed_out(format!(
                            "{TOTAL} {:?}",
                            this.pace.total.unwrap_or_default()
                        ))));
                    }
                }
                if this.idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out(format!("{IDLE} {:?}", this.pace.idle))));
                }
                // A window that passes with too little is caught here too, not only on a read.
                if Instant::now() >= this.window_ends && this.window_bytes < this.pace.min_bytes_per_window {
                    return Poll::Ready(Err(too_slow(this.window_bytes, &this.pace)));
                }
                Poll::Pending
            }
        }
    }
}

/// An `AsyncRead` that fails with `UnexpectedEof` when its source ends before `expected`
/// bytes: a short upload is an error the store discards, never an object.
pub struct Exact<R> {
    inner: R,
    expected: u64,
    read: u64,
}

impl<R> Exact<R> {
    /// `inner`, which must hold exactly `expected` bytes (more is the store's limit to catch).
    pub fn new(inner: R, expected: u64) -> Self {
        Self {
            inner,
            expected,
            read: 0,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Exact<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                this.read += n;
                if n == 0 && buf.remaining() > 0 && this.read < this.expected {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{SHORT} {} of the declared {} bytes", this.read, this.expected),
                    )));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// What ended a body early, from the message a store passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// Shorter than declared ([`Exact`]).
    Short,
    /// Too slow ([`Paced`]).
    Slow,
    /// The client went away or sent garbage.
    Other,
}

/// Classifies the message of a body read that failed (stores keep only the text).
pub fn body_fault(message: &str) -> BodyFault {
    if message.contains(SHORT) {
        BodyFault::Short
    } else if [IDLE, TOTAL, RATE].iter().any(|m| message.contains(m)) {
        BodyFault::Slow
    } else {
        BodyFault::Other
    }
}

const SHORT: &str = "the body ended after";
const IDLE: &str = "no byte of the body arrived for";
const TOTAL: &str = "the body did not arrive within";
const RATE: &str = "below the minimum of";

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[tokio::test]
    async fn a_short_body_is_an_error_and_a_whole_one_is_not() {
        let mut whole = Exact::new(&b"0123456789"[..], 10);
        let mut out = Vec::new();
        assert_eq!(whole.read_to_end(&mut out).await.expect("whole"), 10);
        let mut short = Exact::new(&b"01234"[..], 10);
        let error = short.read_to_end(&mut Vec::new()).await.expect_err("short");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            error.to_string().contains("after 5 of the declared 10 bytes"),
            "{error}"
        );
    }

    // These clients are slow on purpose: their pauses are what is under test.

    /// A client writing `byte` every 20 ms until the reader goes away.
    fn trickle(mut tx: tokio::io::DuplexStream, byte: &'static [u8]) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            for _ in 0..500 {
                if tokio::io::AsyncWriteExt::write_all(&mut tx, byte).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_times_out() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let pace = Pace {
            idle: Duration::from_millis(200),
            total: None,
            min_bytes_per_window: 0,
            window: Duration::from_secs(60),
        };
        let mut body = Paced::new(rx, pace);
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"abc")
            .await
            .expect("write");
        let mut buf = [0u8; 8];
        assert_eq!(body.read(&mut buf).await.expect("first bytes"), 3);
        let error = body.read(&mut buf).await.expect_err("idle");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains(IDLE), "{error}");
        assert_eq!(body_fault(&error.to_string()), BodyFault::Slow);
        drop(tx);
    }

    #[tokio::test]
    async fn a_trickle_below_the_minimum_rate_times_out() {
        let (tx, rx) = tokio::io::duplex(64);
        let pace = Pace {
            idle: Duration::from_secs(30),
            total: None,
            min_bytes_per_window: 100,
            window: Duration::from_millis(300),
        };
        let mut body = Paced::new(rx, pace);
        // A byte every 20 ms: never idle, far below 100 bytes per 300 ms.
        let writer = trickle(tx, b"x");
        let error = body.read_to_end(&mut Vec::new()).await.expect_err("too slow");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains(RATE), "{error}");
        writer.abort();
    }

    #[tokio::test]
    async fn a_json_body_must_be_whole_within_its_deadline() {
        let (tx, rx) = tokio::io::duplex(64);
        let pace = Pace {
            idle: Duration::from_secs(30),
            total: Some(Duration::from_millis(300)),
            min_bytes_per_window: 0,
            window: Duration::from_secs(60),
        };
        let mut body = Paced::new(rx, pace);
        let writer = trickle(tx, b"{");
        let error = body.read_to_end(&mut Vec::new()).await.expect_err("too long");
        assert!(error.to_string().contains(TOTAL), "{error}");
        writer.abort();
    }
}
