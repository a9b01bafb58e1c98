//! `/metrics` through the Prometheus project's client library (OpenMetrics text): requests by
//! operation and status with latency histograms, command (append) latency, the log head and
//! each projection's position and lag read at scrape time, live streams, the request body
//! bytes this process read (by kind of route: what a direct upload keeps off it), the
//! counters of this process's encoding workers and webhook dispatcher, and each webhook
//! endpoint's lag.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    operation: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BodyLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

/// What a scrape reads from elsewhere.
pub struct Scrape<'a> {
    /// Position of the last committed event.
    pub head: u64,
    /// Each projection's name, position and lag.
    pub projections: &'a [(String, u64, u64)],
    /// Live event streams open.
    pub live_streams: usize,
    /// Each webhook endpoint's id and lag.
    pub webhooks: &'a [(String, u64)],
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Latencies<RequestLabels>,
    commands: Latencies<CommandLabels>,
    head: Gauge,
    positions: Family<ProjectionLabels, Gauge>,
    lag: Family<ProjectionLabels, Gauge>,
    live_streams: Gauge,
    body_bytes: Family<BodyLabels, Counter>,
    webhook_lag: Family<EndpointLabels, Gauge>,
}

/// A request body that counts the bytes read from it.
pub struct Counted<R> {
    inner: R,
    counter: Counter,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.counter.inc_by(read as u64);
        }
        polled
    }
}

impl Metrics {
    /// Metrics of a process whose encoding workers count into `encoders` and whose webhook
    /// dispatcher into `webhooks`.
    pub fn new(
        encoders: Arc<vodsource_encoder::EncoderStats>,
        webhooks: Arc<vodsource_app::webhooks::dispatch::DispatchStats>,
    ) -> Self {
        let mut registry = Registry::default();
        let requests = Latencies::<RequestLabels>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "vodsource_http_request_duration_seconds",
            "HTTP requests by operation and status",
            requests.clone(),
        );
        let commands = Latencies::<CommandLabels>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "vodsource_command_duration_seconds",
            "Commands from load to durable append",
            commands.clone(),
        );
        let head = Gauge::default();
        registry.register(
            "vodsource_event_log_head",
            "Position of the last committed event",
            head.clone(),
        );
        let positions = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "vodsource_projection_position",
            "Position each projection has applied",
            positions.clone(),
        );
        let lag = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "vodsource_projection_lag_events",
            "Events a projection is behind the log head",
            lag.clone(),
        );
        let live_streams = Gauge::default();
        registry.register(
            "vodsource_live_streams",
            "Live event streams open",
            live_streams.clone(),
        );
        let body_bytes = Family::<BodyLabels, Counter>::default();
        registry.register(
            "vodsource_http_request_body_bytes",
            "Request body bytes read, by kind of route",
            body_bytes.clone(),
        );
        registry.register_collector(Box::new(Encoders(encoders)));
        let webhook_lag = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "vodsource_webhook_lag_events",
            "Events of the log a webhook endpoint's dispatcher is behind",
            webhook_lag.clone(),
        );
        registry.register_collector(Box::new(Webhooks(webhooks)));
        Self {
            registry,
            requests,
            commands,
            head,
            positions,
            lag,
            live_streams,
            body_bytes,
            webhook_lag,
        }
    }

    /// `body`, counting what is read from it under `route`.
    pub fn count_body<R>(&self, route: &'static str, body: R) -> Counted<R> {
        Counted {
            inner: body,
            counter: self.body_bytes.get_or_create(&BodyLabels { route }).clone(),
        }
    }

    /// Records a finished request.
    pub fn request(&self, method: &'static str, operation: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                operation,
                status,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a command's time from load to durable append.
    pub fn command(&self, command: &'static str, elapsed: Duration) {
        self.commands
            .get_or_create(&CommandLabels { command })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition, with what the scrape read.
    ///
    /// # Errors
    /// None in practice (writing to a string).
    pub fn render(&self, scrape: &Scrape<'_>) -> Result<String, std::fmt::Error> {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.head.set(gauge(scrape.head));
        for (name, position, lag) in scrape.projections {
            let labels = ProjectionLabels {
                projection: name.clone(),
            };
            self.positions.get_or_create(&labels).set(gauge(*position));
            self.lag.get_or_create(&labels).set(gauge(*lag));
        }
        self.live_streams.set(gauge(scrape.live_streams as u64));
        // Deleted endpoints drop out.
        self.webhook_lag.clear();
        for (endpoint, lag) in scrape.webhooks {
            self.webhook_lag
                .get_or_create(&EndpointLabels {
                    endpoint: endpoint.clone(),
                })
                .set(gauge(*lag));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl vodsource_app::Observer for Metrics {
    fn command(&self, name: &'static str, elapsed: Duration) {
        Metrics::command(self, name, elapsed);
    }
}

/// The counters of this process's webhook dispatcher, read at each scrape.
#[derive(Debug)]
struct Webhooks(Arc<vodsource_app::webhooks::dispatch::DispatchStats>);

impl Collector for Webhooks {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.0;
        let kind = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "vodsource_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered: a 2xx; failed: tried again; parked: failed for the whole retry period, its endpoint marked failing)",
            None,
            kind.metric_type(),
        )?;
        for (outcome, count) in [
            ("delivered", stats.delivered.load(Relaxed)),
            ("failed", stats.failed_attempts.load(Relaxed)),
            ("parked", stats.failed.load(Relaxed)),
        ] {
            ConstCounter::new(count).encode(family.encode_family(&OutcomeLabels { outcome })?)?;
        }
        let mismatches = ConstCounter::new(stats.key_mismatches.load(Relaxed));
        mismatches.encode(encoder.encode_descriptor(
            "vodsource_webhook_key_mismatches",
            "Times a dispatcher refused an endpoint whose secrets derive from another signing secret (VODSOURCE_SIGNING_SECRET differs between processes)",
            None,
            mismatches.metric_type(),
        )?)?;
        let retrying = ConstGauge::new(i64::try_from(stats.retrying.load(Relaxed)).unwrap_or(i64::MAX));
        retrying.encode(encoder.encode_descriptor(
            "vodsource_webhook_retrying",
            "Webhook events waiting for their next attempt",
            None,
            retrying.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The counters of this process's encoding workers, read at each scrape.
#[derive(Debug)]
struct Encoders(Arc<vodsource_encoder::EncoderStats>);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

impl Collector for Encoders {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.snapshot();
        let jobs = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "vodsource_encode_jobs",
            "Encoding jobs by how they ended",
            None,
            jobs.metric_type(),
        )?;
        for (outcome, count) in stats.jobs {
            ConstCounter::new(count).encode(family.encode_family(&OutcomeLabels { outcome })?)?;
        }
        let busy = ConstGauge::new(stats.busy);
        busy.encode(encoder.encode_descriptor(
            "vodsource_encoders_busy",
            "Workers encoding now",
            None,
            busy.metric_type(),
        )?)?;
        let mut family = encoder.encode_descriptor(
            "vodsource_encode_step_seconds",
            "Time spent in each step of encoding",
            None,
            jobs.metric_type(),
        )?;
        for (step, seconds) in stats.steps {
            ConstCounter::new(seconds).encode(family.encode_family(&StepLabels { step })?)?;
        }
        for (name, help, value) in [
            ("vodsource_encode_cpu_seconds", "CPU time of encodes", stats.cpu_seconds),
            (
                "vodsource_encode_media_seconds",
                "Media duration encoded",
                stats.media_seconds,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let bytes = ConstCounter::new(stats.bytes_out);
        bytes.encode(encoder.encode_descriptor(
            "vodsource_encode_bytes_out",
            "Bytes of encoded media written",
            None,
            bytes.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_counted_and_the_scrape_is_openmetrics() {
        let webhooks = Arc::new(vodsource_app::webhooks::dispatch::DispatchStats::default());
        webhooks.delivered.store(5, std::sync::atomic::Ordering::Relaxed);
        webhooks.retrying.store(2, std::sync::atomic::Ordering::Relaxed);
        let metrics = Metrics::new(Arc::default(), webhooks);
        metrics.request("GET", "getVideo", 200, Duration::from_micros(300));
        metrics.request("GET", "getVideo", 200, Duration::from_millis(3));
        metrics.request("GET", "getVideo", 404, Duration::from_millis(30));
        let text = metrics
            .render(&Scrape {
                head: 10,
                projections: &[("catalog".into(), 7, 3)],
                live_streams: 2,
                webhooks: &[("wh_1".into(), 4)],
            })
            .expect("render");
        for needle in [
            "vodsource_http_request_duration_seconds_bucket{le=\"0.0005\",method=\"GET\",operation=\"getVideo\",status=\"200\"} 1",
            "vodsource_http_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",operation=\"getVideo\",status=\"200\"} 2",
            "vodsource_http_request_duration_seconds_count{method=\"GET\",operation=\"getVideo\",status=\"404\"} 1",
            "vodsource_projection_lag_events{projection=\"catalog\"} 3",
            "vodsource_event_log_head 10",
            "vodsource_live_streams 2",
            "vodsource_encode_jobs_total{outcome=\"completed\"} 0",
            "vodsource_encoders_busy 0",
            "vodsource_webhook_deliveries_total{outcome=\"delivered\"} 5",
            "vodsource_webhook_deliveries_total{outcome=\"parked\"} 0",
            "vodsource_webhook_retrying 2",
            "vodsource_webhook_lag_events{endpoint=\"wh_1\"} 4",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
