//! The webhook sender against real sockets: it reads no more than the start of an answer,
//! gives up on a silent endpoint at the timeout, and connects only where the policy allows.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vodsource_commands::ports::{SendError, WebhookRequest, WebhookSender};
use vodsource_infra::egress::{AddressPolicy, HttpSender, SendSettings};

fn sender(allow: &[&str]) -> HttpSender {
    HttpSender::new(SendSettings {
        policy: AddressPolicy {
            allow: allow.iter().map(|a| a.parse().expect("cidr")).collect(),
        },
        allow_http: true,
        ..SendSettings::default()
    })
    .expect("sender")
}

fn request(url: String, timeout: Duration) -> WebhookRequest {
    WebhookRequest {
        url,
        headers: vec![("Vodsource-Event-Id", "e1".into())],
        body: br#"{"id":"e1"}"#.to_vec(),
        timeout,
    }
}

/// A server that reads a request, then answers with `answer` (written in full) or, when it
/// is `None`, keeps the connection open without a word.
async fn server(answer: Option<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                let _ = stream.read(&mut buf).await;
                match answer {
                    Some(answer) => {
                        let _ = stream.write_all(&answer).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn an_answer_is_read_to_512_bytes_and_a_silent_endpoint_times_out() {
    let big = vec![b'x'; 4 * 1024 * 1024];
    let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len()).into_bytes();
    answer.extend_from_slice(&big);
    let port = server(Some(answer)).await;
    let sender = sender(&["127.0.0.1/32"]);
    let got = sender
        .send(request(format!("http://127.0.0.1:{port}/hook"), Duration::from_secs(5)))
        .await
        .expect("an answer");
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 512, "the start of the body only");

    let port = server(None).await;
    let started = Instant::now();
    let failed = sender
        .send(request(
            format!("http://127.0.0.1:{port}/hook"),
            Duration::from_millis(300),
        ))
        .await
        .expect_err("no answer");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(
        matches!(&failed, SendError::Failed(why) if why.contains("no answer within 300 ms")),
        "{failed:?}"
    );
}

#[tokio::test]
async fn outside_the_allow_list_loopback_is_refused_before_and_after_resolution() {
    let port = server(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec())).await;
    let sender = sender(&[]);
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
    ] {
        let refused = sender
            .send(request(url.clone(), Duration::from_secs(5)))
            .await
            .expect_err("refused");
        assert!(
            matches!(&refused, SendError::Refused(why) if why.contains("loopback")),
            "{url}: {refused:?}"
        );
    }
    assert!(
        sender.check_url("http://localhost/hook").is_ok(),
        "names are checked when resolved"
    );
    assert!(sender.check_url("http://127.0.0.1/hook").is_err());
}
