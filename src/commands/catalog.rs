//! `filemetasync catalog export|import|list`: the catalog kept in the bucket beside the
//! contents, and rebuilt from it after the database is lost (see `fms_actors::backup`).

use crate::app;
use crate::config::Config;
use fms_actors::backup;
use fms_actors::catalog::Catalog;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum CatalogAction {
    /// Write the whole catalog, compressed, into the store under _filemetasync/catalog/, and
    /// keep the newest --keep exports.
    Export {
        #[arg(long, default_value_t = 14)]
        keep: usize,
        #[arg(long)]
        json: bool,
    },
    /// The exports in the store.
    List,
    /// Rebuild a new, empty catalog database from the newest export (or --from KEY) and a
    /// listing of the store; contents missing from the store are queued for upload.
    Import {
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, action: &CatalogAction) -> anyhow::Result<ExitCode> {
    let store = app::object_store(config);
    match action {
        CatalogAction::Export { keep, json } => {
            let mut catalog = app::open_catalog(config).await?;
            let report = backup::export(&mut catalog, &store, &config.agent, *keep)
                .await
                .map_err(anyhow::Error::msg)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let rows: u64 = report.tables.0.iter().map(|(_, rows)| rows).sum();
                println!(
                    "exported {rows} rows ({}) to {}",
                    bytesize::ByteSize(report.bytes),
                    report.key
                );
                for old in &report.pruned {
                    println!("pruned {old}");
                }
            }
        }
        CatalogAction::List => {
            for (key, size) in backup::list(&store).await.map_err(anyhow::Error::msg)? {
                println!("{key}  {}", bytesize::ByteSize(size));
            }
        }
        CatalogAction::Import { from, json } => {
            // A new database gets the schema first; `import` refuses one with files in it.
            let mut catalog: Catalog = app::open_catalog_migrated(config).await?;
            let report = match backup::import(&mut catalog, &store, from.as_deref()).await {
                Ok(report) => report,
                Err(message) => anyhow::bail!("catalog import: {message}"),
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for (table, rows) in &report.outcome.tables.0 {
                    println!("{table:<14} {rows:>10} rows");
                }
                println!(
                    "imported {}; {} contents the store lacks and {} never uploaded are queued ({} queued in all); {} found in the store",
                    report.key,
                    report.outcome.missing_objects,
                    report.outcome.queued.saturating_sub(report.outcome.missing_objects),
                    report.outcome.queued,
                    report.outcome.found_objects
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
