//! Numbered SQL migrations from `migrations/`, applied in order under a PostgreSQL advisory
//! lock, so that two agents starting at once do not race; each in its own transaction.

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
];

/// Key of the advisory lock that serialises migrations (any constant shared by all agents).
const MIGRATION_LOCK: i64 = 0x0F11_E5E7_AD07_0001;

/// Apply every migration not yet applied. Returns the versions applied now. A current schema
/// is left alone without any DDL, so a run-time role without CREATE rights can start.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    if current_version(client).await? == Some(latest_version()) {
        return Ok(Vec::new());
    }
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply_missing(client).await;
    // Unlock even after a failure; the session's end would release it as well.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
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
