//! The catalog kept beside the contents: `catalog export` writes the whole catalog,
//! gzip-compressed, as one object under `_filemetasync/catalog/` in the same bucket and prunes
//! old exports by count; `catalog import` rebuilds a new, empty database from the newest (or a
//! named) export and a listing of `files/`, so that `restore` works again after the database
//! is lost.

use crate::catalog::export::{ExportError, ImportOutcome, TableCounts};
use crate::catalog::Catalog;
use crate::store::{ObjectStore, CATALOG_EXPORT_PREFIX};
use std::collections::HashSet;
use std::io::{BufReader, BufWriter, Write};

#[derive(Debug, serde::Serialize)]
pub struct ExportReport {
    pub key: String,
    pub bytes: u64,
    pub tables: TableCounts,
    /// Older exports deleted to keep the configured number.
    pub pruned: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct ImportReport {
    pub key: String,
    #[serde(flatten)]
    pub outcome: ImportOutcome,
}

/// The key of an export written now by `agent`: sorts by time.
fn export_key(agent: &str) -> String {
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let agent: String = agent
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    format!("{CATALOG_EXPORT_PREFIX}{now}-{agent}.fmscatalog.gz")
}

/// Export the catalog into the store, then keep only the newest `keep` exports.
pub async fn export(
    catalog: &mut Catalog,
    store: &ObjectStore,
    agent: &str,
    keep: usize,
) -> Result<ExportReport, String> {
    let file = tempfile::NamedTempFile::new().map_err(|error| format!("cannot create a temporary file: {error}"))?;
    let mut encoder = flate2::write::GzEncoder::new(BufWriter::new(file.as_file()), flate2::Compression::fast());
    let tables = catalog.export(&mut encoder).await.map_err(|error| describe(&error))?;
    encoder
        .finish()
        .and_then(|mut writer| writer.flush())
        .map_err(|error| format!("cannot write the export: {error}"))?;
    let bytes = file.as_file().metadata().map(|m| m.len()).unwrap_or(0);
    let key = export_key(agent);
    store
        .put_export(&key, file.path())
        .await
        .map_err(|error| format!("cannot store the export: {error}"))?;
    let mut exports: Vec<String> = store
        .list_exports()
        .await
        .map_err(|error| format!("cannot list the exports: {error}"))?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    exports.sort();
    let mut pruned = Vec::new();
    let excess = exports.len().saturating_sub(keep.max(1));
    for old in exports.into_iter().take(excess) {
        if old != key && store.delete(&old).await.is_ok() {
            pruned.push(old);
        }
    }
    Ok(ExportReport {
        key,
        bytes,
        tables,
        pruned,
    })
}

/// The exports in the store, oldest first.
pub async fn list(store: &ObjectStore) -> Result<Vec<(String, u64)>, String> {
    let mut exports = store
        .list_exports()
        .await
        .map_err(|error| format!("cannot list the exports: {error}"))?;
    exports.sort();
    Ok(exports)
}

/// Rebuild an empty catalog from the export `key` (default: the newest).
pub async fn import(catalog: &mut Catalog, store: &ObjectStore, key: Option<&str>) -> Result<ImportReport, String> {
    let exports = list(store).await?;
    let key = match key {
        Some(key) => {
            let key = if key.starts_with(CATALOG_EXPORT_PREFIX) {
                key.to_owned()
            } else {
                format!("{CATALOG_EXPORT_PREFIX}{key}")
            };
            if !exports.iter().any(|(found, _)| *found == key) {
                return Err(format!(
                    "no export {key} in the store ({} exports there)",
                    exports.len()
                ));
            }
            key
        }
        None => match exports.last() {
            Some((key, _)) => key.clone(),
            None => {
                return Err(format!(
                    "no catalog export in the store (nothing under {CATALOG_EXPORT_PREFIX})"
                ))
            }
        },
    };
    let file = tempfile::NamedTempFile::new().map_err(|error| format!("cannot create a temporary file: {error}"))?;
    match store.download(&key, file.path()).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(format!("the export {key} is gone from the store")),
        Err(error) => return Err(format!("cannot download {key}: {error}")),
    }
    let stored: HashSet<String> = store
        .list_keys()
        .await
        .map_err(|error| format!("cannot list the store's contents: {error}"))?
        .into_iter()
        .filter_map(|(key, _)| {
            key.strip_prefix("files/")
                .and_then(|rest| rest.get(..64))
                .map(str::to_owned)
        })
        .collect();
    let reader = std::fs::File::open(file.path()).map_err(|error| format!("cannot read the export: {error}"))?;
    let mut input = BufReader::with_capacity(1 << 20, flate2::read::GzDecoder::new(reader));
    let outcome = catalog
        .import(&mut input, &stored)
        .await
        .map_err(|error| describe(&error))?;
    Ok(ImportReport { key, outcome })
}

fn describe(error: &ExportError) -> String {
    match error {
        ExportError::Catalog(error) => error.detail(),
        other => other.to_string(),
    }
}
