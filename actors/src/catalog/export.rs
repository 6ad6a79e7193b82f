//! The catalog as one stream, and back: what `catalog export` writes into the bucket and
//! `catalog import` rebuilds an empty database from, so that the catalog is not the single
//! point of failure of the store (without it, `files/` is a pile of anonymous hashes).
//!
//! The format is line based and versioned: a header, then each table as
//! `table NAME COL,COL,…`, its rows in PostgreSQL's COPY text format, and a `\.` line (a row
//! cannot be `\.`: COPY writes a backslash as `\\`), then `end`. One consistent snapshot
//! (a read-only repeatable-read transaction) is written. The upload queue, the daemons'
//! heartbeats and the running totals are not exported: the import derives them.

use super::{Catalog, CatalogError};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::io::{BufRead, Write};

const MAGIC: &str = "filemetasync catalog export 1";

/// In the order an import needs them (referenced tables first).
pub const EXPORT_TABLES: &[&str] = &[
    "cost_groups",
    "projects",
    "buildings",
    "link_rules",
    "file_contents",
    "content_metadata",
    "files",
    "file_links",
    "file_events",
    "scans",
];

/// Tables whose `id` comes from a sequence, set past the imported rows.
const SERIAL_TABLES: &[&str] = &["projects", "buildings", "link_rules", "files", "file_events", "scans"];

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The export cannot go into this catalog, or is not an export.
    #[error("{0}")]
    Refused(String),
}

/// `future` within the statement timeout (`database.statement_timeout`): each step of an
/// export or import, so that a database that stops answering fails it instead of holding it
/// (and, in the daemon, the exporter) for ever.
async fn within<T, E: Into<CatalogError>>(
    timeout: std::time::Duration,
    future: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, CatalogError> {
    super::bounded::bounded(timeout, async { future.await.map_err(Into::into) }).await
}

impl From<tokio_postgres::Error> for ExportError {
    fn from(error: tokio_postgres::Error) -> ExportError {
        ExportError::Catalog(CatalogError::Query(error))
    }
}

/// Rows per table, in export order.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TableCounts(pub Vec<(String, u64)>);

/// What an import did besides copying rows.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ImportOutcome {
    pub schema: i32,
    pub tables: TableCounts,
    /// Contents the export said were uploaded whose object the store does not have: queued.
    pub missing_objects: u64,
    /// Contents whose object the store has though the export had not seen it uploaded.
    pub found_objects: u64,
    /// Contents queued for upload (never uploaded, or missing from the store).
    pub queued: u64,
}

impl Catalog {
    /// Write the whole catalog to `out` (see the module documentation).
    pub async fn export(&mut self, out: &mut impl Write) -> Result<TableCounts, ExportError> {
        let version = self.schema_version().await?;
        writeln!(out, "{MAGIC}")?;
        writeln!(out, "schema {version}")?;
        let timeout = self.client.timeout();
        let transaction = within(
            timeout,
            self.client
                .inner_mut()
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start(),
        )
        .await?;
        let mut counts = Vec::new();
        for table in EXPORT_TABLES {
            let columns: Vec<String> = within(
                timeout,
                transaction.query(
                    "SELECT column_name::text FROM information_schema.columns
                      WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                    &[table],
                ),
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
            let list = columns.join(",");
            writeln!(out, "table {table} {list}")?;
            let stream = within(
                timeout,
                transaction.copy_out(&format!("COPY (SELECT {list} FROM {table} ORDER BY 1) TO STDOUT")),
            )
            .await?;
            futures::pin_mut!(stream);
            let mut rows = 0u64;
            while let Some(chunk) = within(timeout, async { stream.next().await.transpose() }).await? {
                rows += chunk.iter().filter(|byte| **byte == b'\n').count() as u64;
                out.write_all(&chunk)?;
            }
            writeln!(out, "\\.")?;
            counts.push((table.to_string(), rows));
        }
        writeln!(out, "end")?;
        within(timeout, transaction.commit()).await?;
        Ok(TableCounts(counts))
    }

    /// Rebuild this catalog, which must hold no files and no events, from an export; then
    /// match it with the store: `stored` holds the SHA-256 of every object under `files/`.
    /// One transaction: a failed import leaves the catalog as it was.
    pub async fn import(
        &mut self,
        input: &mut impl BufRead,
        stored: &HashSet<String>,
    ) -> Result<ImportOutcome, ExportError> {
        let version = self.schema_version().await?;
        let mut line = Vec::new();
        let next_line = |input: &mut dyn BufRead, line: &mut Vec<u8>| -> Result<String, ExportError> {
            line.clear();
            input.read_until(b'\n', line)?;
            Ok(String::from_utf8_lossy(line).trim_end_matches('\n').to_owned())
        };
        if next_line(input, &mut line)? != MAGIC {
            return Err(ExportError::Refused(
                "this is not a FileMetadataSync catalog export".into(),
            ));
        }
        let schema_line = next_line(input, &mut line)?;
        let schema: i32 = schema_line
            .strip_prefix("schema ")
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| ExportError::Refused(format!("malformed export header {schema_line:?}")))?;
        if schema != version {
            return Err(ExportError::Refused(format!(
                "the export is of catalog schema {schema} and this binary's is {version}: import it with the FileMetadataSync version that wrote it, then upgrade"
            )));
        }
        let timeout = self.client.timeout();
        let transaction = within(timeout, self.client.inner_mut().transaction()).await?;
        let used: i64 = within(
            timeout,
            transaction.query_one(
                "SELECT (SELECT count(*) FROM files) + (SELECT count(*) FROM file_events)",
                &[],
            ),
        )
        .await?
        .get(0);
        if used > 0 {
            return Err(ExportError::Refused(
                "the catalog is not empty (it has files or events): import only into a new, migrated database".into(),
            ));
        }
        // The export's links are copied as they were, so the rules are not run on import;
        // the seeded rules and cost groups make way for the exported ones.
        within(
            timeout,
            transaction.batch_execute(
                "ALTER TABLE files DISABLE TRIGGER files_link_on_insert;
                 ALTER TABLE files DISABLE TRIGGER files_link_on_move;
                 DELETE FROM file_links; DELETE FROM link_rules; DELETE FROM buildings;
                 DELETE FROM projects; DELETE FROM cost_groups;",
            ),
        )
        .await?;
        let mut counts = Vec::new();
        loop {
            let header = next_line(input, &mut line)?;
            if header == "end" {
                break;
            }
            let mut parts = header.splitn(3, ' ');
            let (Some("table"), Some(table), Some(columns)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ExportError::Refused(format!(
                    "malformed export: expected a table, found {header:?}"
                )));
            };
            let known = EXPORT_TABLES.contains(&table);
            let plain = columns.split(',').all(|name| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
            if !known || !plain {
                return Err(ExportError::Refused(format!("malformed export: table line {header:?}")));
            }
            let sink = within(
                timeout,
                transaction.copy_in(&format!("COPY {table} ({columns}) FROM STDIN")),
            )
            .await?;
            futures::pin_mut!(sink);
            let mut rows = 0u64;
            let mut batch = Vec::with_capacity(1 << 20);
            loop {
                line.clear();
                if input.read_until(b'\n', &mut line)? == 0 {
                    return Err(ExportError::Refused(format!(
                        "the export ends inside table {table}: it is cut short"
                    )));
                }
                if line == b"\\.\n" {
                    break;
                }
                batch.extend_from_slice(&line);
                rows += 1;
                if batch.len() >= 1 << 20 {
                    within(timeout, sink.send(Bytes::from(std::mem::take(&mut batch)))).await?;
                }
            }
            if !batch.is_empty() {
                within(timeout, sink.send(Bytes::from(batch))).await?;
            }
            within(timeout, sink.finish()).await?;
            counts.push((table.to_owned(), rows));
        }
        within(
            timeout,
            transaction.batch_execute(
                "ALTER TABLE files ENABLE TRIGGER files_link_on_insert;
                 ALTER TABLE files ENABLE TRIGGER files_link_on_move;",
            ),
        )
        .await?;
        for table in SERIAL_TABLES {
            let statement = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 1), max(id) IS NOT NULL) FROM {table}"
            );
            within(timeout, transaction.execute(&statement, &[])).await?;
        }
        let stored: Vec<&str> = stored.iter().map(String::as_str).collect();
        let missing = within(
            timeout,
            transaction.execute(
                "UPDATE file_contents SET uploaded_at = NULL WHERE uploaded_at IS NOT NULL AND sha256 <> ALL ($1)",
                &[&stored],
            ),
        )
        .await?;
        let found = within(
            timeout,
            transaction.execute(
                "UPDATE file_contents SET uploaded_at = now() WHERE uploaded_at IS NULL AND sha256 = ANY ($1)",
                &[&stored],
            ),
        )
        .await?;
        let queued = within(
            timeout,
            transaction.execute(
                "INSERT INTO upload_queue (sha256)
                 SELECT sha256 FROM file_contents WHERE uploaded_at IS NULL ORDER BY sha256
                 ON CONFLICT (sha256) DO NOTHING",
                &[],
            ),
        )
        .await?;
        within(timeout, transaction.commit()).await?;
        Ok(ImportOutcome {
            schema,
            tables: TableCounts(counts),
            missing_objects: missing,
            found_objects: found,
            queued,
        })
    }
}
