//! The composition root: [`start`] builds one process of vodsource from opened stores and the
//! [`Roles`] it plays — the HTTP API, the projection runners with the encoding supervisor,
//! encoding workers, the watch-state consumer group, the video-events relay, the lake sink —
//! each a component of one [`Supervisor`] with one shutdown path. `vodsource serve` plays
//! them all; `api`, `projector`, `encoder`, `relay` and `qoe-sink` play one or two.

pub mod projections;

use std::sync::Arc;

use anyhow::Context;
use vodsource_app::{App, Ports, Signer};
use vodsource_commands::ports::ObjectStore;
use vodsource_infra::{StreamUrl, Streams};

use self::projections::{Control, Runners};
use crate::http::metrics::Metrics;
use crate::http::{Endpoints, Serving};
use crate::roles::Stores;
pub use crate::settings::Roles;
use crate::settings::Settings;
use crate::supervisor::{until, Stage, Supervisor};

/// A running process.
pub struct Running {
    /// Where its API is, when it serves one.
    pub api: Option<Endpoints>,
    supervisor: Supervisor,
    stream: Option<Streams>,
}

impl Running {
    /// Where the API is.
    ///
    /// # Panics
    /// When this process serves no API (a caller's mistake: it chose the roles).
    #[allow(clippy::expect_used)]
    pub fn endpoints(&self) -> &Endpoints {
        self.api.as_ref().expect("this process serves no API")
    }

    /// The embedded stream of this process, if it has one.
    pub fn stream(&self) -> Option<&vodsource_infra::EmbeddedLog> {
        self.stream.as_ref().and_then(Streams::embedded)
    }

    /// Stops the process: the API first (requests in flight finish within the grace period,
    /// live streams end), then every other component at once (runners checkpoint, workers
    /// hand their job back, sinks flush).
    ///
    /// # Errors
    /// When a component stopped with an error.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let failures = self.supervisor.shutdown().await;
        anyhow::ensure!(
            failures == 0,
            "{failures} component(s) stopped with errors; see the log"
        );
        Ok(())
    }

    /// Runs until `signal`, or until every component has stopped by itself, then shuts down
    /// as [`Running::shutdown`] does.
    ///
    /// # Errors
    /// As [`Running::shutdown`].
    pub async fn until_stopped_or(self, signal: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            () = signal => tracing::info!("shutting down"),
            () = self.supervisor.all_stopped() => tracing::error!("every component stopped; shutting down"),
        }
        self.shutdown().await
    }
}

/// Forgets expired resumable uploads (their parts aborted) now and then, until stopped.
async fn sweep_uploads(
    app: App,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), std::convert::Infallible> {
    let interval = app.resumable().sweep_interval();
    loop {
        tokio::select! {
            _ = stopped.changed() => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
        match app.resumable().sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "expired uploads swept"),
            Err(e) => tracing::warn!(error = %e, "could not sweep expired uploads"),
        }
    }
}

/// Starts the components of `roles` over `stores` and `objects`.
///
/// # Errors
/// A listener, stream or sink that cannot be set up; a role without what it needs (the relay
/// without a shared stream).
pub async fn start(
    stores: Stores,
    objects: Arc<dyn ObjectStore>,
    settings: Settings,
    roles: Roles,
) -> anyhow::Result<Running> {
    // The API binds first: a port in use fails before anything starts.
    let listeners = if roles.api {
        Some(
            crate::http::bind(
                &settings.listen,
                settings.metrics_listen.as_deref(),
                settings.public_url.as_deref(),
                &settings.auth,
            )
            .await?,
        )
    } else {
        None
    };
    let embedded = matches!(settings.stream, Some(StreamUrl::Embedded(_)));
    anyhow::ensure!(
        !(roles.relay && !roles.api && embedded),
        "the embedded stream belongs to `vodsource serve`; `vodsource relay` needs VODSOURCE_STREAM=kafka://… or kinesis://"
    );
    // The embedded stream is one process's: only the API's process opens it.
    let stream = match &settings.stream {
        Some(url) if roles.api || !embedded => Some(stores.open_stream(url, &settings.aws).await?),
        _ => None,
    };
    let mut supervisor = Supervisor::default();
    let control = roles.projectors.then(|| Control::start(stores.clone()));
    if let Some(control) = &control {
        let control = control.clone();
        supervisor.spawn("projections", Stage::Fold, move |stopped| async move {
            until(stopped).await;
            match control.shutdown().await {
                0 => Ok(()),
                failures => Err(format!("{failures} projection component(s) stopped with errors")),
            }
        });
    }
    let sender: Arc<dyn vodsource_commands::ports::WebhookSender> =
        Arc::new(vodsource_infra::egress::HttpSender::new(settings.send.clone()).map_err(anyhow::Error::msg)?);
    let webhook_stats = Arc::new(vodsource_app::webhooks::dispatch::DispatchStats::default());
    if roles.projectors {
        let fetcher = vodsource_infra::egress::HttpFetcher::new(settings.fetch.clone()).map_err(anyhow::Error::msg)?;
        let ingest = stores.ingest(objects.clone(), Arc::new(fetcher), settings.ingest.clone());
        supervisor.spawn("source ingest", Stage::Work, |stopped| ingest.run(until(stopped)));
        let dispatcher = stores
            .dispatcher(
                sender.clone(),
                Signer::new(settings.signing_secret.clone()),
                settings.dispatch.clone(),
            )
            .with_stats(webhook_stats.clone());
        supervisor.spawn("webhook dispatcher", Stage::Work, |stopped| {
            dispatcher.run(until(stopped))
        });
    }
    let encoders = Arc::new(vodsource_encoder::EncoderStats::default());
    if roles.encoders {
        for config in &settings.workers {
            let worker = stores
                .worker(objects.clone(), config.clone())
                .with_stats(encoders.clone());
            supervisor.spawn(worker.id().to_owned(), Stage::Work, |stopped| {
                worker.run(until(stopped))
            });
        }
    }
    if let Some(streams) = &stream {
        if roles.watch_state {
            let consumer = streams
                .consumer(vodsource_qoe::QOE_TOPIC, "watch-state")
                .context("opening the watch-state consumer group")?;
            let runner = vodsource_projections::WatchStateRunner::new(
                consumer,
                stores.views.clone(),
                stores.views.clone(),
                stores.clock.clone(),
                stores.owner.clone(),
            );
            supervisor.spawn("watch-state", Stage::Work, |stopped| runner.run(until(stopped)));
        }
        if roles.relay {
            let relay = vodsource_commands::process::Relay::new(
                stores.log.clone(),
                streams.producer(),
                stores.views.clone(),
                stores.views.clone(),
                stores.clock.clone(),
                stores.owner.clone(),
            );
            supervisor.spawn("video-events relay", Stage::Work, |stopped| relay.run(until(stopped)));
        }
        if let Some(lake) = settings.lake.as_ref().filter(|_| roles.lake_sink) {
            for sink in crate::roles::lake_sinks(streams, &objects, lake)? {
                supervisor.spawn("lake sink", Stage::Work, |stopped| sink.run(until(stopped)));
            }
        }
    }
    let api = listeners.map(|listeners| {
        let metrics = Arc::new(Metrics::new(encoders.clone(), webhook_stats.clone()));
        let app = App::new(
            Ports {
                commands: stores.commands(),
                log: stores.log.clone(),
                views: stores.views.clone(),
                idempotency: stores.views.clone(),
                objects: objects.clone(),
                clock: stores.clock.clone(),
                qoe: stream.as_ref().map(Streams::producer),
                rebuilds: control
                    .clone()
                    .map(|c| Arc::new(Runners(c)) as Arc<dyn vodsource_app::admin::Rebuilds>),
                webhooks: sender.clone(),
                checkpoints: stores.views.clone(),
            },
            vodsource_app::Settings {
                public_url: listeners.public_url.clone(),
                url_ttl: settings.url_ttl,
                idempotency_ttl: settings.idempotency_ttl,
                cdn: settings.cdn.clone(),
                upload_expiry: settings.upload_expiry,
                ingest_allow_http: settings.fetch.allow_http,
            },
            Signer::new(settings.signing_secret.clone()),
            metrics.clone(),
        );
        let sweeper = app.clone();
        supervisor.spawn("upload sweeper", Stage::Work, |stopped| sweep_uploads(sweeper, stopped));
        listeners.serve(
            app,
            Serving {
                metrics,
                limits: settings.limits.clone(),
                grace: settings.grace,
            },
            &mut supervisor,
        )
    });
    Ok(Running {
        api,
        supervisor,
        stream,
    })
}
