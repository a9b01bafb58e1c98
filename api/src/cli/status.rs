use std::io::Write;

use anyhow::Context;
use vodsource_projections::{DeadLetterView, ProjectionStatus, PROJECTIONS};

use crate::config::Config;
use crate::roles::Stores;

pub async fn projections(config: &Config) -> anyhow::Result<()> {
    let stores = Stores::open(config).await?;
    let head = stores.log.head().await.context("reading the log head")?;
    println!(
        "{:<14} {:>10} {:>10} {:>4}  state",
        "projection", "position", "lag", "gen"
    );
    for name in PROJECTIONS {
        let state = stores
            .views
            .projection(name)
            .await
            .context("reading projection state")?;
        let status = match state.status {
            ProjectionStatus::Running => "ok".to_owned(),
            ProjectionStatus::Failed { position, error } => format!("stopped at {position}: {error}"),
        };
        println!(
            "{:<14} {:>10} {:>10} {:>4}  {status}",
            name,
            state.position,
            head.saturating_sub(state.position),
            state.generation
        );
    }
    println!("log head: {head}");
    Ok(())
}

pub async fn dead_letters(config: &Config) -> anyhow::Result<()> {
    let stores = Stores::open(config).await?;
    let mut after: Option<String> = None;
    let mut count = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let page = stores
            .views
            .scan("dead_letters", after.as_deref(), 500)
            .await
            .context("reading dead letters")?;
        for doc in &page {
            let letter: DeadLetterView = serde_json::from_str(&doc.body).context("reading a dead letter")?;
            let line = writeln!(
                out,
                "{}  attempt {}  {}  {}",
                letter.video_id, letter.attempt, letter.failed_at, letter.reason
            );
            if line.is_err() {
                return Ok(()); // the reader went away (a closed pipe)
            }
            count += 1;
        }
        if page.len() < 500 {
            break;
        }
        after = page.last().map(|d| d.key.clone());
    }
    eprintln!("{count} dead letter(s)");
    Ok(())
}

pub async fn webhooks(config: &Config) -> anyhow::Result<()> {
    use vodsource_app::webhooks::dispatch::resume_position;
    let stores = Stores::open(config).await?;
    let registry = vodsource_app::webhooks::RegistryStore::new(stores.log.clone())
        .current()
        .await
        .context("reading the webhook registry")?;
    let head = stores.log.head().await.context("reading the log head")?;
    let mut rows = Vec::new();
    for endpoint in registry.endpoints.values() {
        let position = resume_position(&*stores.views, endpoint)
            .await
            .context("reading a webhook checkpoint")?;
        rows.push((endpoint.clone(), position));
    }
    for line in vodsource_app::webhooks::operators_table(&rows, head) {
        println!("{line}");
    }
    Ok(())
}
