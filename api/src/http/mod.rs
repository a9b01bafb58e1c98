//! The HTTP API: poem-openapi operations under `/v1`, the OpenAPI document at
//! `/openapi.json`, Swagger UI at `/docs`, and in embedded mode signed upload and media URLs.

pub mod auth;
pub mod beacons;
mod body;
mod direct;
mod document;
pub mod error;
mod events;
mod guard;
pub mod limits;
mod media;
pub mod metrics;
pub mod model;
mod ops;
mod server;
pub mod state;
mod uploads;
mod videos;
mod viewers;
mod web;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::middleware::Cors;
use poem::{get, put, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApiService, OperationId};
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;
use vodsource_app::App;

use self::auth::{AuthSettings, Gate, LOCAL_TOKEN};
use self::beacons::BeaconsApi;
use self::body::{Pace, Paced};
use self::direct::DirectApi;
use self::error::{ApiError, Rejection};
use self::guard::LocalGuard;
use self::limits::{HttpLimits, StreamSlots};
use self::metrics::Metrics;
use self::ops::OpsApi;
use self::state::AppState;
use self::uploads::UploadsApi;
use self::videos::VideosApi;
use self::viewers::ViewersApi;
use self::webhooks::WebhooksApi;
use crate::supervisor::{Stage, Supervisor};

/// The largest JSON request body.
const MAX_JSON_BODY: usize = 256 * 1024;

/// Every group of operations the API has.
pub type Operations = (
    VideosApi,
    UploadsApi,
    DirectApi,
    BeaconsApi,
    ViewersApi,
    WebhooksApi,
    OpsApi,
);

/// The OpenAPI service (also used to print the document without a server).
pub fn openapi(state: &AppState) -> OpenApiService<Operations, ()> {
    OpenApiService::new(
        (
            VideosApi { state: state.clone() },
            UploadsApi { state: state.clone() },
            DirectApi { state: state.clone() },
            BeaconsApi { state: state.clone() },
            ViewersApi { state: state.clone() },
            WebhooksApi { state: state.clone() },
            OpsApi { state: state.clone() },
        ),
        "vodsource",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "The command and query API of vodsource, an event-sourced video-on-demand backend. \
         Every write returns the video's new stream version; send it back as If-Match to write \
         conditionally, and an Idempotency-Key to retry safely.",
    )
    .server(state.app.settings().public_url.clone())
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Any error that escaped a handler, in the API's error shape; a 405 says which methods the
/// path has (`Allow`, RFC 9110 15.5.6).
fn error_response(error: poem::Error, allow: Option<&str>) -> Response {
    if error.is_from_response() {
        // An operation's own answer (an `ApiError`), already in shape.
        return error.into_response();
    }
    if error.is::<Rejection>() {
        return match error.downcast::<Rejection>() {
            Ok(rejection) => rejection.0.into_response(),
            Err(error) => error.into_response(),
        };
    }
    let status = error.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("NOT_FOUND", "no such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => ("METHOD_NOT_ALLOWED", "method not allowed on this route".to_owned()),
        s if s.is_server_error() => {
            tracing::error!(error = %error, "request failed");
            ("INTERNAL", "internal error; see the server log".to_owned())
        }
        // Everything a client did wrong has a variant of the API's error.
        _ => return error::from_poem_error(error).into_response(),
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message, "details": null } });
    let mut response = error.into_response();
    let mut fresh = Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(body.to_string());
    for (name, value) in response.headers_mut().drain() {
        if let Some(name) = name {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                fresh.headers_mut().insert(name, value);
            }
        }
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(value) = allow.and_then(|a| HeaderValue::from_str(a).ok()) {
            fresh.headers_mut().insert(header::ALLOW, value);
        }
    }
    fresh
}

/// Bounds a request body to `limit` bytes: refused up front when its length says so, cut off
/// (and so unparseable) when it is sent chunked.
fn bound_body(req: &mut Request, limit: usize) -> Option<Response> {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(length) if length > limit as u64 => Some(error_response(
            poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE),
            None,
        )),
        _ => {
            let body = req.take_body().into_async_read().take(limit as u64 + 1);
            req.set_body(poem::Body::from_async_read(body));
            None
        }
    }
}

/// Makes a request body fail once it breaks `pace` (a trickling client's request ends with
/// an error instead of holding its task).
fn pace_body(req: &mut Request, pace: Pace, counted: &Metrics, route: &'static str) {
    let body = Paced::new(counted.count_body(route, req.take_body().into_async_read()), pace);
    req.set_body(poem::Body::from_async_read(body));
}

/// The headers of the web app's page: scripts from this server only (hls.js runs its
/// transmuxer in a worker made from a blob), media and their requests from wherever the
/// store or CDN is, no framing, no sniffing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; worker-src 'self' blob:; \
     style-src 'self'; img-src 'self' data: blob: http: https:; media-src 'self' blob: http: https:; \
     connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn harden(response: &mut Response, page: bool) {
    let headers = response.headers_mut();
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if page {
        headers.insert(
            "content-security-policy",
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    } else {
        headers.insert(
            "content-security-policy",
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
    }
}

/// What tus asks of every answer of its endpoints: the version on each (but discovery's,
/// which has it already), and on a 412 the versions served.
fn tus_headers(response: &mut Response) {
    let version = HeaderValue::from_static(vodsource_app::resumable::TUS_VERSION);
    if response.status().is_client_error() || response.status().is_server_error() {
        // A refusal may leave a body of bytes unread: this connection cannot carry another.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if response.status() == StatusCode::PRECONDITION_FAILED {
        response.headers_mut().insert("tus-version", version.clone());
    }
    response.headers_mut().insert("tus-resumable", version);
}

/// The methods each path answers, from the OpenAPI document and the routes outside it, for
/// the `Allow` header of a 405.
struct Methods(Vec<(Vec<String>, Vec<&'static str>)>);

impl Methods {
    fn new(document: &serde_json::Value) -> Self {
        let mut table: Vec<(Vec<String>, Vec<&'static str>)> = Vec::new();
        let mut add = |path: &str, method: &'static str| {
            let segments: Vec<String> = path.trim_matches('/').split('/').map(str::to_owned).collect();
            match table.iter_mut().find(|(s, _)| *s == segments) {
                Some((_, methods)) => methods.push(method),
                None => table.push((segments, vec![method])),
            }
        };
        if let Some(paths) = document.get("paths").and_then(serde_json::Value::as_object) {
            for (path, item) in paths {
                for (method, name) in [
                    ("get", "GET"),
                    ("post", "POST"),
                    ("put", "PUT"),
                    ("patch", "PATCH"),
                    ("delete", "DELETE"),
                    ("head", "HEAD"),
                    ("options", "OPTIONS"),
                ] {
                    if item.get(method).is_some() {
                        add(path, name);
                    }
                }
            }
        }
        add("/uploads/{token}", "PUT");
        for path in [
            "/",
            "/app/{name}",
            "/openapi.json",
            "/metrics",
            "/livez",
            "/readyz",
            "/healthz",
        ] {
            add(path, "GET");
        }
        for (_, methods) in &mut table {
            if methods.contains(&"GET") && !methods.contains(&"HEAD") {
                methods.push("HEAD");
            }
        }
        Self(table)
    }

    /// `Allow` for `path`, if a route has it.
    fn allow(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segments.first() == Some(&"media") || segments.first() == Some(&"docs") {
            return Some("GET, HEAD".into());
        }
        self.0
            .iter()
            .find(|(pattern, _)| {
                pattern.len() == segments.len()
                    && pattern
                        .iter()
                        .zip(&segments)
                        .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
            })
            .map(|(_, methods)| methods.join(", "))
    }
}

/// The whole HTTP application.
pub fn app(state: AppState, gate: Arc<Gate>) -> impl Endpoint<Output = Response> {
    let api = openapi(&state);
    let mut document: serde_json::Value = serde_json::from_str(&api.spec()).unwrap_or_default();
    document::prune(&mut document);
    document::describe(
        &mut document,
        &document::Facts {
            authentication: gate.enabled(),
            max_source_bytes: state.app.videos().max_source_bytes(),
        },
    );
    let methods = Arc::new(Methods::new(&document));
    let pruned = document.to_string();
    // Swagger UI embeds the document it shows: the pruned one, as served.
    let ui = document::embed(&api.swagger_ui_html(), &pruned);
    let spec = poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(pruned.clone())
    });
    let docs = poem::endpoint::make_sync(move |_| poem::web::Html(ui.clone()));
    let metrics = state.metrics.clone();
    let limits = state.limits.clone();
    let guard = (!gate.enabled()).then(|| LocalGuard::new(&state.app.settings().public_url));
    let auth_off = !gate.enabled();
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at("/uploads/:token", put(media::upload))
        .at("/media/:token/:video/*rest", get(media::media).with(Cors::new()))
        .at("/", get(web::index))
        .at("/app/:name", get(web::asset))
        .at("/metrics", get(ops::metrics_admin))
        .at("/livez", get(ops::livez))
        .at("/healthz", get(ops::livez))
        .at("/readyz", get(ops::readyz))
        // Every operation's path starts with /v1 (the prefix is the APIs' own).
        .nest_no_strip("/v1", api)
        .data(state)
        .data(gate)
        .around(move |ep, mut req: Request| {
            let metrics = metrics.clone();
            let methods = methods.clone();
            let limits = limits.clone();
            let guard = guard.clone();
            async move {
                let started = Instant::now();
                let method = method_name(req.method());
                let fallback = match req.uri().path() {
                    p if p.starts_with("/uploads/") || p.starts_with("/v1/uploads") => "upload",
                    p if p.starts_with("/media/") => "media",
                    p if p.starts_with("/v1/direct/") => "direct",
                    p if p.starts_with("/docs") || p == "/openapi.json" => "docs",
                    p if p == "/" || p.starts_with("/app/") => "web",
                    "/metrics" => "metrics",
                    "/livez" | "/readyz" | "/healthz" => "probe",
                    "/v1/playback/beacons" => "beacons",
                    _ => "other",
                };
                let page = fallback == "web";
                let tus = req.uri().path().starts_with("/v1/uploads");
                if let Some(guard) = &guard {
                    if let Err(refused) = guard.check(&req) {
                        let mut response = refused.into_response();
                        harden(&mut response, page);
                        metrics.request(method, fallback, 403, started.elapsed());
                        return Ok(response);
                    }
                }
                if auth_off && !req.headers().contains_key(header::AUTHORIZATION) {
                    // No tokens without authentication: the security scheme still wants one.
                    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {LOCAL_TOKEN}")) {
                        req.headers_mut().insert(header::AUTHORIZATION, value);
                    }
                }
                if fallback == "upload" {
                    // Uploads may take hours, but not at a trickle.
                    pace_body(
                        &mut req,
                        Pace {
                            idle: limits.body_timeout,
                            total: None,
                            min_bytes_per_window: limits.upload_min_bytes_per_minute,
                            window: Duration::from_secs(60),
                        },
                        &metrics,
                        fallback,
                    );
                } else {
                    let limit = if fallback == "beacons" {
                        vodsource_qoe::MAX_BATCH_BYTES
                    } else {
                        MAX_JSON_BODY
                    };
                    if let Some(refused) = bound_body(&mut req, limit) {
                        metrics.request(method, fallback, 413, started.elapsed());
                        return Ok(refused);
                    }
                    pace_body(
                        &mut req,
                        Pace {
                            idle: limits.body_timeout,
                            total: Some(limits.body_timeout),
                            min_bytes_per_window: 0,
                            window: limits.body_timeout,
                        },
                        &metrics,
                        fallback,
                    );
                }
                // A header the document gives a form must be text to have one: poem reads a value
                // that is not visible ASCII as absent, which would let `If-Match: ×ø` through as
                // no condition at all.
                for name in ["if-match", "last-event-id"] {
                    if req.headers().get(name).is_some_and(|v| v.to_str().is_err()) {
                        let refused = ApiError::invalid(name, format!("{name} must be visible ASCII text"));
                        metrics.request(method, fallback, 400, started.elapsed());
                        let mut response = refused.into_response();
                        harden(&mut response, page);
                        return Ok(response);
                    }
                }
                let allow = methods.allow(req.uri().path());
                let (mut response, operation) = match ep.call(req).await {
                    Ok(response) => {
                        let operation = response.data::<OperationId>().map_or(fallback, |id| id.0);
                        (response, operation)
                    }
                    Err(error) => {
                        let operation = error.data::<OperationId>().map_or(fallback, |id| id.0);
                        (error_response(error, allow.as_deref()), operation)
                    }
                };
                if response.status() == StatusCode::METHOD_NOT_ALLOWED
                    && !response.headers().contains_key(header::ALLOW)
                {
                    if let Some(value) = allow.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
                        response.headers_mut().insert(header::ALLOW, value);
                    }
                }
                if tus {
                    tus_headers(&mut response);
                }
                harden(&mut response, page);
                metrics.request(method, operation, response.status().as_u16(), started.elapsed());
                Ok::<Response, poem::Error>(response)
            }
        })
}

/// The second listener's application: `/metrics` and the probes, no authentication.
fn ops_app(state: AppState) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/metrics", get(ops::metrics_open))
        .at("/livez", get(ops::livez))
        .at("/healthz", get(ops::livez))
        .at("/readyz", get(ops::readyz))
        .data(state)
}

/// The bound listeners of the API, before it serves.
pub struct Listeners {
    api: tokio::net::TcpListener,
    ops: Option<tokio::net::TcpListener>,
    gate: Arc<Gate>,
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The base URL it hands out.
    pub public_url: String,
}

/// Where a serving API is.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where `/metrics` and the probes listen without authentication, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// The base URL it hands out.
    pub public_url: String,
}

/// Binds the API's address (and the metrics address, when there is one) and checks that
/// authentication is on unless the address is a loopback one.
///
/// # Errors
/// An address that cannot be bound; authentication off on a non-loopback address; a bad
/// auth configuration.
pub async fn bind(
    listen: &str,
    metrics_listen: Option<&str>,
    public_url: Option<&str>,
    auth: &AuthSettings,
) -> anyhow::Result<Listeners> {
    let gate = Arc::new(Gate::new(auth)?);
    let api = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = api.local_addr().context("the listener has no socket address")?;
    let ops = match metrics_listen {
        Some(listen) => Some(
            tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening for metrics on {listen}"))?,
        ),
        None => None,
    };
    if !gate.enabled() {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "authentication is off, which is only allowed on a loopback address; set VODSOURCE_JWT_SECRET or VODSOURCE_JWKS_FILE to listen on {addr}"
        );
        tracing::warn!(%addr, "authentication is OFF: every caller is the local admin (loopback only)");
    }
    let public_url = public_url
        .map_or_else(|| format!("http://{addr}"), str::to_owned)
        .trim_end_matches('/')
        .to_owned();
    Ok(Listeners {
        api,
        ops,
        gate,
        addr,
        public_url,
    })
}

/// What serving needs besides the application.
pub struct Serving {
    /// Metrics, also the application's observer.
    pub metrics: Arc<Metrics>,
    /// Timeouts and caps.
    pub limits: HttpLimits,
    /// How long in-flight requests get at shutdown.
    pub grace: Duration,
}

impl Listeners {
    /// Serves `app` on the listeners as components of `supervisor`, until it shuts them down
    /// (live event streams end then too).
    pub fn serve(self, application: App, serving: Serving, supervisor: &mut Supervisor) -> Endpoints {
        let Serving { metrics, limits, grace } = serving;
        let (ending, shutdown) = watch::channel(false);
        let state = AppState {
            app: application,
            metrics,
            shutdown,
            streams: StreamSlots::new(limits.streams_per_principal, limits.streams_total),
            limits,
        };
        let header_timeout = state.limits.header_timeout;
        let metrics_addr = self.ops.map(|listener| {
            let addr = listener.local_addr().ok();
            let endpoint = ops_app(state.clone());
            supervisor.spawn("metrics listener", Stage::Serve, move |stop| {
                server::run(listener, endpoint, header_timeout, stop, grace)
            });
            addr
        });
        let endpoint = app(state, self.gate);
        supervisor.spawn("http", Stage::Serve, move |stop| async move {
            // Live streams end when the server starts shutting down, not after its grace.
            let mut signal = stop.clone();
            tokio::spawn(async move {
                let _ = signal.wait_for(|stop| *stop).await;
                let _ = ending.send(true);
            });
            server::run(self.api, endpoint, header_timeout, stop, grace).await
        });
        tracing::info!(addr = %self.addr, public_url = %self.public_url, metrics = ?metrics_addr.flatten(), "serving the API; OpenAPI at /openapi.json, Swagger UI at /docs");
        Endpoints {
            addr: self.addr,
            metrics_addr: metrics_addr.flatten(),
            public_url: self.public_url,
        }
    }
}
