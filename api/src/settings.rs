//! The settings of a process, made from the [`Config`] for the roles it plays: addresses,
//! secrets, limits, the stream, the lake, the workers.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::RngCore;
use vodsource_app::cdn::{Cdn, CdnError, CloudFrontKey};
use vodsource_commands::process::SupervisorConfig;
use vodsource_encoder::{LadderConfig, SourceLimits, WorkerConfig};

use crate::config::{Config, Secret};
use crate::http::auth::AuthSettings;
use crate::http::limits::HttpLimits;

/// What one process runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    /// The HTTP API.
    pub api: bool,
    /// The projection runners and the encoding supervisor.
    pub projectors: bool,
    /// The encoding workers of [`Settings::workers`].
    pub encoders: bool,
    /// The watch-state consumer group of the QoE stream.
    pub watch_state: bool,
    /// The relay of the event store to the video-events stream.
    pub relay: bool,
    /// The lake sink of the streams ([`Settings::lake`]).
    pub lake_sink: bool,
}

impl Roles {
    /// `vodsource serve`: everything in one process.
    pub const SERVE: Self = Self {
        api: true,
        projectors: true,
        encoders: true,
        watch_state: true,
        relay: true,
        lake_sink: true,
    };
    /// `vodsource api`: the HTTP API alone.
    pub const API: Self = Self {
        api: true,
        ..Self::NONE
    };
    /// `vodsource projector`: the projections, the encoding supervisor and the watch state.
    pub const PROJECTOR: Self = Self {
        projectors: true,
        watch_state: true,
        ..Self::NONE
    };
    /// `vodsource encoder`: encoding workers.
    pub const ENCODER: Self = Self {
        encoders: true,
        ..Self::NONE
    };
    /// `vodsource relay`: the video-events relay.
    pub const RELAY: Self = Self {
        relay: true,
        ..Self::NONE
    };
    /// `vodsource qoe-sink`: the lake sink.
    pub const QOE_SINK: Self = Self {
        lake_sink: true,
        ..Self::NONE
    };
    const NONE: Self = Self {
        api: false,
        projectors: false,
        encoders: false,
        watch_state: false,
        relay: false,
        lake_sink: false,
    };
}

/// How a process is set up (the parts each role uses).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// The URL clients reach the server at; `http://<bound address>` when unset.
    pub public_url: Option<String>,
    /// Tokens and rate limits.
    pub auth: AuthSettings,
    /// Secret for signed upload and media URLs.
    pub signing_secret: Vec<u8>,
    /// How long signed URLs work.
    pub url_ttl: Duration,
    /// How long idempotency keys are remembered.
    pub idempotency_ttl: Duration,
    /// How long a resumable upload lives after its last request.
    pub upload_expiry: Duration,
    /// How long in-flight requests get at shutdown.
    pub grace: Duration,
    /// Encoding workers to run in this process, one per configuration.
    pub workers: Vec<vodsource_encoder::WorkerConfig>,
    /// The QoE and video-events stream; `None`: beacons are answered with 503.
    pub stream: Option<vodsource_infra::StreamUrl>,
    /// Overrides of the AWS environment (Kinesis).
    pub aws: vodsource_infra::aws::AwsSettings,
    /// The lake sink of the QoE and video-events streams, run here when there is a stream;
    /// `None` leaves it to `vodsource qoe-sink` processes.
    pub lake: Option<vodsource_lake::sink::SinkSettings>,
    /// The CDN in front of the object store that players fetch media from; `None` serves
    /// media from this server (embedded) or redirects to presigned S3 URLs.
    pub cdn: Option<Arc<vodsource_app::cdn::Cdn>>,
    /// Timeouts and caps of the HTTP layer.
    pub limits: HttpLimits,
    /// A second address serving `/metrics` and the probes without authentication (for a
    /// scraper on a private network); `None`: `/metrics` is on the API's address, admin only.
    pub metrics_listen: Option<String>,
    /// How sources named by URL are fetched: schemes, the addresses allowed, timeouts.
    pub fetch: vodsource_infra::egress::FetchSettings,
    /// The ingest process (run with the projection runners).
    pub ingest: vodsource_app::ingest::IngestConfig,
    /// How webhooks are sent: schemes, the addresses allowed.
    pub send: vodsource_infra::egress::SendSettings,
    /// The webhook dispatcher (run with the projection runners).
    pub dispatch: vodsource_app::webhooks::dispatch::DispatchConfig,
}

impl Settings {
    /// The settings `config` gives a process named `owner` playing `roles`. Only a process
    /// serving the API needs (and makes, the first time) the signing secret.
    ///
    /// # Errors
    /// A bad secret, CDN, ladder, limit or lake setting, with the setting's name.
    pub fn from_config(config: &Config, owner: &str, roles: Roles) -> anyhow::Result<Self> {
        let o = config.options();
        // `Config::resolve` filled every setting that has a default.
        let secs = |v: Option<u64>| Duration::from_secs(v.unwrap_or_default());
        let encoders = if roles.encoders {
            o.encoders.unwrap_or_default()
        } else {
            0
        };
        Ok(Self {
            listen: o.listen.clone().unwrap_or_default(),
            public_url: o.public_url.clone(),
            auth: AuthSettings {
                hs256_secret: o.jwt_secret.as_ref().map(|s| s.expose().to_owned()),
                jwks_file: o.jwks_file.clone(),
                issuer: o.jwt_issuer.clone(),
                audience: o.jwt_audience.clone(),
                max_lifetime: o.jwt_max_lifetime_secs.map(Duration::from_secs),
                rate_per_second: o.rate_limit.unwrap_or_default(),
                burst: o.rate_burst.unwrap_or_default(),
            },
            // The API signs links with it; the dispatcher derives webhook secrets from it.
            signing_secret: if roles.api || roles.projectors {
                signing_secret(o.signing_secret.as_ref(), &config.data_dir)?
            } else {
                Vec::new()
            },
            url_ttl: secs(o.url_ttl_secs),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            upload_expiry: secs(o.upload_expiry_secs),
            grace: Duration::from_secs(30),
            workers: worker_configs(config, owner, encoders)?,
            stream: Some(config.stream_url()?),
            aws: vodsource_infra::aws::AwsSettings::default(),
            lake: if roles.lake_sink {
                Some(lake_settings(config)?)
            } else {
                None
            },
            cdn: cdn(
                o.media_base_url.clone(),
                o.media_key_pair_id.clone(),
                o.media_private_key_file.clone(),
                o.media_allow_unsigned.unwrap_or_default(),
            )?,
            limits: HttpLimits {
                header_timeout: secs(o.header_timeout_secs),
                body_timeout: secs(o.body_timeout_secs),
                streams_per_principal: o.max_streams_per_caller.unwrap_or_default(),
                streams_total: o.max_streams.unwrap_or_default(),
                ..HttpLimits::default()
            },
            metrics_listen: o.metrics_listen.clone(),
            fetch: fetch_settings(o)?,
            ingest: vodsource_app::ingest::IngestConfig::default(),
            send: vodsource_infra::egress::SendSettings {
                policy: vodsource_infra::egress::AddressPolicy {
                    allow: allow_list(o.webhook_allow.as_deref(), "webhook_allow")?,
                },
                allow_http: o.webhook_allow_http.unwrap_or_default(),
                ..Default::default()
            },
            dispatch: vodsource_app::webhooks::dispatch::DispatchConfig::default(),
        })
    }
}

/// How sources named by URL are fetched.
///
/// # Errors
/// An allow-list entry that is not an address or block, named.
fn fetch_settings(o: &crate::config::Options) -> anyhow::Result<vodsource_infra::egress::FetchSettings> {
    Ok(vodsource_infra::egress::FetchSettings {
        policy: vodsource_infra::egress::AddressPolicy {
            allow: allow_list(o.ingest_allow.as_deref(), "ingest_allow")?,
        },
        allow_http: o.ingest_allow_http.unwrap_or_default(),
        ..Default::default()
    })
}

/// An allow-list of address blocks, comma-separated.
///
/// # Errors
/// An entry that is not an address or block, named with `setting`.
fn allow_list(list: Option<&str>, setting: &str) -> anyhow::Result<Vec<vodsource_infra::egress::Cidr>> {
    list.unwrap_or_default()
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| entry.parse().map_err(|e: String| anyhow::anyhow!("{setting}: {e}")))
        .collect()
}

/// The retry policy of the encoding supervisor.
pub fn supervision(config: &Config) -> SupervisorConfig {
    let defaults = SupervisorConfig::default();
    let o = config.options();
    SupervisorConfig {
        max_attempts: o.encode_attempts.unwrap_or(defaults.max_attempts).max(1),
        backoff_base_secs: o.encode_backoff_secs.unwrap_or(defaults.backoff_base_secs),
        ..defaults
    }
}

/// The ladder in force: the configured file's, or the default.
///
/// # Errors
/// An unreadable or invalid ladder file, or one that cannot encode a 1080p source.
pub fn ladder(config: &Config) -> anyhow::Result<LadderConfig> {
    let ladder = match &config.options().ladder {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<LadderConfig>(&text).with_context(|| format!("in the ladder file {}", path.display()))?
        }
        None => LadderConfig::default(),
    };
    vodsource_encoder::ladder::plan(&ladder, 1920, 1080, 30.0)
        .map_err(|e| anyhow::anyhow!("the ladder cannot encode a 1080p source: {e}"))?;
    Ok(ladder)
}

/// `count` worker configurations named after `owner`.
///
/// # Errors
/// As [`ladder`] and [`source_limits`].
pub fn worker_configs(config: &Config, owner: &str, count: usize) -> anyhow::Result<Vec<WorkerConfig>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let ladder = ladder(config)?;
    let limits = source_limits(config)?;
    let o = config.options();
    let work_dir = o.work_dir.clone().unwrap_or_default();
    Ok((0..count)
        .map(|i| {
            let mut worker = WorkerConfig::new(format!("{owner}-enc{i}"), work_dir.clone());
            worker.ladder = ladder.clone();
            worker.limits = limits.clone();
            worker.encoders_in_process = count;
            if let Some(progressive) = o.progressive {
                worker.progressive = progressive;
            }
            if let Some(seconds) = o.chunk_seconds {
                worker.chunk_seconds = seconds;
            }
            if let Some(lease) = o.encode_lease_secs {
                worker.lease_secs = lease.max(3);
                worker.progress_every = worker
                    .progress_every
                    .min(Duration::from_secs(u64::from(lease.max(3)) / 3));
            }
            worker
        })
        .collect())
}

/// The source limits of the encoders.
///
/// # Errors
/// A limit of zero or a negative factor, naming the setting.
pub fn source_limits(config: &Config) -> anyhow::Result<SourceLimits> {
    let o = config.options();
    let mut limits = SourceLimits::default();
    if let Some(pixels) = o.max_source_pixels {
        anyhow::ensure!(pixels > 0, "max_source_pixels must be at least 1");
        limits.max_pixels = pixels;
    }
    if let Some(fps) = o.max_source_fps {
        anyhow::ensure!(fps > 0.0 && fps.is_finite(), "max_source_fps must be more than 0");
        limits.max_frame_rate = fps;
    }
    if let Some(secs) = o.max_source_duration_secs {
        anyhow::ensure!(secs > 0, "max_source_duration_secs must be at least 1");
        limits.max_duration = Duration::from_secs(secs);
    }
    if let Some(factor) = o.encode_time_factor {
        anyhow::ensure!(
            factor >= 0.0 && factor.is_finite(),
            "encode_time_factor must be 0 or more"
        );
        limits.wall_time_factor = factor;
    }
    if let Some(secs) = o.encode_time_floor_secs {
        limits.wall_time_floor = Duration::from_secs(secs);
    }
    Ok(limits)
}

/// The lake sink's settings: flush limits, and `<data dir>/sink` for files being written.
///
/// # Errors
/// A zero limit.
pub fn lake_settings(config: &Config) -> anyhow::Result<vodsource_lake::sink::SinkSettings> {
    let o = config.options();
    let mut lake = vodsource_lake::sink::SinkSettings::new(config.data_dir.join("sink"));
    if let Some(bytes) = o.lake_flush_bytes {
        anyhow::ensure!(bytes > 0, "lake_flush_bytes must be more than 0");
        lake.max_file_bytes = bytes;
    }
    if let Some(secs) = o.lake_flush_secs {
        anyhow::ensure!(secs > 0, "lake_flush_secs must be at least 1");
        lake.max_age = Duration::from_secs(secs);
    }
    Ok(lake)
}

/// The signing secret: configured, or generated once and kept in the data folder.
fn signing_secret(configured: Option<&Secret>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured {
        anyhow::ensure!(
            secret.expose().len() >= 32,
            "the signing secret must be at least 32 bytes"
        );
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let path = data_dir.join("signing.key");
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) => anyhow::bail!(
            "{} is shorter than 32 bytes; delete it to make a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let mut secret = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(&secret)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// The CDN of media URLs, if one is configured.
///
/// # Errors
/// Half a key pair, an unreadable key, or a CDN without a key unless `allow_unsigned`.
pub fn cdn(
    base: Option<String>,
    key_pair_id: Option<String>,
    key_file: Option<PathBuf>,
    allow_unsigned: bool,
) -> anyhow::Result<Option<Arc<Cdn>>> {
    let key = match (key_pair_id, key_file) {
        (Some(id), Some(path)) => Some(CloudFrontKey::from_file(&id, &path)?),
        (None, None) => None,
        _ => return Err(CdnError::HalfKey.into()),
    };
    if base.is_some() && key.is_none() && !allow_unsigned {
        anyhow::bail!(
            "VODSOURCE_MEDIA_BASE_URL is set without a signing key (VODSOURCE_MEDIA_KEY_PAIR_ID and \
             VODSOURCE_MEDIA_PRIVATE_KEY_FILE): plain URLs would make every object behind the CDN's \
             origin public, unpublished media included. Configure the key pair, or, for a distribution \
             whose origin is the media/ prefix alone and whose media may be public, set \
             VODSOURCE_MEDIA_ALLOW_UNSIGNED=true"
        );
    }
    match base {
        Some(base) => Ok(Some(Arc::new(Cdn::new(&base, key)?))),
        None if key.is_some() => {
            anyhow::bail!("a CDN signing key is set but no media base URL (VODSOURCE_MEDIA_BASE_URL)")
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdn_without_a_signing_key_is_refused_unless_media_may_be_public() {
        let refused = cdn(Some("https://cdn.example".into()), None, None, false);
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("without a signing key") && message.contains("VODSOURCE_MEDIA_ALLOW_UNSIGNED"),
            "{message}"
        );
        assert!(cdn(Some("https://cdn.example".into()), None, None, true).is_ok_and(|c| c.is_some()));
        assert!(cdn(None, None, None, false).is_ok_and(|c| c.is_none()));
    }

    #[test]
    fn roles_take_only_what_they_need() {
        let dir = std::env::temp_dir().join(format!("vodsource-settings-{}", std::process::id()));
        let config = Config::resolve(crate::config::Options {
            data_dir: Some(dir.clone()),
            ..crate::config::Options::default()
        });
        let relay = Settings::from_config(&config, "host", Roles::RELAY).expect("relay");
        assert!(relay.signing_secret.is_empty() && relay.workers.is_empty() && relay.lake.is_none());
        assert!(!dir.join("signing.key").exists(), "a relay makes no signing key");
        let serve = Settings::from_config(&config, "host", Roles::SERVE).expect("serve");
        assert_eq!(serve.signing_secret.len(), 32);
        assert_eq!(serve.workers.len(), 1);
        assert!(serve.lake.is_some());
        assert_eq!(serve.workers[0].encoders_in_process, 1);
        let three = Config::resolve(crate::config::Options {
            data_dir: Some(dir.clone()),
            encoders: Some(3),
            ..crate::config::Options::default()
        });
        let workers = Settings::from_config(&three, "host", Roles::SERVE)
            .expect("serve")
            .workers;
        assert_eq!(
            workers.iter().map(|w| w.encoders_in_process).collect::<Vec<_>>(),
            [3, 3, 3],
            "each lead's share of the memory is one of three"
        );
        let again = Settings::from_config(&config, "host", Roles::SERVE).expect("again");
        assert_eq!(again.signing_secret, serve.signing_secret, "made once, then kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
