//! PostgreSQL access: the catalog of files and contents, the upload queue, the audit trail.
//!
//! Each user of the catalog (a root's registrar, the uploader, a command) holds its own
//! `Catalog`, i.e. its own connection; writes that belong together go in one transaction.

mod bounded;
pub mod export;
pub mod history;
pub mod metadata;
pub mod migrate;
pub mod page;
mod queue;
mod register;
pub mod retention;
mod status;
pub mod tls;
mod verify;

pub use history::{HistoryEntry, MomentCheck};
pub use queue::{QueueItem, SourceFile};
pub use register::{BatchOutcome, BatchWritten, Deletion, Move, Registration};
pub use status::{ProcessStatus, QueueCounts, ScanRecord, StatusReport, StoreCheck};
pub use tls::Target;
pub use verify::{StoredContent, VERIFY_PAGE};

use crate::pathenc::PathEncoding;
use std::ffi::OsString;
use tokio_postgres::NoTls;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error("PostgreSQL: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("catalog schema is at version {found}, this binary needs {needed}: run `filemetasync migrate`")]
    Schema { found: i32, needed: i32 },
    /// The catalog writer (the daemon's registrar) could not take the write.
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    /// `migrate` found tables of ours in the target schema that are not ours; it changed
    /// nothing.
    #[error("{0}")]
    Clash(String),
    /// A statement got no answer within `database.statement_timeout` (or the connection
    /// none within `database.connect_timeout`); the connection is given up.
    #[error("PostgreSQL did not answer within {} s (database timeouts): check the network to the database", .0.as_secs())]
    Timeout(std::time::Duration),
}

impl CatalogError {
    /// A deadlock or serialization failure: the transaction can simply run again.
    pub fn is_transient(&self) -> bool {
        let CatalogError::Query(error) = self else {
            return false;
        };
        matches!(error.code().map(|code| code.code()), Some("40P01") | Some("40001"))
    }

    /// The full chain of a PostgreSQL error (its `Display` alone is often just "db error").
    pub fn detail(&self) -> String {
        match self {
            CatalogError::Query(error) => match error.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => error.to_string(),
            },
            other => other.to_string(),
        }
    }
}

/// One connection to the catalog.
pub struct Catalog {
    client: bounded::BoundedClient,
    /// Written into `files.agent`, `file_events.agent` and lease owners.
    agent: String,
    /// Lease owner in the upload queue: unique per process, so that two uploaders of one
    /// agent never mistake each other's leases for their own.
    worker: String,
    /// Key of the session advisory lock that marks this connection's leases as alive.
    lock_key: i64,
    lock_taken: std::sync::atomic::AtomicBool,
    /// `database.schema`, created by `migrate` when it does not exist.
    schema: Option<String>,
}

/// `name` as a PostgreSQL identifier, quoted.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Catalog {
    /// Connect to the catalog, over TLS when the target asks for it (see [`tls`]). Fails
    /// with a message that never contains the password.
    pub async fn connect(target: &Target, agent: &str) -> Result<Catalog, CatalogError> {
        // A server (or a proxy before it) that takes the connection and never answers the
        // start-up is as unreachable as one that refuses it.
        bounded::bounded(target.connect_timeout, Catalog::connect_unbounded(target, agent)).await
    }

    async fn connect_unbounded(target: &Target, agent: &str) -> Result<Catalog, CatalogError> {
        let plan = tls::plan(target).map_err(|problem| CatalogError::Connect(format!("database.url {problem}")))?;
        let failed = |error: tokio_postgres::Error| {
            let text = redact_error(&error, &plan.config);
            let hint = tls::hint(&text, plan.tls.as_ref());
            CatalogError::Connect(format!("{text}{hint}"))
        };
        // The connection ends when the client is dropped or the server goes away; every
        // query on the client then fails and its owner reconnects.
        // A statement given up at its deadline is also cancelled on the server (over a new
        // connection, as PostgreSQL's cancel request works), so that it does not run on there.
        let (client, cancel): (_, bounded::Cancel) = match &plan.tls {
            None => {
                let (client, connection) = plan.config.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                let token = client.cancel_token();
                let cancel: bounded::Cancel = std::sync::Arc::new(move || {
                    let token = token.clone();
                    Box::pin(async move {
                        let _ = token.cancel_query(NoTls).await;
                    })
                });
                (client, cancel)
            }
            Some(roots) => {
                let connector = tls::connector(roots).map_err(CatalogError::Connect)?;
                let (client, connection) = plan.config.connect(connector.clone()).await.map_err(failed)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                let token = client.cancel_token();
                let cancel: bounded::Cancel = std::sync::Arc::new(move || {
                    let (token, connector) = (token.clone(), connector.clone());
                    Box::pin(async move {
                        let _ = token.cancel_query(connector).await;
                    })
                });
                (client, cancel)
            }
        };
        let client = bounded::BoundedClient::new(client, target.statement_timeout, cancel, target.connect_timeout);
        // No JIT: our statements are short, but in a catalog of millions of rows their cost
        // estimates pass PostgreSQL's JIT threshold, and compiling took 0.1-0.5 s of every
        // lease and registration batch that then ran in about a millisecond (the queue gave
        // out 205 contents a second at 1,000,000 rows instead of 10,000).
        let mut session = String::from("SET jit = off;");
        if let Some(schema) = &target.schema {
            // Every statement of ours names its tables unqualified; the search path says
            // where they are. Set once per session (the transaction pooler is refused).
            session.push_str(&format!("SET search_path TO {};", quote_identifier(schema)));
        }
        client.batch_execute(&session).await?;
        let worker = format!("{agent}:{}:{:08x}", std::process::id(), rand::random::<u32>());
        Ok(Catalog {
            schema: target.schema.clone(),
            client,
            agent: agent.to_owned(),
            worker,
            lock_key: rand::random::<i64>(),
            lock_taken: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Connect and check that the schema is current.
    pub async fn open(target: &Target, agent: &str) -> Result<Catalog, CatalogError> {
        let catalog = Catalog::connect(target, agent).await?;
        let found = catalog.schema_version().await?;
        let needed = migrate::latest_version();
        if found != needed {
            return Err(CatalogError::Schema { found, needed });
        }
        Ok(catalog)
    }

    /// A round trip: fails once the connection is lost.
    pub async fn ping(&self) -> Result<(), CatalogError> {
        self.client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// The lease owner name of this connection (unique per process and connection).
    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub async fn migrate(&mut self) -> Result<Vec<i32>, CatalogError> {
        migrate::migrate(self.client.inner_mut(), self.schema.as_deref()).await
    }

    pub async fn schema_version(&self) -> Result<i32, CatalogError> {
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let row = self
            .client
            .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
            .await?;
        Ok(row.get(0))
    }

    /// Every row of `root`, deleted ones too (a file that comes back is restored, not added).
    /// Read as a stream, so that a root of a million rows is never held twice.
    pub async fn load_root(&self, root: &str) -> Result<Vec<CatalogFile>, CatalogError> {
        let mut files = Vec::new();
        self.client
            .for_each_row(
                "SELECT id, path, path_encoding, size, mtime_ns, inode, device, sha256, deleted_at IS NOT NULL
                   FROM files WHERE root = $1",
                &[&root],
                |row| files.extend(catalog_file(row)),
            )
            .await?;
        Ok(files)
    }

    /// The rows of `root` at these (encoded) paths, deleted ones too.
    pub async fn load_paths(&self, root: &str, paths: &[String]) -> Result<Vec<CatalogFile>, CatalogError> {
        let rows = self
            .client
            .query(
                "SELECT id, path, path_encoding, size, mtime_ns, inode, device, sha256, deleted_at IS NOT NULL
                   FROM files WHERE root = $1 AND path = ANY($2)",
                &[&root, &paths],
            )
            .await?;
        Ok(rows.iter().filter_map(catalog_file).collect())
    }
}

/// A row of the queries above; `None` for a percent-encoded path that does not decode.
fn catalog_file(row: &tokio_postgres::Row) -> Option<CatalogFile> {
    let path: String = row.get(1);
    let encoding = PathEncoding::parse(row.get(2)).unwrap_or(PathEncoding::Utf8);
    if encoding != PathEncoding::Utf8 && crate::pathenc::decode(&path, encoding).is_err() {
        return None;
    }
    Some(CatalogFile {
        id: row.get(0),
        path,
        encoding,
        size: row.get::<_, i64>(3) as u64,
        mtime_ns: row.get::<_, i64>(4) as i128,
        inode: row.get::<_, i64>(5) as u64,
        device: row.get::<_, i64>(6) as u64,
        sha256: row.get(7),
        deleted: row.get(8),
    })
}

/// A `files` row as the scan compares it with the disk.
#[derive(Clone, Debug)]
pub struct CatalogFile {
    pub id: i64,
    /// As stored (encoded text).
    pub path: String,
    pub encoding: PathEncoding,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    pub device: u64,
    pub sha256: String,
    pub deleted: bool,
}

impl CatalogFile {
    /// The path's bytes, relative to the root (rows whose path does not decode are never
    /// loaded).
    pub fn relative(&self) -> OsString {
        crate::pathenc::decode(&self.path, self.encoding).unwrap_or_default()
    }
}

/// Format a connection error without the URL's password. The server's own message is kept
/// ("too many clients", "database does not exist"): `Display` alone says only "db error".
fn redact_error(error: &tokio_postgres::Error, config: &tokio_postgres::Config) -> String {
    let text = match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            // The cause (a TLS handshake's "invalid peer certificate: UnknownIssuer", an
            // I/O error) is the error's source, not part of its text.
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text.push_str(&format!(": {cause_text}"));
                }
                source = cause.source();
            }
            text
        }
    };
    match config.get_password().map(String::from_utf8_lossy) {
        Some(password) if !password.is_empty() => text.replace(password.as_ref(), "***"),
        _ => text,
    }
}
