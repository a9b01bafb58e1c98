//! Webhook requests over HTTP(S), to checked addresses only.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::CONTENT_TYPE;
use reqwest::Url;
use vodsource_commands::ports::{SendError, WebhookRequest, WebhookResponse, WebhookSender};

use super::fetcher::{check_target, checked_client, explain, origin};
use super::AddressPolicy;

/// How webhook requests are sent.
#[derive(Debug, Clone)]
pub struct SendSettings {
    /// Which addresses may be reached.
    pub policy: AddressPolicy,
    /// Whether `http://` endpoints are allowed; `https://` only otherwise.
    pub allow_http: bool,
    /// A connection must be made within this.
    pub connect_timeout: Duration,
}

impl Default for SendSettings {
    fn default() -> Self {
        Self {
            policy: AddressPolicy::default(),
            allow_http: false,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The most of an answer's body read (the rest is dropped unread).
const MAX_ANSWER_BYTES: usize = 512;

/// The [`WebhookSender`] over HTTP(S). Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct HttpSender {
    client: reqwest::Client,
    settings: SendSettings,
}

impl HttpSender {
    /// A sender with `settings`.
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS roots).
    pub fn new(settings: SendSettings) -> Result<Self, String> {
        let client = checked_client(
            &settings.policy,
            settings.allow_http,
            settings.connect_timeout,
            "webhooks",
        )
        // Many endpoints, each with a few connections kept.
        .pool_max_idle_per_host(32)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self { client, settings })
    }

    fn parse(&self, url: &str) -> Result<Url, String> {
        let parsed = Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        check_target(&parsed, &self.settings.policy, self.settings.allow_http, "sent to")?;
        Ok(parsed)
    }
}

#[async_trait]
impl WebhookSender for HttpSender {
    fn check_url(&self, url: &str) -> Result<(), String> {
        self.parse(url).map(|_| ())
    }

    async fn send(&self, request: WebhookRequest) -> Result<WebhookResponse, SendError> {
        let url = self.parse(&request.url).map_err(SendError::Refused)?;
        let mut builder = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(request.body);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let exchange = async {
            let mut response = builder.send().await?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while body.len() < MAX_ANSWER_BYTES {
                match response.chunk().await? {
                    Some(chunk) => body.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER_BYTES - body.len())]),
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>(WebhookResponse {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        match tokio::time::timeout(request.timeout, exchange).await {
            Err(_) => Err(SendError::Failed(format!(
                "{}: no answer within {} ms",
                origin(&url),
                request.timeout.as_millis()
            ))),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(match explain(&url, e) {
                Ok(refusal) => SendError::Refused(refusal),
                Err(failure) => SendError::Failed(failure),
            }),
        }
    }
}
