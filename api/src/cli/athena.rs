//! `vodsource athena ddl --location s3://bucket/prefix`: the CREATE EXTERNAL TABLE statements
//! of the lake's tables for Athena.

use anyhow::Context;

/// `vodsource athena` commands.
#[derive(Debug, clap::Subcommand)]
pub enum Athena {
    /// Print CREATE EXTERNAL TABLE statements (Parquet, partition projection) for qoe_events
    /// and video_events.
    Ddl {
        /// The lake's root: `s3://bucket[/prefix]` (tables live under `<root>/lake/<table>/`).
        #[arg(long)]
        location: String,
        /// The first `event_date` partition projection covers (yyyy-mm-dd).
        #[arg(long, default_value = "2024-01-01")]
        from: String,
    },
}

/// Runs an `athena` command.
///
/// # Errors
/// A bad location or date.
pub fn run(command: &Athena) -> anyhow::Result<()> {
    match command {
        Athena::Ddl { location, from } => {
            chrono::NaiveDate::parse_from_str(from, "%Y-%m-%d")
                .with_context(|| format!("--from must be a date like 2024-01-01, got {from:?}"))?;
            print!("{}", vodsource_lake::tables::athena_ddl(location, from)?);
            Ok(())
        }
    }
}
