//! Downloads of users' source URLs over HTTP(S), with every address checked.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use vodsource_commands::ports::{Download, FetchError, Fetcher};

use super::AddressPolicy;

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Which addresses may be reached.
    pub policy: AddressPolicy,
    /// Whether `http://` URLs (and redirects to them) are followed; `https://` only otherwise.
    pub allow_http: bool,
    /// Redirects followed at most.
    pub max_redirects: usize,
    /// A connection must be made within this.
    pub connect_timeout: Duration,
    /// A response must start, and each read of its body return, within this.
    pub read_timeout: Duration,
    /// A broken download resumes from where it stopped (HTTP `Range`) this many times.
    pub max_resumes: u32,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            policy: AddressPolicy::default(),
            allow_http: false,
            max_redirects: 5,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_resumes: 5,
        }
    }
}

/// A name resolved to an address the policy refuses (the resolver's error, found again in
/// the request's error chain).
#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// Resolves names with the system's resolver and refuses the lot when any address is not
/// allowed: the connection can only go to addresses that were checked.
struct CheckedResolver(Arc<AddressPolicy>);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addresses.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            for address in &addresses {
                if let Err(kind) = policy.check(address.ip()) {
                    let ip = address.ip();
                    return Err(Box::new(Refusal(format!("{host} resolves to {ip}, {kind}"))) as _);
                }
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client that connects only to addresses `policy` allows, through no proxy and
/// following no redirect (callers check each hop themselves, or follow none).
pub(super) fn checked_client(
    policy: &AddressPolicy,
    allow_http: bool,
    connect_timeout: Duration,
    purpose: &str,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve names itself, past the checks.
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver(Arc::new(policy.clone()))))
        .https_only(!allow_http)
        .connect_timeout(connect_timeout)
        .user_agent(format!("vodsource/{} ({purpose})", env!("CARGO_PKG_VERSION")))
}

/// Refuses a URL before any request: a scheme other than https (or http when allowed), no
/// host, or a host that is an address `policy` refuses. `verb` says what is done to such URLs.
pub(super) fn check_target(url: &Url, policy: &AddressPolicy, allow_http: bool, verb: &str) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        other => {
            let allowed = if allow_http { "https and http" } else { "https" };
            return Err(format!("refused: only {allowed} URLs are {verb}, not {other}"));
        }
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => std::net::IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => std::net::IpAddr::V6(v6),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err("refused: the URL names no host".into()),
    };
    policy.check(ip).map_err(|kind| format!("refused: {ip} is {kind}"))
}

/// The [`Fetcher`] over HTTP(S). Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    settings: FetchSettings,
}

impl HttpFetcher {
    /// A fetcher with `settings`.
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS roots).
    pub fn new(settings: FetchSettings) -> Result<Self, String> {
        // Every redirect hop is checked here, not followed blindly.
        let client = checked_client(
            &settings.policy,
            settings.allow_http,
            settings.connect_timeout,
            "source ingest",
        )
        .read_timeout(settings.read_timeout)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self { client, settings })
    }

    /// Refuses a URL before any request: its scheme, and its host when it is an address.
    fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        check_target(url, &self.settings.policy, self.settings.allow_http, "fetched").map_err(FetchError::Refused)
    }

    /// Sends a GET; a refused address or a failure to connect becomes a [`FetchError`].
    async fn get(
        &self,
        url: &Url,
        range_from: Option<(u64, Option<&HeaderValue>)>,
    ) -> Result<reqwest::Response, FetchError> {
        self.check_url(url)?;
        let mut request = self.client.get(url.clone()).header(ACCEPT_ENCODING, "identity");
        if let Some((from, validator)) = range_from {
            request = request.header(RANGE, format!("bytes={from}-"));
            if let Some(validator) = validator {
                request = request.header(IF_RANGE, validator.clone());
            }
        }
        request.send().await.map_err(|e| classify(url, e))
    }
}

/// Where a URL points, for reasons shown to its owner: `host[:port]`, nothing that could be
/// a secret (path, query, credentials).
pub(super) fn origin(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => "(no host)".into(),
    }
}

/// The URL without its query, fragment and credentials (they may carry secrets).
fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// A refusal found anywhere in the error's chain is one; anything else can be tried again.
fn classify(url: &Url, error: reqwest::Error) -> FetchError {
    match explain(url, error) {
        Ok(refusal) => FetchError::Refused(refusal),
        Err(failure) => FetchError::Unavailable(failure),
    }
}

/// A request's error: `Ok` with the reason when an address was refused, `Err` with what
/// failed otherwise (both name only the URL's origin).
pub(super) fn explain(url: &Url, error: reqwest::Error) -> Result<String, String> {
    let error = error.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Ok(format!("refused: {refusal}"));
        }
        source = e.source();
    }
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        detail = format!("{detail}: {e}");
        source = e.source();
    }
    Err(format!("{}: {detail}", origin(url)))
}

#[async_trait]
impl Fetcher for HttpFetcher {
    async fn open(&self, url: &str, max_bytes: u64) -> Result<Download, FetchError> {
        let mut url = Url::parse(url).map_err(|e| FetchError::Refused(format!("not a URL ({e})")))?;
        let mut hops = 0;
        let response = loop {
            let response = self.get(&url, None).await.map_err(|e| match (hops, e) {
                (0, e) => e,
                (_, FetchError::Refused(why)) => FetchError::Refused(format!("redirected to {}: {why}", origin(&url))),
                (_, FetchError::Unavailable(why)) => FetchError::Unavailable(format!("redirected: {why}")),
            })?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| {
                        FetchError::Refused(format!("{}: a redirect ({status}) without a Location", origin(&url)))
                    })?;
                let next = url
                    .join(location)
                    .map_err(|e| FetchError::Refused(format!("{}: a redirect to a bad URL ({e})", origin(&url))))?;
                hops += 1;
                if hops > self.settings.max_redirects {
                    return Err(FetchError::Refused(format!(
                        "{}: more than {} redirects",
                        origin(&url),
                        self.settings.max_redirects
                    )));
                }
                url = next;
                continue;
            }
            if status == StatusCode::OK {
                break response;
            }
            let why = format!("{} answered {status}", origin(&url));
            return Err(if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                FetchError::Refused(why)
            } else {
                FetchError::Unavailable(why)
            });
        };
        let length = response.content_length();
        if let Some(length) = length.filter(|l| *l > max_bytes) {
            return Err(FetchError::Refused(format!(
                "{}: the file is {length} bytes, above the limit of {max_bytes}",
                origin(&url)
            )));
        }
        // A resumed range must be of the same file: its ETag, else its date, must still hold.
        let validator = response
            .headers()
            .get(ETAG)
            .filter(|e| !e.as_bytes().starts_with(b"W/"))
            .or_else(|| response.headers().get(LAST_MODIFIED))
            .cloned();
        let (sender, receiver) = mpsc::channel(8);
        let pump = Pump {
            fetcher: self.clone(),
            url,
            length,
            validator,
            sender,
            max_resumes: self.settings.max_resumes,
        };
        let task = tokio::spawn(pump.run(response));
        Ok(Download {
            length,
            body: Box::new(Body {
                receiver,
                current: Bytes::new(),
                _task: AbortOnDrop(task),
            }),
        })
    }
}

/// Moves a download's bytes into its [`Body`], resuming broken connections with a range.
struct Pump {
    fetcher: HttpFetcher,
    url: Url,
    length: Option<u64>,
    validator: Option<HeaderValue>,
    sender: mpsc::Sender<std::io::Result<Bytes>>,
    max_resumes: u32,
}

impl Pump {
    async fn run(self, first: reqwest::Response) {
        let mut response = first;
        let mut received = 0_u64;
        let mut resumes = 0;
        loop {
            let broken = match response.chunk().await {
                Ok(Some(bytes)) => {
                    received += bytes.len() as u64;
                    if self.sender.send(Ok(bytes)).await.is_err() {
                        return; // the reader is gone
                    }
                    continue;
                }
                Ok(None) if self.length.is_none_or(|l| received >= l) => return,
                Ok(None) => format!("the connection ended at byte {received}"),
                Err(e) => format!("the download broke at byte {received}: {e}"),
            };
            if resumes >= self.max_resumes || self.length.is_none() {
                let _ = self.sender.send(Err(std::io::Error::other(broken))).await;
                return;
            }
            resumes += 1;
            tracing::info!(url = %redact(&self.url), received, resumes, reason = %broken, "resuming a download");
            match self.resume(received).await {
                Ok(next) => response = next,
                Err(why) => {
                    let _ = self
                        .sender
                        .send(Err(std::io::Error::other(format!("{broken}; resuming failed: {why}"))))
                        .await;
                    return;
                }
            }
        }
    }

    /// The rest of the file from byte `from`: a 206 of exactly that range of the same file.
    async fn resume(&self, from: u64) -> Result<reqwest::Response, String> {
        let response = self
            .fetcher
            .get(&self.url, Some((from, self.validator.as_ref())))
            .await
            .map_err(|e| e.to_string())?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                return Err("the server sent the whole file again (no ranges, or the file changed)".into())
            }
            status => return Err(format!("the server answered {status}")),
        }
        let range = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|r| r.to_str().ok())
            .unwrap_or_default();
        let starts_at = range
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('-'))
            .and_then(|(start, _)| start.parse::<u64>().ok());
        if starts_at != Some(from) {
            return Err(format!("the server sent {range:?}, not bytes from {from}"));
        }
        Ok(response)
    }
}

/// Aborts the pump when the body is dropped (the reader gave up).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A download's bytes as they arrive from its pump.
struct Body {
    receiver: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
    _task: AbortOnDrop,
}

impl AsyncRead for Body {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                let chunk = self.current.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(Ok(bytes))) => self.current = bytes,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
