//! The command line: `vodsource <command>`.

mod athena;
mod events;
#[cfg(feature = "lake-sql")]
mod qoe;
mod replay;
mod seed;
pub mod serve;
mod setup;
mod status;
mod token;
mod transcode;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Options};

/// vodsource: an event-sourced backend for video on demand.
#[derive(Debug, Parser)]
#[command(name = "vodsource", version, about)]
pub struct Cli {
    /// Every setting, by flag or `VODSOURCE_*` variable, over the TOML file and the defaults.
    #[command(flatten)]
    options: Options,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (and, by default, run the projections and process managers).
    Serve,
    /// Print the configuration in force (defaults, file, environment, flags) as TOML, secrets
    /// redacted.
    Config,
    /// Print a signed bearer token (HS256, with VODSOURCE_JWT_SECRET) for a subject and role.
    Token(token::Args),
    /// Rebuild projections from position 0 into a shadow copy and swap it in atomically.
    Replay(replay::Args),
    /// Read the global event log.
    #[command(subcommand)]
    Events(events::Events),
    /// Serve the HTTP API alone (projections, encoding, relay and lake sink run elsewhere).
    Api,
    /// Run the projection runners and the encoding supervisor until stopped (Ctrl-C, SIGTERM).
    Projector,
    /// Publish every event of the store to the video-events stream until stopped.
    Relay,
    /// Run encoding workers until stopped (Ctrl-C, SIGTERM).
    Encoder,
    /// Encode one local file into a folder with the ladder (no stores involved).
    Transcode(transcode::Args),
    /// Athena: the DDL of the QoE data lake.
    #[command(subcommand)]
    Athena(athena::Athena),
    /// QoE analytics: SQL over the lake and the standard metrics report.
    #[cfg(feature = "lake-sql")]
    #[command(subcommand)]
    Qoe(qoe::Qoe),
    /// Run the lake sink (QoE and video-events streams into Parquet) until stopped.
    QoeSink,
    /// Create what the configured stores need (schema, tables, bucket, topics); safe to rerun.
    Setup,
    /// Show each projection's position, lag and state.
    Projections,
    /// List videos whose encoding failed for good.
    DeadLetters,
    /// List webhook endpoints with how far each is behind the log.
    Webhooks,
    /// Drive sample videos through their lifecycle with real commands (a worker is simulated).
    Seed(seed::Args),
}

/// Parses arguments, runs the command, and turns its error into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.options) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            return ExitCode::FAILURE;
        }
    };
    init_tracing(config.options().log_json.unwrap_or(false));
    // The release binary carries no symbols; a panic's message still names its file and line,
    // which scripts/build-size.sh checks by asking for one here.
    if std::env::var("VODSOURCE_FAILPOINT").is_ok_and(|v| v == "panic") {
        panic!("VODSOURCE_FAILPOINT=panic");
    }
    let unknown = crate::config::unknown_variables(std::env::vars().map(|(name, _)| name));
    if !unknown.is_empty() {
        tracing::warn!(variables = ?unknown, "these VODSOURCE_* variables name no setting and are ignored; see `vodsource --help`");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, outermost first, joined by `: `; a cause whose words an outer
/// message already quotes (store errors name their cause and keep it as the source) is said
/// once.
fn report(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn run(config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve::run(&config).await,
        Command::Config => {
            print!("{}", config.to_toml()?);
            Ok(())
        }
        Command::Api => serve::run_api(&config).await,
        Command::Relay => serve::run_relay(&config).await,
        Command::Token(args) => token::run(&config, &args),
        Command::Replay(args) => replay::run(&config, args).await,
        Command::Events(events) => events::run(&config, events).await,
        Command::Projector => serve::run_projector(&config).await,
        Command::Encoder => serve::run_encoder(&config).await,
        Command::Athena(command) => athena::run(&command),
        Command::Transcode(args) => tokio::task::spawn_blocking(move || transcode::run(&config, &args)).await?,
        #[cfg(feature = "lake-sql")]
        Command::Qoe(command) => qoe::run(&config, command).await,
        Command::QoeSink => serve::run_qoe_sink(&config).await,
        Command::Setup => setup::run(&config).await,
        Command::Projections => status::projections(&config).await,
        Command::DeadLetters => status::dead_letters(&config).await,
        Command::Webhooks => status::webhooks(&config).await,
        Command::Seed(args) => seed::run(&config, args).await,
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VODSOURCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let store = vodsource_commands::ports::StoreError::unavailable_from("PostgreSQL at db:5432 is unreachable", io);
        let error = anyhow::Error::new(store).context("opening the event store");
        assert_eq!(
            report(&error),
            "opening the event store: store unavailable: PostgreSQL at db:5432 is unreachable: connection refused"
        );
    }
}
