//! The connection loop: hyper's HTTP/1.1 and HTTP/2 serving a poem endpoint, with a deadline
//! on every request head (poem's own server sets none, so a client sending one header byte a
//! second held a connection for as long as it liked) and a graceful shutdown: stop accepting,
//! let in-flight requests finish within the grace period, then drop what is left.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, Request, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Serves `endpoint` on `listener` until `stop` turns true; in-flight requests get `grace`.
///
/// # Errors
/// Never for a single connection's failure (it is logged); `Err` only if accepting fails
/// for good.
pub async fn run<E>(
    listener: TcpListener,
    endpoint: E,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<()>
where
    E: Endpoint<Output = Response> + 'static,
{
    let endpoint = Arc::new(endpoint);
    let local = listener.local_addr()?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => {
                let (socket, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let endpoint = endpoint.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let endpoint = endpoint.clone();
                    async move {
                        let req = Request::from((
                            req,
                            LocalAddr(Addr::SocketAddr(local)),
                            RemoteAddr(Addr::SocketAddr(remote)),
                            Scheme::HTTP,
                        ));
                        Ok::<_, Infallible>(hyper::Response::from(endpoint.get_response(req).await))
                    }
                });
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(socket), service).into_owned();
                let mut stop = stop.clone();
                connections.spawn(async move {
                    tokio::pin!(connection);
                    tokio::select! {
                        result = connection.as_mut() => log_end(remote, result.err()),
                        () = stopped(&mut stop) => {
                            connection.as_mut().graceful_shutdown();
                            log_end(remote, connection.await.err());
                        }
                    }
                });
                // Reap finished connections as we go, so the set holds only live ones.
                while connections.try_join_next().is_some() {}
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "connections still open after the grace period; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn log_end(remote: SocketAddr, error: Option<Box<dyn std::error::Error + Send + Sync>>) {
    if let Some(error) = error {
        // A head that did not arrive in time, a client gone mid-request: the client's doing.
        tracing::debug!(%remote, error = %error, "connection ended with an error");
    }
}
