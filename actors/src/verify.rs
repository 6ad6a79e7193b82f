//! `filemetasync verify [--deep] [--repair]`: does the store hold every content the catalog
//! says is uploaded? One listing of the store answers "missing" and "wrong size" for all of
//! them; `--deep` reads every object back and hashes it. `--repair` deletes wrong objects and
//! queues their contents for upload again (the daemon or `scan --wait` stores them).

use crate::catalog::{Catalog, CatalogError, StoredContent};
use crate::store::ObjectStore;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    Missing,
    WrongSize {
        expected: u64,
        found: u64,
    },
    /// Read back, the bytes do not hash to the content's SHA-256.
    WrongContent {
        found_sha256: String,
    },
    /// The object could not be read (`--deep`).
    Unreadable {
        error: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub sha256: String,
    pub key: String,
    pub problem: Problem,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Contents the catalog says are uploaded.
    pub checked: u64,
    pub ok: u64,
    pub bytes_read: u64,
    pub findings: Vec<Finding>,
    /// Objects under files/ that no catalog content names (left alone).
    pub unknown_objects: u64,
    pub requeued: u64,
    pub deleted_objects: u64,
}

/// Live counters for a progress line.
#[derive(Debug, Default)]
pub struct VerifyProgress {
    pub checked: AtomicU64,
    pub bytes_read: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("object store: {0}")]
    Store(String),
}

/// Objects read back at once with `--deep`.
const DEEP_CONCURRENCY: usize = 8;

pub async fn verify(
    catalog: &mut Catalog,
    store: &ObjectStore,
    deep: bool,
    repair: bool,
    progress: &VerifyProgress,
) -> Result<VerifyReport, VerifyError> {
    let mut listed: HashMap<String, u64> = store
        .list_keys()
        .await
        .map_err(|error| VerifyError::Store(error.to_string()))?
        .into_iter()
        .collect();
    let mut report = VerifyReport::default();
    let mut after = String::new();
    loop {
        let page = catalog.uploaded_contents(&after).await?;
        let Some(last) = page.last() else { break };
        after = last.sha256.clone();
        let mut present = Vec::new();
        for content in page {
            report.checked += 1;
            match listed.remove(&content.storage_key) {
                None => report.findings.push(finding(&content, Problem::Missing)),
                Some(found) if found != content.size => report.findings.push(finding(
                    &content,
                    Problem::WrongSize {
                        expected: content.size,
                        found,
                    },
                )),
                Some(_) => present.push(content),
            }
        }
        if deep {
            let results: Vec<(StoredContent, Option<Problem>, u64)> = stream::iter(present)
                .map(|content| async move {
                    let (problem, read) = match store.read_digest(&content.storage_key).await {
                        Ok(Some((sha256, read))) if sha256 == content.sha256 => (None, read),
                        Ok(Some((found_sha256, read))) => (Some(Problem::WrongContent { found_sha256 }), read),
                        Ok(None) => (Some(Problem::Missing), 0),
                        Err(error) => (
                            Some(Problem::Unreadable {
                                error: error.to_string(),
                            }),
                            0,
                        ),
                    };
                    progress.bytes_read.fetch_add(read, Ordering::Relaxed);
                    progress.checked.fetch_add(1, Ordering::Relaxed);
                    (content, problem, read)
                })
                .buffer_unordered(DEEP_CONCURRENCY)
                .collect()
                .await;
            for (content, problem, read) in results {
                report.bytes_read += read;
                match problem {
                    Some(problem) => report.findings.push(finding(&content, problem)),
                    None => report.ok += 1,
                }
            }
        } else {
            report.ok += present.len() as u64;
            progress.checked.store(report.checked, Ordering::Relaxed);
        }
    }
    report.unknown_objects = listed.len() as u64;
    if repair && !report.findings.is_empty() {
        for finding in &report.findings {
            // An object with the wrong bytes must go, or the upload would be skipped as done.
            if matches!(
                finding.problem,
                Problem::WrongSize { .. } | Problem::WrongContent { .. }
            ) {
                store
                    .delete(&finding.key)
                    .await
                    .map_err(|error| VerifyError::Store(error.to_string()))?;
                report.deleted_objects += 1;
            }
        }
        let shas: Vec<String> = report.findings.iter().map(|f| f.sha256.clone()).collect();
        report.requeued = catalog.requeue(&shas, "re-queued by verify --repair").await?;
    }
    Ok(report)
}

fn finding(content: &StoredContent, problem: Problem) -> Finding {
    Finding {
        sha256: content.sha256.clone(),
        key: content.storage_key.clone(),
        problem,
    }
}
