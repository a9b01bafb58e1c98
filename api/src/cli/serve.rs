//! `vodsource serve`: the HTTP API, with the projection runners and the encoding supervisor
//! in the same process (embedded default). Settings come from flags, then `VODSOURCE_*`
//! environment variables, then an optional TOML file (`--config`), then defaults.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rand::RngCore;
use serde::Deserialize;
use vodsource_infra::open_object_store;

use crate::config::Config;
use crate::http::auth::AuthSettings;
use crate::http::cdn::{Cdn, CdnError, CloudFrontKey};
use crate::http::limits::HttpLimits;
use crate::http::{start, ServeSettings};
use crate::roles::Stores;

/// `vodsource serve` flags; every one can also be set in the environment or the TOML file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "VODSOURCE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "VODSOURCE_LISTEN")]
    pub listen: Option<String>,
    /// The URL clients reach this server at [default: http://<listen address>].
    #[arg(long, env = "VODSOURCE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Object store URL [default: file://<data dir>/objects].
    #[arg(long, env = "VODSOURCE_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// HS256 secret of bearer tokens (at least 16 bytes). Without it or a JWKS file,
    /// authentication is off, which is allowed on loopback only.
    #[arg(long, env = "VODSOURCE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// JWKS file with the public keys of bearer tokens.
    #[arg(long, env = "VODSOURCE_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Required token issuer (`iss`).
    #[arg(long, env = "VODSOURCE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required token audience (`aud`).
    #[arg(long, env = "VODSOURCE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Longest token lifetime accepted (`exp - iat`, which then must be present), in seconds
    /// [default: any].
    #[arg(long, env = "VODSOURCE_JWT_MAX_LIFETIME_SECS")]
    pub jwt_max_lifetime_secs: Option<u64>,
    /// Sustained requests per second per principal [default: 100].
    #[arg(long, env = "VODSOURCE_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Burst per principal [default: 200].
    #[arg(long, env = "VODSOURCE_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Largest source upload in bytes [default: 5 GiB].
    #[arg(long, env = "VODSOURCE_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// How long signed upload and media URLs work, in seconds [default: 3600].
    #[arg(long, env = "VODSOURCE_URL_TTL_SECS")]
    pub url_ttl_secs: Option<u64>,
    /// The CDN that players fetch media from: a distribution whose origin is the object store,
    /// so that `<base>/<key>` is the object `<key>` (for S3, the bucket with the store's prefix
    /// as origin path). Playlists stay with the API; segments, posters and thumbnails go
    /// there [default: none; media comes from this server or presigned S3 URLs].
    #[arg(long, env = "VODSOURCE_MEDIA_BASE_URL")]
    pub media_base_url: Option<String>,
    /// Serve media through the CDN with plain, unsigned URLs. Only for a distribution whose
    /// origin is the store's `media/` prefix alone and whose media may be public; refused
    /// without this flag, since unsigned URLs would publish every object behind the origin.
    #[arg(long, env = "VODSOURCE_MEDIA_ALLOW_UNSIGNED")]
    pub media_allow_unsigned: bool,
    /// CloudFront key pair id (the public key's id in the distribution's trusted key group);
    /// with the private key file, media URLs on the CDN are CloudFront signed URLs.
    #[arg(long, env = "VODSOURCE_MEDIA_KEY_PAIR_ID")]
    pub media_key_pair_id: Option<String>,
    /// The RSA private key (PEM) of that key pair.
    #[arg(long, env = "VODSOURCE_MEDIA_PRIVATE_KEY_FILE")]
    pub media_private_key_file: Option<PathBuf>,
    /// Secret of signed URLs [default: generated once into <data dir>/signing.key].
    #[arg(long, env = "VODSOURCE_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<String>,
    /// Do not run the projection runners and the encoding supervisor here (they run in
    /// `vodsource projector` processes).
    #[arg(long, env = "VODSOURCE_NO_PROJECTORS")]
    pub no_projectors: bool,
    /// Encoding workers in this process; 0 leaves encoding to `vodsource encoder` processes [default: 1].
    #[arg(long, env = "VODSOURCE_ENCODERS")]
    pub encoders: Option<usize>,
    /// Do not run the lake sink here (it runs in `vodsource qoe-sink` processes).
    #[arg(long, env = "VODSOURCE_NO_QOE_SINK")]
    pub no_qoe_sink: bool,
    /// Flush a lake file when it reaches this many bytes [default: 134217728 (128 MiB)].
    #[arg(long, env = "VODSOURCE_LAKE_FLUSH_BYTES")]
    pub lake_flush_bytes: Option<u64>,
    /// Flush a lake file when its oldest record is this many seconds old [default: 60].
    #[arg(long, env = "VODSOURCE_LAKE_FLUSH_SECS")]
    pub lake_flush_secs: Option<u64>,
    /// Also serve `/metrics`, `/livez` and `/readyz` here, without authentication (a private
    /// address for a scraper); `/metrics` on the API's own address is for admins only
    /// [default: none].
    #[arg(long, env = "VODSOURCE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Seconds a request's head (line and headers) may take to arrive [default: 10].
    #[arg(long, env = "VODSOURCE_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a body may pause between bytes; a JSON body must be whole within it
    /// [default: 30].
    #[arg(long, env = "VODSOURCE_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Live event streams one caller may hold open [default: 16].
    #[arg(long, env = "VODSOURCE_MAX_STREAMS_PER_CALLER")]
    pub max_streams_per_caller: Option<usize>,
    /// Live event streams the server holds open in all [default: 1000].
    #[arg(long, env = "VODSOURCE_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Retry policy of the encoding supervisor.
    #[command(flatten)]
    pub supervision: super::encoding::SupervisionArgs,
    /// Ladder, lease and scratch folder of the workers.
    #[command(flatten)]
    pub worker: super::encoding::WorkerArgs,
}

/// The TOML file: the same settings, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    public_url: Option<String>,
    object_store: Option<String>,
    jwt_secret: Option<String>,
    jwks_file: Option<PathBuf>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    jwt_max_lifetime_secs: Option<u64>,
    rate_limit: Option<u32>,
    rate_burst: Option<u32>,
    max_upload_bytes: Option<u64>,
    url_ttl_secs: Option<u64>,
    signing_secret: Option<String>,
    media_base_url: Option<String>,
    media_key_pair_id: Option<String>,
    media_private_key_file: Option<PathBuf>,
    media_allow_unsigned: Option<bool>,
    no_projectors: Option<bool>,
    encoders: Option<usize>,
    no_qoe_sink: Option<bool>,
    lake_flush_bytes: Option<u64>,
    lake_flush_secs: Option<u64>,
    metrics_listen: Option<String>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    max_streams_per_caller: Option<usize>,
    max_streams: Option<usize>,
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in the configuration file {}", path.display()))
}

/// The signing secret: configured, or generated once and kept in the data folder.
fn signing_secret(configured: Option<String>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured {
        anyhow::ensure!(secret.len() >= 32, "the signing secret must be at least 32 bytes");
        return Ok(secret.into_bytes());
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
) -> anyhow::Result<Option<std::sync::Arc<Cdn>>> {
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
        Some(base) => Ok(Some(std::sync::Arc::new(Cdn::new(&base, key)?))),
        None if key.is_some() => {
            anyhow::bail!("a CDN signing key is set but no media base URL (VODSOURCE_MEDIA_BASE_URL)")
        }
        None => Ok(None),
    }
}

/// The lake sink's settings: flush limits, and `<data dir>/sink` for files being written.
///
/// # Errors
/// A zero limit.
pub fn lake_settings(
    config: &Config,
    bytes: Option<u64>,
    secs: Option<u64>,
) -> anyhow::Result<vodsource_lake::sink::SinkSettings> {
    let mut lake = vodsource_lake::sink::SinkSettings::new(config.data_dir.join("sink"));
    if let Some(bytes) = bytes {
        anyhow::ensure!(bytes > 0, "the lake flush size must be more than 0 bytes");
        lake.max_file_bytes = bytes;
    }
    if let Some(secs) = secs {
        anyhow::ensure!(secs > 0, "the lake flush age must be at least 1 second");
        lake.max_age = Duration::from_secs(secs);
    }
    Ok(lake)
}

/// Resolves flags, environment, file and defaults.
///
/// # Errors
/// An unreadable or invalid file, a bad secret.
pub fn settings(config: &Config, args: Args, owner: &str) -> anyhow::Result<(ServeSettings, String, u64)> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileSettings::default(),
    };
    let object_store = config.object_store_url(args.object_store.or(file.object_store));
    let settings = ServeSettings {
        listen: args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".into()),
        public_url: args.public_url.or(file.public_url),
        auth: AuthSettings {
            hs256_secret: args.jwt_secret.or(file.jwt_secret),
            jwks_file: args.jwks_file.or(file.jwks_file),
            issuer: args.jwt_issuer.or(file.jwt_issuer),
            audience: args.jwt_audience.or(file.jwt_audience),
            max_lifetime: args
                .jwt_max_lifetime_secs
                .or(file.jwt_max_lifetime_secs)
                .map(Duration::from_secs),
            rate_per_second: args.rate_limit.or(file.rate_limit).unwrap_or(100),
            burst: args.rate_burst.or(file.rate_burst).unwrap_or(200),
        },
        signing_secret: signing_secret(args.signing_secret.or(file.signing_secret), &config.data_dir)?,
        url_ttl: Duration::from_secs(args.url_ttl_secs.or(file.url_ttl_secs).unwrap_or(3600)),
        idempotency_ttl: Duration::from_secs(24 * 3600),
        run_projectors: !(args.no_projectors || file.no_projectors.unwrap_or(false)),
        grace: Duration::from_secs(30),
        stream: Some(config.stream_url()?),
        aws: vodsource_infra::aws::AwsSettings::default(),
        lake: if args.no_qoe_sink || file.no_qoe_sink.unwrap_or(false) {
            None
        } else {
            Some(lake_settings(
                config,
                args.lake_flush_bytes.or(file.lake_flush_bytes),
                args.lake_flush_secs.or(file.lake_flush_secs),
            )?)
        },
        stream_roles: true,
        cdn: cdn(
            args.media_base_url.or(file.media_base_url),
            args.media_key_pair_id.or(file.media_key_pair_id),
            args.media_private_key_file.or(file.media_private_key_file),
            args.media_allow_unsigned || file.media_allow_unsigned.unwrap_or(false),
        )?,
        limits: {
            let defaults = HttpLimits::default();
            let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
            HttpLimits {
                header_timeout: secs(
                    args.header_timeout_secs.or(file.header_timeout_secs),
                    defaults.header_timeout,
                ),
                body_timeout: secs(args.body_timeout_secs.or(file.body_timeout_secs), defaults.body_timeout),
                streams_per_principal: args
                    .max_streams_per_caller
                    .or(file.max_streams_per_caller)
                    .unwrap_or(defaults.streams_per_principal),
                streams_total: args.max_streams.or(file.max_streams).unwrap_or(defaults.streams_total),
                ..defaults
            }
        },
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
        workers: args
            .worker
            .configs(config, owner, args.encoders.or(file.encoders).unwrap_or(1))?,
    };
    let max_upload = args
        .max_upload_bytes
        .or(file.max_upload_bytes)
        .unwrap_or(5 * 1024 * 1024 * 1024);
    Ok((settings, object_store, max_upload))
}

/// Runs the server until SIGTERM or Ctrl-C.
///
/// # Errors
/// Configuration, stores, or the listener.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<()> {
    serve(config, args, false).await
}

/// `vodsource api`: the HTTP API alone (any number of processes behind a load balancer).
/// Beacons still go to the stream; projections, the supervisor, the watch state and the relay
/// are `vodsource projector` and `vodsource relay`, encoding is `vodsource encoder`, the lake
/// sink is `vodsource qoe-sink`.
///
/// # Errors
/// As [`run`].
pub async fn run_api(config: &Config, args: Args) -> anyhow::Result<()> {
    serve(config, args, true).await
}

async fn serve(config: &Config, args: Args, api_only: bool) -> anyhow::Result<()> {
    let mut stores = Stores::open(config).await?;
    stores.supervision = args.supervision.config();
    let (mut settings, object_store, max_upload) = settings(config, args, &stores.owner)?;
    if api_only {
        settings.run_projectors = false;
        settings.workers.clear();
        settings.lake = None;
        settings.stream_roles = false;
    }
    stores.policy.max_source_bytes = max_upload;
    let objects = open_object_store(&object_store, &vodsource_infra::aws::AwsSettings::default())
        .await
        .context("opening the object store")?;
    tracing::info!(
        event_store = %stores.log.describe(),
        object_store = %objects.describe(),
        projectors = settings.run_projectors,
        encoders = settings.workers.len(),
        stream = %config.stream,
        lake_sink = settings.lake.is_some(),
        "starting"
    );
    let running = start(stores, objects, settings).await?;
    running.until_stopped_or(crate::cli::shutdown_signal()).await
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
}
