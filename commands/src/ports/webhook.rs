//! Where webhook requests go out: an HTTP POST to a URL a user named, which makes it a place
//! a server-side request forgery could start. Implementations refuse addresses inside the
//! network, follow no redirects and read only the start of an answer.

use std::time::Duration;

use async_trait::async_trait;

/// One request to a webhook endpoint.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// The endpoint's URL.
    pub url: String,
    /// Headers besides `Content-Type: application/json`.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The whole exchange (connection, request, answer's head) must end within this.
    pub timeout: Duration,
}

/// What an endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    /// The status code.
    pub status: u16,
    /// The start of the body (a few hundred bytes at most), as text.
    pub body: String,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The URL, or an address its name resolves to, is not allowed.
    #[error("{0}")]
    Refused(String),
    /// No answer: the connection failed or the timeout passed.
    #[error("{0}")]
    Failed(String),
}

/// Sends webhook requests.
#[async_trait]
pub trait WebhookSender: Send + Sync + 'static {
    /// Refuses, before any request, a URL this sender would never send to: its scheme, and
    /// its host when that is an address outside what is allowed. Names are checked when
    /// resolved, at every request.
    ///
    /// # Errors
    /// Why the URL is refused, for its owner to read.
    fn check_url(&self, url: &str) -> Result<(), String>;

    /// POSTs `request`; any answer (whatever its status) is `Ok`.
    ///
    /// # Errors
    /// [`SendError`].
    async fn send(&self, request: WebhookRequest) -> Result<WebhookResponse, SendError>;
}
