//! A TCP relay in front of a server, for clients that must survive the network: it counts
//! the bytes clients send, breaks the connection carrying them each time the count passes one
//! of its cut points, and can be pointed at another server (a restarted one) while clients
//! keep its address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    sent: Arc<AtomicU64>,
    cuts: Arc<AtomicUsize>,
    target: Arc<Mutex<SocketAddr>>,
}

impl Relay {
    /// A relay to `target` that cuts at each of `cut_at` (bytes sent through it in all).
    pub async fn start(target: SocketAddr, mut cut_at: Vec<u64>) -> Self {
        cut_at.sort_unstable();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let addr = listener.local_addr().expect("addr");
        let sent = Arc::new(AtomicU64::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let target = Arc::new(Mutex::new(target));
        let points = Arc::new(Mutex::new(cut_at));
        let (count, done, to) = (sent.clone(), cuts.clone(), target.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (sent, cuts, points) = (count.clone(), done.clone(), points.clone());
                let target = *to.lock().expect("target");
                tokio::spawn(async move {
                    // No server there (one restarting): the client's connection just breaks.
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                        let cut = {
                            let mut points = points.lock().expect("points");
                            let due = points.first().is_some_and(|&at| total >= at);
                            if due {
                                points.remove(0);
                            }
                            due
                        };
                        if cut {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if server_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                    // Both directions go: the client sees its connection broken mid-request.
                    back.abort();
                });
            }
        });
        Self {
            addr,
            sent,
            cuts,
            target,
        }
    }

    /// Bytes clients sent through it so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Connections it broke at its cut points.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }

    /// New connections go to `target`.
    pub fn point_at(&self, target: SocketAddr) {
        *self.target.lock().expect("target") = target;
    }
}
