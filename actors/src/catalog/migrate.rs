//! Numbered SQL migrations from `migrations/`, applied in order under a PostgreSQL advisory
//! lock, so that two agents starting at once do not race; each in its own transaction.
//!
//! A database that already has tables of its own is left alone: before the first migration,
//! tables with our names in the target schema (a Supabase project's `public` holds `files`
//! and `file_contents` of the system we replace) stop `migrate` with the clash named, and
//! nothing is changed. `database.schema` puts the catalog in a schema of its own.

use super::{quote_identifier, CatalogError};
use tokio_postgres::Client;

/// (version, name, SQL), in order. The files are compiled in: the binary carries its schema.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "catalog", include_str!("../../../migrations/0001_catalog.sql")),
    (2, "linking", include_str!("../../../migrations/0002_linking.sql")),
    (3, "processes", include_str!("../../../migrations/0003_processes.sql")),
    (
        4,
        "runtime_role",
        include_str!("../../../migrations/0004_runtime_role.sql"),
    ),
    (
        5,
        "store_checks",
        include_str!("../../../migrations/0005_store_checks.sql"),
    ),
    (6, "counters", include_str!("../../../migrations/0006_counters.sql")),
    (
        7,
        "event_versions",
        include_str!("../../../migrations/0007_event_versions.sql"),
    ),
    (8, "retention", include_str!("../../../migrations/0008_retention.sql")),
    (
        9,
        "store_knowledge",
        include_str!("../../../migrations/0009_store_knowledge.sql"),
    ),
    (
        10,
        "content_metadata",
        include_str!("../../../migrations/0010_content_metadata.sql"),
    ),
    (
        11,
        "root_counts",
        include_str!("../../../migrations/0011_root_counts.sql"),
    ),
    (
        12,
        "link_rules_without_jit",
        include_str!("../../../migrations/0012_link_rules_without_jit.sql"),
    ),
    (
        13,
        "cheaper_leases",
        include_str!("../../../migrations/0013_cheaper_leases.sql"),
    ),
    (
        14,
        "link_triggers_skip_empty",
        include_str!("../../../migrations/0014_link_triggers_skip_empty.sql"),
    ),
    (
        15,
        "leases_planned_with_their_values",
        include_str!("../../../migrations/0015_leases_planned_with_their_values.sql"),
    ),
    (
        16,
        "relink_only_what_changed",
        include_str!("../../../migrations/0016_relink_only_what_changed.sql"),
    ),
];

/// Key of the advisory lock that serialises migrations (any constant shared by all agents).
const MIGRATION_LOCK: i64 = 0x0F11_E5E7_AD07_0001;

/// Every table the migrations create, for the clash check.
const OUR_TABLES: &[&str] = &[
    "schema_migrations",
    "files",
    "file_contents",
    "upload_queue",
    "file_events",
    "scans",
    "agent_processes",
    "projects",
    "buildings",
    "cost_groups",
    "link_rules",
    "file_links",
    "store_checks",
    "catalog_counts",
    "content_metadata",
    "root_counts",
];

/// Apply every migration not yet applied, in `schema` (created if missing) or the
/// connection's default one. Returns the versions applied now. A current schema is left alone
/// without any DDL, so a run-time role without CREATE rights can start.
pub async fn migrate(client: &mut Client, schema: Option<&str>) -> Result<Vec<i32>, CatalogError> {
    if current_version(client).await? == Some(latest_version()) {
        return Ok(Vec::new());
    }
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = prepare_schema(client, schema).await;
    let result = match result {
        Ok(()) => apply_missing(client).await.map_err(CatalogError::from),
        Err(error) => Err(error),
    };
    // Unlock even after a failure; the session's end would release it as well.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

/// Create `schema` if it is missing; before the first migration, refuse a schema that
/// already holds tables with our names.
async fn prepare_schema(client: &Client, schema: Option<&str>) -> Result<(), CatalogError> {
    if let Some(schema) = schema {
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_identifier(schema)))
            .await?;
    }
    if current_version(client).await?.is_some() {
        return Ok(());
    }
    let row = client
        .query_one(
            "SELECT current_schema(),
                    coalesce(array_agg(c.relname::text ORDER BY c.relname)
                             FILTER (WHERE c.relname IS NOT NULL), '{}')
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relname = ANY($1)
                AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
            &[&OUR_TABLES],
        )
        .await?;
    let in_schema: Option<String> = row.get(0);
    let clashing: Vec<String> = row.get(1);
    if clashing.is_empty() {
        return Ok(());
    }
    let in_schema = in_schema.unwrap_or_else(|| "public".into());
    Err(CatalogError::Clash(format!(
        "schema {in_schema:?} already has tables named {} that FileMetadataSync did not create; nothing was changed: \
         set database.schema (e.g. \"filemetasync\") to keep the catalog in a schema of its own",
        clashing.join(", ")
    )))
}

async fn apply_missing(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let rows = client.query("SELECT version FROM schema_migrations", &[]).await?;
    let done: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        let transaction = client.transaction().await?;
        transaction.batch_execute(sql).await?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
        transaction.commit().await?;
        applied.push(*version);
    }
    Ok(applied)
}

/// The applied version, or None before the first migration.
async fn current_version(client: &Client) -> Result<Option<i32>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
        .await?;
    Ok(Some(row.get(0)))
}

/// The newest schema version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|(version, _, _)| *version).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    /// Every file in migrations/ is compiled in, in order, with its number as its version.
    #[test]
    fn every_migration_file_is_listed() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut files: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), super::MIGRATIONS.len(), "{files:?}");
        for (file, (version, name, _)) in files.iter().zip(super::MIGRATIONS) {
            assert_eq!(file, &format!("{version:04}_{name}.sql"));
        }
    }
}
