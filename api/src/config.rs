//! The one configuration of every command. Each setting has one name: `listen` in the TOML
//! file, `VODSOURCE_LISTEN` in the environment, `--listen` on the command line. Layers, each
//! overriding the one before: the defaults ([`Options::defaults`], the only place they are
//! written), the TOML file (`--config`, `VODSOURCE_CONFIG`; an unknown key is refused by its
//! name), `VODSOURCE_*` variables, then flags. Secrets are [`Secret`]s, which never print;
//! `vodsource config` prints the configuration in force with them redacted.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::builder::BoolishValueParser;
use serde::{Deserialize, Serialize};

/// A secret: a JWT or signing key. It prints as `<redacted>` (`Debug`, `Display`,
/// serialization); only [`Secret::expose`] gives it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// Declares [`Options`] once: the struct, its layering and the list of its keys.
macro_rules! options {
    ($(#[$meta:meta])* pub struct Options { $( $(#[$fmeta:meta])* pub $field:ident : Option<$ty:ty>, )* }) => {
        $(#[$meta])*
        pub struct Options {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
        }

        impl Options {
            /// Every key (`VODSOURCE_<KEY>` in the environment).
            pub const KEYS: &'static [&'static str] = &[ $( stringify!($field), )* ];

            /// These settings over `lower`: each one set here wins.
            #[must_use]
            pub fn over(self, lower: Self) -> Self {
                Self { $( $field: self.$field.or(lower.$field), )* }
            }
        }
    };
}

options! {
    /// Every setting, each optional: one layer of the configuration.
    #[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    pub struct Options {
        /// A TOML file with any of these settings (snake_case keys, as `vodsource config` prints).
        #[arg(long, env = "VODSOURCE_CONFIG", global = true, help_heading = "Configuration")]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// Log as JSON lines (for production log shippers).
        #[arg(long, env = "VODSOURCE_LOG_JSON", global = true, help_heading = "Configuration", require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
        pub log_json: Option<bool>,

        /// Folder of the embedded stores [default: ./data].
        #[arg(long, env = "VODSOURCE_DATA_DIR", global = true, help_heading = "Stores")]
        pub data_dir: Option<PathBuf>,
        /// Event store URL: `sqlite://<file>` or `postgres://…` [default: sqlite://<data dir>/events.db].
        #[arg(long, env = "VODSOURCE_EVENT_STORE", global = true, help_heading = "Stores")]
        pub event_store: Option<String>,
        /// View store URL: `sqlite://<file>` or `dynamodb://…` [default: sqlite://<data dir>/views.db].
        #[arg(long, env = "VODSOURCE_VIEW_STORE", global = true, help_heading = "Stores")]
        pub view_store: Option<String>,
        /// The QoE and video-events stream: `embedded` (a log in `<data dir>/streams`, one
        /// process), `kafka://host:port[,host:port][?partitions=N]` or
        /// `kinesis://[?shards=N&lease_secs=S]` (with the AWS environment) [default: embedded].
        #[arg(long, env = "VODSOURCE_STREAM", global = true, help_heading = "Stores")]
        pub stream: Option<String>,
        /// Object store URL: `file://<folder>` or `s3://bucket[/prefix]` [default: file://<data dir>/objects].
        #[arg(long, env = "VODSOURCE_OBJECT_STORE", global = true, help_heading = "Stores")]
        pub object_store: Option<String>,
        /// Origins of the web pages that upload to and play from the bucket directly (its CORS
        /// rules, set by `vodsource setup`), comma-separated; `*` for any [default: *].
        #[arg(long, env = "VODSOURCE_CORS_ORIGINS", global = true, help_heading = "Stores")]
        pub cors_origins: Option<String>,

        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "VODSOURCE_LISTEN", global = true, help_heading = "HTTP")]
        pub listen: Option<String>,
        /// The URL clients reach this server at [default: http://<listen address>].
        #[arg(long, env = "VODSOURCE_PUBLIC_URL", global = true, help_heading = "HTTP")]
        pub public_url: Option<String>,
        /// Also serve `/metrics`, `/livez` and `/readyz` here, without authentication (a private
        /// address for a scraper); `/metrics` on the API's own address is for admins only
        /// [default: none].
        #[arg(long, env = "VODSOURCE_METRICS_LISTEN", global = true, help_heading = "HTTP")]
        pub metrics_listen: Option<String>,
        /// Seconds a request's head (line and headers) may take to arrive [default: 10].
        #[arg(long, env = "VODSOURCE_HEADER_TIMEOUT_SECS", global = true, help_heading = "HTTP")]
        pub header_timeout_secs: Option<u64>,
        /// Seconds a body may pause between bytes; a JSON body must be whole within it [default: 30].
        #[arg(long, env = "VODSOURCE_BODY_TIMEOUT_SECS", global = true, help_heading = "HTTP")]
        pub body_timeout_secs: Option<u64>,
        /// Live event streams one caller may hold open [default: 16].
        #[arg(long, env = "VODSOURCE_MAX_STREAMS_PER_CALLER", global = true, help_heading = "HTTP")]
        pub max_streams_per_caller: Option<usize>,
        /// Live event streams the server holds open in all [default: 1000].
        #[arg(long, env = "VODSOURCE_MAX_STREAMS", global = true, help_heading = "HTTP")]
        pub max_streams: Option<usize>,
        /// Largest source upload in bytes [default: 5 GiB].
        #[arg(long, env = "VODSOURCE_MAX_UPLOAD_BYTES", global = true, help_heading = "HTTP")]
        pub max_upload_bytes: Option<u64>,
        /// How long signed upload and media URLs work, in seconds [default: 3600].
        #[arg(long, env = "VODSOURCE_URL_TTL_SECS", global = true, help_heading = "HTTP")]
        pub url_ttl_secs: Option<u64>,
        /// How long a resumable (tus) upload lives after its last request, in seconds
        /// [default: 86400].
        #[arg(long, env = "VODSOURCE_UPLOAD_EXPIRY_SECS", global = true, help_heading = "HTTP")]
        pub upload_expiry_secs: Option<u64>,

        /// HS256 secret of bearer tokens (at least 32 bytes). Without it or a JWKS file,
        /// authentication is off, which is allowed on loopback only.
        #[arg(long, env = "VODSOURCE_JWT_SECRET", global = true, hide_env_values = true, help_heading = "Authentication")]
        pub jwt_secret: Option<Secret>,
        /// JWKS file with the public keys of bearer tokens.
        #[arg(long, env = "VODSOURCE_JWKS_FILE", global = true, help_heading = "Authentication")]
        pub jwks_file: Option<PathBuf>,
        /// Required token issuer (`iss`).
        #[arg(long, env = "VODSOURCE_JWT_ISSUER", global = true, help_heading = "Authentication")]
        pub jwt_issuer: Option<String>,
        /// Required token audience (`aud`).
        #[arg(long, env = "VODSOURCE_JWT_AUDIENCE", global = true, help_heading = "Authentication")]
        pub jwt_audience: Option<String>,
        /// Longest token lifetime accepted (`exp - iat`, which then must be present), in
        /// seconds [default: any].
        #[arg(long, env = "VODSOURCE_JWT_MAX_LIFETIME_SECS", global = true, help_heading = "Authentication")]
        pub jwt_max_lifetime_secs: Option<u64>,
        /// Sustained requests per second per principal [default: 100].
        #[arg(long, env = "VODSOURCE_RATE_LIMIT", global = true, help_heading = "Authentication")]
        pub rate_limit: Option<u32>,
        /// Burst per principal [default: 200].
        #[arg(long, env = "VODSOURCE_RATE_BURST", global = true, help_heading = "Authentication")]
        pub rate_burst: Option<u32>,

        /// Secret of signed upload and media URLs, at least 32 bytes [default: generated once
        /// into <data dir>/signing.key].
        #[arg(long, env = "VODSOURCE_SIGNING_SECRET", global = true, hide_env_values = true, help_heading = "Media")]
        pub signing_secret: Option<Secret>,
        /// The CDN that players fetch media from: a distribution whose origin is the object
        /// store, so that `<base>/<key>` is the object `<key>`. Playlists stay with the API;
        /// segments, posters and thumbnails go there [default: none].
        #[arg(long, env = "VODSOURCE_MEDIA_BASE_URL", global = true, help_heading = "Media")]
        pub media_base_url: Option<String>,
        /// Serve media through the CDN with plain, unsigned URLs: only for a distribution whose
        /// origin is the store's `media/` prefix alone and whose media may be public
        /// [default: false].
        #[arg(long, env = "VODSOURCE_MEDIA_ALLOW_UNSIGNED", global = true, help_heading = "Media", require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
        pub media_allow_unsigned: Option<bool>,
        /// CloudFront key pair id; with the private key file, media URLs on the CDN are
        /// CloudFront signed URLs.
        #[arg(long, env = "VODSOURCE_MEDIA_KEY_PAIR_ID", global = true, help_heading = "Media")]
        pub media_key_pair_id: Option<String>,
        /// The RSA private key (PEM) of that key pair.
        #[arg(long, env = "VODSOURCE_MEDIA_PRIVATE_KEY_FILE", global = true, help_heading = "Media")]
        pub media_private_key_file: Option<PathBuf>,

        /// Fetch a registration's `source_url` over plain `http` too (else `https` only)
        /// [default: false].
        #[arg(long, env = "VODSOURCE_INGEST_ALLOW_HTTP", global = true, help_heading = "Ingest", require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
        pub ingest_allow_http: Option<bool>,
        /// Address blocks a `source_url` may reach although they are not public (loopback,
        /// private, link-local, metadata), comma-separated: `10.8.0.0/16,fd12::/64`. Empty by
        /// default: every such address is refused, after DNS resolution and on every redirect.
        #[arg(long, env = "VODSOURCE_INGEST_ALLOW", global = true, help_heading = "Ingest")]
        pub ingest_allow: Option<String>,

        /// Send webhooks to plain `http` endpoints too (else `https` only) [default: false].
        #[arg(long, env = "VODSOURCE_WEBHOOK_ALLOW_HTTP", global = true, help_heading = "Webhooks", require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
        pub webhook_allow_http: Option<bool>,
        /// Address blocks a webhook endpoint may reach although they are not public
        /// (loopback, private, link-local, metadata), comma-separated: `10.8.0.0/16`. Empty by
        /// default: every such address is refused, after DNS resolution, at every request.
        #[arg(long, env = "VODSOURCE_WEBHOOK_ALLOW", global = true, help_heading = "Webhooks")]
        pub webhook_allow: Option<String>,

        /// Do not run the projection runners and the encoding supervisor in `serve` (they run
        /// in `vodsource projector` processes) [default: false].
        #[arg(long, env = "VODSOURCE_NO_PROJECTORS", global = true, help_heading = "Roles", require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
        pub no_projectors: Option<bool>,
        /// Encoding workers in `serve` (0 leaves encoding to `vodsource encoder`) or in
        /// `vodsource encoder` [default: 1].
        #[arg(long, alias = "workers", env = "VODSOURCE_ENCODERS", global = true, help_heading = "Roles")]
        pub encoders: Option<usize>,
        /// Do not run the lake sink in `serve` (it runs in `vodsource qoe-sink` processes)
        /// [default: false].
        #[arg(long, env = "VODSOURCE_NO_QOE_SINK", global = true, help_heading = "Roles", require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
        pub no_qoe_sink: Option<bool>,

        /// Flush a lake file when it reaches this many bytes [default: 134217728 (128 MiB)].
        #[arg(long, env = "VODSOURCE_LAKE_FLUSH_BYTES", global = true, help_heading = "Lake")]
        pub lake_flush_bytes: Option<u64>,
        /// Flush a lake file when its oldest record is this many seconds old [default: 60].
        #[arg(long, env = "VODSOURCE_LAKE_FLUSH_SECS", global = true, help_heading = "Lake")]
        pub lake_flush_secs: Option<u64>,

        /// Attempts per round before an encode fails for good [default: 3].
        #[arg(long, env = "VODSOURCE_ENCODE_ATTEMPTS", global = true, help_heading = "Encoding")]
        pub encode_attempts: Option<u32>,
        /// Backoff before the second attempt, doubling after, in seconds [default: 10].
        #[arg(long, env = "VODSOURCE_ENCODE_BACKOFF_SECS", global = true, help_heading = "Encoding")]
        pub encode_backoff_secs: Option<u32>,
        /// A TOML file with the ladder: `preset`, `segment_seconds`, `audio_bitrate_kbps`,
        /// `max_fps`, `lead_max_height` (rungs this short or shorter encode ahead while a video
        /// is published progressively; 0: off), `lead_preset` (the x264 preset of those rungs;
        /// default: `preset`), `lead_buffer_mib` (how far ahead, in MiB of
        /// pictures held for the larger rungs; 0: the lead decodes on its own),
        /// `lead_spill_mib` (how many more of them may wait on disk when the lead must go on;
        /// 0: the larger rungs decode on their own instead), `[[rungs]] name, height,
        /// bitrate_kbps` [default: 1080p/720p/480p/360p at 5000/2800/1400/800 kbit/s,
        /// veryfast, lead 480, buffer half the memory available shared among the encoders,
        /// spill 16384].
        #[arg(long, env = "VODSOURCE_LADDER", global = true, help_heading = "Encoding")]
        pub ladder: Option<PathBuf>,
        /// Publish segments as they are encoded and make a video playable before its ladder is
        /// done; false: store everything at the end (the path before progressive publication,
        /// kept for comparison) [default: true].
        #[arg(long, env = "VODSOURCE_PROGRESSIVE", global = true, help_heading = "Encoding", require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
        pub progressive: Option<bool>,
        /// Split a source of at least twice this many seconds into chunks of about this length
        /// (whole segments) that any encoder process may claim, so that several encode one
        /// video together; 0: each source is encoded whole by one encoder [default: 0].
        #[arg(long, env = "VODSOURCE_CHUNK_SECONDS", global = true, help_heading = "Encoding")]
        pub chunk_seconds: Option<u32>,
        /// Lease of a claim, extended by every progress report, in seconds [default: 30].
        #[arg(long, env = "VODSOURCE_ENCODE_LEASE_SECS", global = true, help_heading = "Encoding")]
        pub encode_lease_secs: Option<u32>,
        /// Scratch folder of encodes [default: <data dir>/work].
        #[arg(long, env = "VODSOURCE_WORK_DIR", global = true, help_heading = "Encoding")]
        pub work_dir: Option<PathBuf>,
        /// Largest source picture, in pixels per frame [default: 33177600 (8K)].
        #[arg(long, env = "VODSOURCE_MAX_SOURCE_PIXELS", global = true, help_heading = "Encoding")]
        pub max_source_pixels: Option<u64>,
        /// Highest source frame rate, fps [default: 120].
        #[arg(long, env = "VODSOURCE_MAX_SOURCE_FPS", global = true, help_heading = "Encoding")]
        pub max_source_fps: Option<f64>,
        /// Longest source, in seconds [default: 21600 (6 h)].
        #[arg(long, env = "VODSOURCE_MAX_SOURCE_DURATION_SECS", global = true, help_heading = "Encoding")]
        pub max_source_duration_secs: Option<u64>,
        /// An attempt may run this many times the source's duration, plus the floor below
        /// [default: 8].
        #[arg(long, env = "VODSOURCE_ENCODE_TIME_FACTOR", global = true, help_heading = "Encoding")]
        pub encode_time_factor: Option<f64>,
        /// ... plus this many seconds (the whole allowance before the probe) [default: 600].
        #[arg(long, env = "VODSOURCE_ENCODE_TIME_FLOOR_SECS", global = true, help_heading = "Encoding")]
        pub encode_time_floor_secs: Option<u64>,
    }
}

impl Options {
    /// The defaults: the one place they are written. Those that follow from another setting
    /// (stores in the data folder) are filled in by [`Config::resolve`].
    pub fn defaults() -> Self {
        // Where a component owns a default, it is taken from there, not written again.
        let http = crate::http::limits::HttpLimits::default();
        let supervision = vodsource_commands::process::SupervisorConfig::default();
        let source = vodsource_encoder::SourceLimits::default();
        let worker = vodsource_encoder::WorkerConfig::new(String::new(), PathBuf::new());
        let lake = vodsource_lake::sink::SinkSettings::new(PathBuf::new());
        Self {
            log_json: Some(false),
            data_dir: Some(PathBuf::from("./data")),
            stream: Some("embedded".into()),
            cors_origins: Some("*".into()),
            listen: Some("127.0.0.1:8080".into()),
            header_timeout_secs: Some(http.header_timeout.as_secs()),
            body_timeout_secs: Some(http.body_timeout.as_secs()),
            max_streams_per_caller: Some(http.streams_per_principal),
            max_streams: Some(http.streams_total),
            max_upload_bytes: Some(vodsource_domain::Policy::default().max_source_bytes),
            url_ttl_secs: Some(3600),
            upload_expiry_secs: Some(24 * 3600),
            rate_limit: Some(100),
            rate_burst: Some(200),
            media_allow_unsigned: Some(false),
            ingest_allow_http: Some(false),
            webhook_allow_http: Some(false),
            no_projectors: Some(false),
            encoders: Some(1),
            no_qoe_sink: Some(false),
            lake_flush_bytes: Some(lake.max_file_bytes),
            lake_flush_secs: Some(lake.max_age.as_secs()),
            encode_attempts: Some(supervision.max_attempts),
            encode_backoff_secs: Some(supervision.backoff_base_secs),
            encode_lease_secs: Some(worker.lease_secs),
            progressive: Some(worker.progressive),
            chunk_seconds: Some(worker.chunk_seconds),
            max_source_pixels: Some(source.max_pixels),
            max_source_fps: Some(source.max_frame_rate),
            max_source_duration_secs: Some(source.max_duration.as_secs()),
            encode_time_factor: Some(source.wall_time_factor),
            encode_time_floor_secs: Some(source.wall_time_floor.as_secs()),
            ..Self::default()
        }
    }

    /// The settings of a TOML file.
    ///
    /// # Errors
    /// An unreadable file, or one that is not TOML of these keys (an unknown key is named).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in the configuration file {}", path.display()))
    }

    /// The settings of a TOML text.
    ///
    /// # Errors
    /// A text that is not TOML of these keys (an unknown key is named).
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }
}

/// The configuration in force: every layer applied, every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    options: Options,
    /// Folder of the embedded stores.
    pub data_dir: PathBuf,
}

impl Config {
    /// `flags` (with the environment, as clap reads them) over the TOML file they name, over
    /// the defaults.
    ///
    /// # Errors
    /// As [`Options::from_file`].
    pub fn load(flags: Options) -> anyhow::Result<Self> {
        let file = match &flags.config {
            Some(path) => Options::from_file(path)?,
            None => Options::default(),
        };
        Ok(Self::resolve(flags.over(file)))
    }

    /// `options` over the defaults, with the settings that follow from the data folder.
    pub fn resolve(options: Options) -> Self {
        let mut options = options.over(Options::defaults());
        let data_dir = options.data_dir.clone().unwrap_or_else(|| PathBuf::from("./data"));
        let within = |scheme: &str, name: &str| format!("{scheme}://{}", data_dir.join(name).display());
        options.event_store.get_or_insert_with(|| within("sqlite", "events.db"));
        options.view_store.get_or_insert_with(|| within("sqlite", "views.db"));
        options.object_store.get_or_insert_with(|| within("file", "objects"));
        options.work_dir.get_or_insert_with(|| data_dir.join("work"));
        Self { options, data_dir }
    }

    /// Every setting in force: each one [`Options::defaults`] gives is `Some`.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The configuration as TOML, secrets redacted (`vodsource config`).
    ///
    /// # Errors
    /// None in practice (every value has a TOML form).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(&self.options)?)
    }

    /// The event store URL in force.
    pub fn event_store_url(&self) -> String {
        self.options.event_store.clone().unwrap_or_default()
    }

    /// The view store URL in force.
    pub fn view_store_url(&self) -> String {
        self.options.view_store.clone().unwrap_or_default()
    }

    /// The object store URL in force.
    pub fn object_store_url(&self) -> String {
        self.options.object_store.clone().unwrap_or_default()
    }

    /// The stream in force.
    ///
    /// # Errors
    /// A URL that does not parse, with the reason.
    pub fn stream_url(&self) -> anyhow::Result<vodsource_infra::StreamUrl> {
        let url = self.options.stream.as_deref().unwrap_or("embedded");
        Ok(vodsource_infra::StreamUrl::parse(url, self.data_dir.join("streams"))?)
    }
}

/// `VODSOURCE_*` variables read outside the configuration: the log filter, the chart's font,
/// the lake sink's test failpoint.
const OTHER_VARIABLES: [&str; 3] = ["log", "font", "failpoint"];

/// `VODSOURCE_*` variables of the environment that name no setting (a typo would otherwise
/// be a setting silently left at its default). The test and benchmark harnesses' own
/// (`VODSOURCE_TEST_*`, `VODSOURCE_BENCH_*`) are theirs.
pub fn unknown_variables(names: impl IntoIterator<Item = String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| {
            name.strip_prefix("VODSOURCE_").is_some_and(|key| {
                let key = key.to_ascii_lowercase();
                !OTHER_VARIABLES.contains(&key.as_str())
                    && !key.starts_with("test_")
                    && !key.starts_with("bench_")
                    && !Options::KEYS.contains(&key.as_str())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    #[test]
    fn each_layer_overrides_the_one_before() {
        let file = Options::from_toml("listen = \"0.0.0.0:9000\"\nrate_limit = 7\nencoders = 3\n").expect("file");
        let flags = Cli::try_parse_from(["vodsource", "--encoders", "5"])
            .expect("flags")
            .options;
        let config = Config::resolve(flags.over(file));
        let options = config.options();
        assert_eq!(options.encoders, Some(5), "a flag beats the file");
        assert_eq!(
            options.listen.as_deref(),
            Some("0.0.0.0:9000"),
            "the file beats the default"
        );
        assert_eq!(options.rate_limit, Some(7));
        assert_eq!(options.rate_burst, Some(200), "the default where no layer says");
        assert_eq!(config.event_store_url(), "sqlite://./data/events.db");
    }

    #[test]
    fn the_stores_follow_the_data_folder_unless_named() {
        let config = Config::resolve(Options {
            data_dir: Some("/srv/vod".into()),
            view_store: Some("dynamodb://views".into()),
            ..Options::default()
        });
        assert_eq!(config.event_store_url(), "sqlite:///srv/vod/events.db");
        assert_eq!(config.view_store_url(), "dynamodb://views");
        assert_eq!(config.object_store_url(), "file:///srv/vod/objects");
        assert_eq!(config.options().work_dir.as_deref(), Some(Path::new("/srv/vod/work")));
    }

    #[test]
    fn an_unknown_key_is_refused_by_its_name() {
        let error = Options::from_toml("listen = \"x\"\nlisten_adress = \"y\"\n")
            .err()
            .map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("unknown field `listen_adress`")),
            "{error:?}"
        );
        let error = Options::from_toml("encoders = \"many\"\n").err().map(|e| e.to_string());
        assert!(error.as_deref().is_some_and(|e| e.contains("encoders")), "{error:?}");
        let unknown = unknown_variables(
            [
                "VODSOURCE_LISTEN",
                "VODSOURCE_LISTN",
                "VODSOURCE_LOG",
                "VODSOURCE_FAILPOINT",
                "VODSOURCE_TEST_PG_URL",
                "PATH",
            ]
            .map(String::from),
        );
        assert_eq!(unknown, vec!["VODSOURCE_LISTN".to_owned()]);
    }

    #[test]
    fn secrets_never_print() {
        let flags = Cli::try_parse_from(["vodsource", "--jwt-secret", "hunter2-hunter2-hunter2-hunter2-xx"])
            .expect("flags")
            .options;
        let config = Config::resolve(flags);
        let printed = config.to_toml().expect("toml");
        assert!(printed.contains("jwt_secret = \"<redacted>\""), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(
            config.options().jwt_secret.as_ref().map(Secret::expose),
            Some("hunter2-hunter2-hunter2-hunter2-xx")
        );
    }

    #[test]
    fn switches_take_a_value_or_none() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.options.no_projectors);
        assert_eq!(parse(&["vodsource", "--no-projectors"]).ok(), Some(Some(true)));
        assert_eq!(parse(&["vodsource", "--no-projectors=false"]).ok(), Some(Some(false)));
        assert_eq!(parse(&["vodsource"]).ok(), Some(None));
    }
}
