//! The dispatcher: every webhook endpoint is its own consumer of the global log, with a
//! durable checkpoint and a lease of its own (`webhook/<id>`), so any number of dispatcher
//! processes may run and each endpoint is served by one of them at a time.
//!
//! An endpoint's runner reads the log from its checkpoint (at first, the position of its
//! creation), keeps the endpoint's settings as the registry's events in the log leave them
//! (a change applies to the events after it), turns each video event into its public event
//! ([`super::public_event`]) and sends those the endpoint wants, of videos it covers:
//!
//! - **Order per video**: a video's next event is sent only after its previous one was
//!   delivered (an endpoint's deliveries all stop while it is failing); different videos go in parallel, at most `concurrency` requests
//!   at once per endpoint. One endpoint's slowness delays no other: each has its own runner.
//! - **Retries**: anything but a 2xx within the timeout is tried again after an exponential
//!   backoff with jitter, for `retry_for` (24 h by default) from the first attempt; waits go
//!   by the dispatcher's [`Clock`], looked at every `clock_tick`.
//! - **Parking**: an event still failing after `retry_for` marks its endpoint failing (a
//!   registry event): the runner stops, its checkpoint before that event, and nothing more is
//!   sent until an admin re-drives the endpoint (or replays it) — then everything from the
//!   checkpoint is tried again.
//! - **Delivery log**: every attempt's outcome goes to the endpoint's log
//!   ([`super::deliveries`]).
//! - **Never lost**: the checkpoint stays before the oldest event not yet delivered, so a
//!   runner that dies (or loses its lease) is replaced by one that sends those events again —
//!   with the same event id, which receivers de-duplicate on.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use vodsource_commands::codec::Decoder;
use vodsource_commands::ports::{
    CheckpointStore, Clock, EventLog, LeaseStore, RecordedEvent, SendError, StoreError, WebhookRequest, WebhookSender,
};
use vodsource_commands::process::ProcessError;
use vodsource_commands::{Subscription, VideoCommands};
use vodsource_domain::{VideoEvent, VIDEO_STREAM_TYPE};
use vodsource_projections::ViewStore;

use super::contract::public_event;
pub use super::deliveries::consumer_name;
use super::deliveries::{DeliveryRecord, DeliveryState, Recorder};
use super::registry::{Endpoint, Failing, RecordError, Registry, RegistryEvent, RegistryStore, REGISTRY_STREAM_TYPE};
use super::signature::{sign, SIGNATURE_HEADER};
use crate::Signer;

/// How the dispatcher behaves.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Requests in flight at once per endpoint.
    pub concurrency: usize,
    /// A request must be answered within this.
    pub timeout: Duration,
    /// An event is tried for this long from its first attempt; then its endpoint is failing.
    pub retry_for: Duration,
    /// Wait before the second attempt; it doubles after each, with jitter.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// How long an endpoint's lease lasts; renewed at a third of it.
    pub lease_ttl: Duration,
    /// How often the set of endpoints is looked at.
    pub refresh: Duration,
    /// Events not yet delivered per endpoint, at most; past it the log is not read further
    /// until some are.
    pub max_pending: usize,
    /// A wait for the clock looks at it this often (the clock may be moved by a test).
    pub clock_tick: Duration,
    /// Events kept in each endpoint's delivery log, the newest by position.
    pub retained: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(24 * 3600 + 600),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            lease_ttl: Duration::from_secs(15),
            refresh: Duration::from_secs(2),
            max_pending: 10_000,
            clock_tick: Duration::from_secs(1),
            retained: 1000,
        }
    }
}

/// The name under which an endpoint's runner notes the last replay it started.
fn replay_marker(id: &str) -> String {
    format!("webhook/{id}/replayed")
}

/// Where endpoint `endpoint`'s runner goes on from: its checkpoint — unless it never ran
/// (nothing saved, no replay started), then after the endpoint's creation.
///
/// # Errors
/// The checkpoint store failed.
pub async fn resume_position(checkpoints: &dyn CheckpointStore, endpoint: &Endpoint) -> Result<u64, StoreError> {
    let saved = checkpoints.load_checkpoint(&consumer_name(&endpoint.id)).await?;
    if saved > 0 {
        return Ok(saved);
    }
    let replayed = checkpoints.load_checkpoint(&replay_marker(&endpoint.id)).await?;
    Ok(if replayed > 0 { 0 } else { endpoint.created_position })
}

/// Counters of one dispatcher process.
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Events delivered (a 2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed (another status, no answer, refused).
    pub failed_attempts: AtomicU64,
    /// Events that failed for `retry_for` (their endpoints were marked failing).
    pub failed: AtomicU64,
    /// Events waiting for their next attempt now.
    pub retrying: AtomicU64,
    /// Times a runner refused an endpoint whose secrets derive from another signing secret.
    pub key_mismatches: AtomicU64,
}

/// Sends the public events to every endpoint. Cheap to share.
pub struct Dispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    log: Arc<dyn EventLog>,
    registry: RegistryStore,
    commands: VideoCommands,
    checkpoints: Arc<dyn CheckpointStore>,
    leases: Arc<dyn LeaseStore>,
    views: Arc<dyn ViewStore>,
    sender: Arc<dyn WebhookSender>,
    signer: Signer,
    clock: Arc<dyn Clock>,
    owner: String,
    config: DispatchConfig,
    stats: Arc<DispatchStats>,
    /// Owners of videos, as learnt (they never change).
    owners: Mutex<HashMap<String, String>>,
}

/// How often a runner saves its checkpoint at most (at once when nothing is pending).
const SAVE_EVERY: Duration = Duration::from_millis(200);

/// How often a runner writes its delivery log (a write per endpoint: with many endpoints,
/// writing as often as the checkpoint doubled the view store's writes and the others' latency).
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Owners remembered at most; past it the memory starts again.
const MAX_OWNERS: usize = 100_000;

impl Dispatcher {
    /// A dispatcher sending through `sender`, signing with secrets from `signer`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        commands: VideoCommands,
        log: Arc<dyn EventLog>,
        checkpoints: Arc<dyn CheckpointStore>,
        leases: Arc<dyn LeaseStore>,
        views: Arc<dyn ViewStore>,
        sender: Arc<dyn WebhookSender>,
        signer: Signer,
        clock: Arc<dyn Clock>,
        owner: String,
        config: DispatchConfig,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                registry: RegistryStore::new(log.clone()),
                log,
                commands,
                checkpoints,
                leases,
                views,
                sender,
                signer,
                clock,
                owner,
                config,
                stats: Arc::default(),
                owners: Mutex::default(),
            }),
        }
    }

    /// Counts into `stats` (shared with the process's metrics).
    #[must_use]
    pub fn with_stats(mut self, stats: Arc<DispatchStats>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.stats = stats;
        }
        self
    }

    /// Runs until `shutdown` completes: a runner per endpoint, started when the endpoint
    /// appears and stopped when it is deleted.
    ///
    /// # Errors
    /// Never: a failing store is logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProcessError> {
        tokio::pin!(shutdown);
        let (stop, stopped) = watch::channel(false);
        let mut runners: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
        let mut tasks = JoinSet::new();
        let mut refresh = tokio::time::interval(self.shared.config.refresh);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = refresh.tick() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            }
            let registry = match self.shared.registry.current().await {
                Ok(registry) => registry,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the webhook registry; trying again");
                    continue;
                }
            };
            runners.retain(|id, handle| {
                let live = registry.endpoints.contains_key(id) && !handle.is_finished();
                if !live {
                    handle.abort();
                }
                live
            });
            for id in registry.endpoints.keys() {
                if !runners.contains_key(id) {
                    let runner = EndpointRunner {
                        shared: self.shared.clone(),
                        id: id.clone(),
                        name: consumer_name(id),
                        pacer: Arc::default(),
                    };
                    let handle = tasks.spawn(runner.run(stopped.clone()));
                    runners.insert(id.clone(), handle);
                }
            }
        }
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// One event to send.
struct Job {
    position: u64,
    video_id: String,
    event_id: String,
    event_type: String,
    body: Arc<Vec<u8>>,
}

/// The consumer of the log for one endpoint.
struct EndpointRunner {
    shared: Arc<Shared>,
    id: String,
    name: String,
    pacer: Arc<Pacer>,
}

/// Spaces an endpoint's requests out to its rate limit: each takes the next free slot,
/// `1/rate` after the one before.
#[derive(Default)]
struct Pacer {
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// Waits for this request's slot at `per_second` (0: at once).
    async fn wait(&self, per_second: u32) {
        if per_second == 0 {
            return;
        }
        let gap = Duration::from_secs(1) / per_second;
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let slot = next.filter(|n| *n > now).unwrap_or(now);
            *next = Some(slot + gap);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// Why a runner's attempt ended without an error.
enum Ended {
    Stopped,
    Deleted,
    /// A replay moved the checkpoint back: start again from it.
    Rewound,
    /// The endpoint is failing: wait until it is re-driven.
    Parked,
}

/// How one event's delivery ended.
enum Outcome {
    /// Delivered, or no longer to be sent (the endpoint was disabled).
    Done,
    /// Failed for the whole retry period.
    Failed(Failing),
}

impl EndpointRunner {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = self.run_once(&mut stop).await;
            if matches!(result, Ok(Ended::Rewound)) {
                continue;
            }
            let _ = self.shared.leases.release_lease(&self.name, &self.shared.owner).await;
            match result {
                Ok(Ended::Parked) => {
                    if self.until_redriven(&mut stop).await {
                        continue;
                    }
                    return;
                }
                Ok(Ended::Stopped | Ended::Deleted | Ended::Rewound) => return,
                Err(e) => {
                    tracing::warn!(endpoint = %self.id, error = %e, ?backoff, "webhook runner failed; retrying");
                    tokio::select! {
                        () = until_stopped(&mut stop) => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Waits while the endpoint is failing; false when stopped or the endpoint is gone.
    async fn until_redriven(&self, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            match self.shared.registry.current().await {
                Ok(registry) => match registry.endpoints.get(&self.id) {
                    None => return false,
                    Some(endpoint) if endpoint.failing.is_none() => return true,
                    Some(_) => {}
                },
                Err(e) => tracing::warn!(endpoint = %self.id, error = %e, "reading the webhook registry; trying again"),
            }
            tokio::select! {
                () = until_stopped(stop) => return false,
                () = tokio::time::sleep(self.shared.config.refresh) => {}
            }
        }
    }

    async fn hold_lease(&self) -> Result<bool, StoreError> {
        let shared = &self.shared;
        shared
            .leases
            .hold_lease(&self.name, &shared.owner, &*shared.clock, shared.config.lease_ttl)
            .await
    }

    async fn run_once(&self, stop: &mut watch::Receiver<bool>) -> Result<Ended, ProcessError> {
        let shared = &self.shared;
        let renew_every = shared.config.lease_ttl / 3;
        while !self.hold_lease().await? {
            tokio::select! {
                () = until_stopped(stop) => return Ok(Ended::Stopped),
                () = tokio::time::sleep(renew_every) => {}
            }
        }
        let current = shared.registry.current().await?;
        let Some(endpoint) = current.endpoints.get(&self.id) else {
            return Ok(Ended::Deleted);
        };
        if endpoint.failing.is_some() {
            return Ok(Ended::Parked);
        }
        // Signing with another secret would send requests no receiver accepts, each retried
        // for a day: nothing is sent, and the reason is logged until the process is mended.
        if let Err(reason) = endpoint.check_key(&shared.signer.webhook_key_id()) {
            shared.stats.key_mismatches.fetch_add(1, Ordering::Relaxed);
            return Err(ProcessError::Store(StoreError::Invalid(reason)));
        }
        let start = resume_position(&*shared.checkpoints, endpoint).await?;
        let replayed = shared.checkpoints.load_checkpoint(&replay_marker(&self.id)).await?;
        // The registry as the log stood at the checkpoint, later changes coming in log
        // order; a replay from before the endpoint's creation goes with today's settings.
        let mut registry = shared.registry.as_of(start).await?;
        if !registry.endpoints.contains_key(&self.id) {
            registry = current;
        }
        let Some(endpoint) = registry.endpoints.get(&self.id).cloned() else {
            return Ok(Ended::Deleted);
        };
        let mut current = endpoint.clone();
        let (settings, watched) = watch::channel(endpoint);
        // The log is read by a task of its own, a batch or two ahead: the loop below wakes
        // for every delivery that ends, and a read started and dropped at each would cost a
        // query per delivery.
        let (batches_in, mut batches) = tokio::sync::mpsc::channel(2);
        let mut subscription = Subscription::new(shared.log.clone(), start);
        let _reader = AbortOnDrop(tokio::spawn(async move {
            loop {
                let batch = subscription.next_batch().await;
                let failed = batch.is_err();
                let item = batch.map(|batch| (batch, subscription.position()));
                if batches_in.send(item).await.is_err() || failed {
                    return;
                }
            }
        }));
        let recorder = Arc::new(
            Recorder::open(
                shared.views.clone(),
                shared.clock.clone(),
                &self.id,
                &shared.owner,
                shared.config.retained,
            )
            .await?,
        );
        let _writer = {
            let recorder = recorder.clone();
            let id = self.id.clone();
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(LOG_EVERY);
                loop {
                    tick.tick().await;
                    if let Err(e) = recorder.flush().await {
                        tracing::warn!(endpoint = %id, error = %e, "writing the delivery log");
                        if matches!(e, StoreError::LeaseLost(_)) {
                            return;
                        }
                    }
                }
            }))
        };
        let mut read = start;
        let permits = Arc::new(Semaphore::new(shared.config.concurrency.max(1)));
        let decoder = Decoder::new();
        // Dropped with this attempt: its deliveries stop, and the checkpoint brings them back.
        let mut deliveries: JoinSet<(u64, String, Outcome)> = JoinSet::new();
        let mut queues: HashMap<String, VecDeque<Job>> = HashMap::new();
        let mut pending: BTreeSet<u64> = BTreeSet::new();
        let mut renew = tokio::time::interval(renew_every);
        // The checkpoint follows progress within this, however quiet the log is.
        let mut flush = tokio::time::interval(SAVE_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved = start;
        let mut saved_at = Instant::now();
        loop {
            tokio::select! {
                () = until_stopped(stop) => {
                    self.save(&pending, read, &mut saved).await?;
                    recorder.flush().await?;
                    return Ok(Ended::Stopped);
                }
                _ = flush.tick() => {}
                _ = renew.tick() => {
                    if !self.hold_lease().await? {
                        return Err(ProcessError::Store(StoreError::LeaseLost(self.name.clone())));
                    }
                }
                item = batches.recv(), if pending.len() < shared.config.max_pending => {
                    let (batch, position) = item
                        .ok_or_else(|| StoreError::unavailable("the log reader stopped"))??;
                    read = position;
                    for event in &batch {
                        if event.stream_type == REGISTRY_STREAM_TYPE {
                            if event.position > replayed {
                                if let Some(from) = self.replay_asked(event)? {
                                    // Back to `from`, noting this replay as started so that
                                    // reading it again does not start it again.
                                    shared.checkpoints.save_checkpoint(&self.name, &shared.owner, from).await?;
                                    shared
                                        .checkpoints
                                        .save_checkpoint(&replay_marker(&self.id), &shared.owner, event.position)
                                        .await?;
                                    tracing::info!(endpoint = %self.id, from, "replaying");
                                    return Ok(Ended::Rewound);
                                }
                            }
                            if event.position > registry.position {
                                apply(&mut registry, event)?;
                                match registry.endpoints.get(&self.id) {
                                    Some(endpoint) => {
                                        current = endpoint.clone();
                                        settings.send_replace(endpoint.clone());
                                    }
                                    None => return Ok(Ended::Deleted),
                                }
                            }
                            continue;
                        }
                        let Some(job) = self.job(&current, &decoder, event).await? else {
                            continue;
                        };
                        pending.insert(job.position);
                        let queue = queues.entry(job.video_id.clone()).or_default();
                        queue.push_back(job);
                        if queue.len() == 1 {
                            if let Some(first) = queue.front() {
                                self.spawn(&mut deliveries, first, &watched, &permits, &recorder);
                            }
                        }
                    }
                }
                Some(done) = deliveries.join_next(), if !deliveries.is_empty() => {
                    let (position, video_id, outcome) = done.map_err(|e| {
                        ProcessError::Store(StoreError::unavailable(format!("a delivery stopped: {e}")))
                    })?;
                    if let Outcome::Failed(failing) = outcome {
                        // The event stays pending: the checkpoint stays before it.
                        deliveries.abort_all();
                        recorder.park_all();
                        self.save(&pending, read, &mut saved).await?;
                        recorder.flush().await?;
                        self.mark_failing(failing).await?;
                        return Ok(Ended::Parked);
                    }
                    pending.remove(&position);
                    if let Some(queue) = queues.get_mut(&video_id) {
                        queue.pop_front();
                        match queue.front() {
                            Some(next) => self.spawn(&mut deliveries, next, &watched, &permits, &recorder),
                            None => { queues.remove(&video_id); }
                        }
                    }
                }
            }
            if saved_at.elapsed() >= SAVE_EVERY || pending.is_empty() {
                self.save(&pending, read, &mut saved).await?;
                saved_at = Instant::now();
            }
        }
    }

    /// Records that the endpoint is failing (unless it was deleted or already marked).
    async fn mark_failing(&self, failing: Failing) -> Result<(), ProcessError> {
        let shared = &self.shared;
        tracing::warn!(
            endpoint = %self.id,
            position = failing.position,
            attempts = failing.attempts,
            reason = %failing.reason,
            "an event failed for the whole retry period: the endpoint is failing, its deliveries parked"
        );
        let decided = shared
            .registry
            .record("dispatcher", shared.clock.now(), |registry| {
                Ok::<_, std::convert::Infallible>(match registry.endpoints.get(&self.id) {
                    Some(endpoint) if endpoint.failing.is_none() => vec![RegistryEvent::Failing(failing.clone())],
                    _ => Vec::new(),
                })
            })
            .await;
        match decided {
            Ok(_) => Ok(()),
            Err(RecordError::Store(e)) => Err(e.into()),
            Err(RecordError::Refused(never)) => match never {},
        }
    }

    /// Saves the checkpoint: everything before the oldest event not yet delivered is done.
    async fn save(&self, pending: &BTreeSet<u64>, read: u64, saved: &mut u64) -> Result<(), StoreError> {
        let done = pending.first().map_or(read, |oldest| oldest - 1);
        if done > *saved {
            self.shared
                .checkpoints
                .save_checkpoint(&self.name, &self.shared.owner, done)
                .await?;
            *saved = done;
        }
        Ok(())
    }

    /// The position a registry event asks this endpoint to replay from, if it is a replay
    /// of this endpoint.
    fn replay_asked(&self, event: &RecordedEvent) -> Result<Option<u64>, StoreError> {
        if event.event_type != "WebhookReplayRequested" {
            return Ok(None);
        }
        match RegistryEvent::decode(event).map_err(|reason| StoreError::Corrupt {
            position: event.position,
            reason,
        })? {
            RegistryEvent::ReplayRequested(replay) if replay.endpoint_id == self.id => Ok(Some(replay.from_position)),
            _ => Ok(None),
        }
    }

    /// The request `event` makes for `endpoint`, if it wants one.
    async fn job(
        &self,
        endpoint: &Endpoint,
        decoder: &Decoder,
        event: &RecordedEvent,
    ) -> Result<Option<Job>, ProcessError> {
        if event.stream_type != VIDEO_STREAM_TYPE || !endpoint.enabled {
            return Ok(None);
        }
        let decoded = decoder.decode(event)?;
        let Some(public) = public_event(event, &decoded) else {
            return Ok(None);
        };
        if !endpoint.wants(&public.event_type) {
            return Ok(None);
        }
        if endpoint.owner.is_some() {
            let owner = self.owner_of(&event.stream_id, &decoded).await?;
            if !endpoint.covers(&owner) {
                return Ok(None);
            }
        }
        let body = serde_json::to_vec(&public).map_err(|e| StoreError::Corrupt {
            position: event.position,
            reason: format!("the public event does not serialize: {e}"),
        })?;
        Ok(Some(Job {
            position: event.position,
            video_id: event.stream_id.clone(),
            event_id: public.id,
            event_type: public.event_type,
            body: Arc::new(body),
        }))
    }

    async fn owner_of(&self, video_id: &str, event: &VideoEvent) -> Result<String, ProcessError> {
        if let VideoEvent::VideoRegistered { owner, .. } = event {
            self.remember_owner(video_id, owner);
            return Ok(owner.clone());
        }
        let known = self
            .shared
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(video_id)
            .cloned();
        if let Some(owner) = known {
            return Ok(owner);
        }
        let loaded = self.shared.commands.store().load(video_id).await?;
        let owner = loaded.video.owner.clone();
        self.remember_owner(video_id, &owner);
        Ok(owner)
    }

    fn remember_owner(&self, video_id: &str, owner: &str) {
        let mut owners = self.shared.owners.lock().unwrap_or_else(PoisonError::into_inner);
        if owners.len() >= MAX_OWNERS {
            owners.clear();
        }
        owners.insert(video_id.to_owned(), owner.to_owned());
    }

    fn spawn(
        &self,
        deliveries: &mut JoinSet<(u64, String, Outcome)>,
        job: &Job,
        settings: &watch::Receiver<Endpoint>,
        permits: &Arc<Semaphore>,
        recorder: &Arc<Recorder>,
    ) {
        let delivery = Delivery {
            shared: self.shared.clone(),
            settings: settings.clone(),
            permits: permits.clone(),
            pacer: self.pacer.clone(),
            recorder: recorder.clone(),
            position: job.position,
            video_id: job.video_id.clone(),
            event_id: job.event_id.clone(),
            event_type: job.event_type.clone(),
            body: job.body.clone(),
        };
        deliveries.spawn(async move {
            let outcome = delivery.run().await;
            (delivery.position, delivery.video_id, outcome)
        });
    }
}

/// Takes one off a counter when dropped (a delivery aborted while waiting is no longer
/// retrying).
struct Decrement<'a>(&'a AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Completes once `clock` reads `at` or later, looking at it every `tick`.
async fn wait_until(clock: &dyn Clock, at: chrono::DateTime<chrono::Utc>, tick: Duration) {
    loop {
        match (at - clock.now()).to_std() {
            Ok(left) if !left.is_zero() => tokio::time::sleep(left.min(tick)).await,
            _ => return,
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes once `stop` says so (the guard `wait_for` returns is not held past it).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn apply(registry: &mut Registry, event: &RecordedEvent) -> Result<(), StoreError> {
    registry.apply(event).map_err(|reason| StoreError::Corrupt {
        position: event.position,
        reason,
    })
}

/// One event on its way to one endpoint, attempt after attempt.
struct Delivery {
    shared: Arc<Shared>,
    settings: watch::Receiver<Endpoint>,
    permits: Arc<Semaphore>,
    pacer: Arc<Pacer>,
    recorder: Arc<Recorder>,
    position: u64,
    video_id: String,
    event_id: String,
    event_type: String,
    body: Arc<Vec<u8>>,
}

impl Delivery {
    #[tracing::instrument(name = "webhook", skip_all, fields(position = self.position, event_type = %self.event_type))]
    /// Until the event is delivered, fails for the retry period, or the endpoint is disabled.
    async fn run(&self) -> Outcome {
        let shared = &self.shared;
        let first = shared.clock.now();
        let mut attempt: u32 = 1;
        loop {
            let endpoint = self.settings.borrow().clone();
            if !endpoint.enabled {
                return Outcome::Done;
            }
            let (result, at, latency) = {
                let Ok(_permit) = self.permits.acquire().await else {
                    return Outcome::Done;
                };
                self.pacer.wait(endpoint.max_per_second).await;
                let at = shared.clock.now();
                let started = Instant::now();
                let result = self.send(&endpoint, attempt).await;
                (result, at, started.elapsed())
            };
            let mut record = DeliveryRecord {
                position: self.position,
                event_id: self.event_id.clone(),
                event_type: self.event_type.clone(),
                video_id: self.video_id.clone(),
                state: DeliveryState::Delivered,
                attempts: attempt,
                first_attempt_at: first,
                last_attempt_at: at,
                status_code: None,
                latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
                error: None,
                next_attempt_at: None,
            };
            let failure = match result {
                Ok(answer) if (200..300).contains(&answer.status) => {
                    shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    record.status_code = Some(answer.status);
                    self.recorder.note(record);
                    return Outcome::Done;
                }
                Ok(answer) => {
                    record.status_code = Some(answer.status);
                    format!("answered {}", answer.status)
                }
                Err(SendError::Refused(reason) | SendError::Failed(reason)) => reason,
            };
            record.error = Some(failure.clone());
            shared.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let now = shared.clock.now();
            let elapsed = (now - first).to_std().unwrap_or_default();
            if elapsed >= shared.config.retry_for {
                shared.stats.failed.fetch_add(1, Ordering::Relaxed);
                record.state = DeliveryState::Failed;
                self.recorder.note(record);
                return Outcome::Failed(Failing {
                    endpoint_id: endpoint.id,
                    position: self.position,
                    event_id: self.event_id.clone(),
                    attempts: attempt,
                    reason: failure,
                    since: first,
                });
            }
            let wait = backoff(&shared.config, attempt);
            let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
            record.state = DeliveryState::Retrying;
            record.next_attempt_at = Some(next);
            self.recorder.note(record);
            tracing::debug!(endpoint = %endpoint.id, attempt, reason = %failure, ?wait, "delivery failed; trying again");
            shared.stats.retrying.fetch_add(1, Ordering::Relaxed);
            let _retrying = Decrement(&shared.stats.retrying);
            wait_until(&*shared.clock, next, shared.config.clock_tick).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        attempt: u32,
    ) -> Result<vodsource_commands::ports::WebhookResponse, SendError> {
        let shared = &self.shared;
        let request = signed_request(
            &shared.signer,
            endpoint,
            shared.clock.now(),
            &self.event_id,
            &self.event_type,
            self.body.to_vec(),
            attempt,
            shared.config.timeout,
        );
        shared.sender.send(request).await
    }
}

/// The request that sends `body` (event `event_id` of `event_type`) to `endpoint` at `now`,
/// signed with each of its secrets in force.
#[allow(clippy::too_many_arguments)]
pub(crate) fn signed_request(
    signer: &Signer,
    endpoint: &Endpoint,
    now: chrono::DateTime<chrono::Utc>,
    event_id: &str,
    event_type: &str,
    body: Vec<u8>,
    attempt: u32,
    timeout: Duration,
) -> WebhookRequest {
    let secrets: Vec<String> = endpoint
        .signing_versions(now)
        .into_iter()
        .map(|version| signer.webhook_secret(&endpoint.id, version))
        .collect();
    let keys: Vec<&[u8]> = secrets.iter().map(String::as_bytes).collect();
    let signature = sign(&keys, now.timestamp(), &body);
    WebhookRequest {
        url: endpoint.url.clone(),
        headers: vec![
            (SIGNATURE_HEADER, signature),
            ("Vodsource-Event-Id", event_id.to_owned()),
            ("Vodsource-Event-Type", event_type.to_owned()),
            ("Vodsource-Delivery-Attempt", attempt.to_string()),
        ],
        body,
        timeout,
    }
}

/// The wait after failed attempt `attempt`: `backoff · 2^(attempt-1)`, capped, less a random
/// part of up to half of it (so endpoints that fail together do not retry together).
fn backoff(config: &DispatchConfig, attempt: u32) -> Duration {
    let full = config
        .backoff
        .saturating_mul(2_u32.saturating_pow(attempt.saturating_sub(1).min(30)))
        .min(config.max_backoff);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    full.saturating_sub(full / 2 * jitter / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_taken_off() {
        let config = DispatchConfig {
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            ..DispatchConfig::default()
        };
        for (attempt, full) in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (40, 60)] {
            for _ in 0..50 {
                let wait = backoff(&config, attempt);
                let full = Duration::from_secs(full);
                assert!(
                    wait <= full && wait >= full / 2,
                    "attempt {attempt}: {wait:?} of {full:?}"
                );
            }
        }
    }
}
