//! Content metadata in the catalog: one row per content in `content_metadata`, written in the
//! registration that brings the content (and by `metadata backfill` for older contents).
//! A row that PostgreSQL would refuse never costs the registration: the rows are checked
//! before they are sent, and the insert runs under a savepoint, so a refusal drops only the
//! metadata of that batch (logged by the caller as a count).

use crate::metadata::{ContentMetadata, EXTRACTOR_VERSION};

/// Insert the rows not there yet; existing rows are kept (`replace` false) or replaced by
/// these (`replace` true, for a re-read by newer extractors).
fn statement(replace: bool) -> String {
    let on_conflict = if replace {
        "ON CONFLICT (sha256) DO UPDATE SET
            mime_type = excluded.mime_type, captured_at = excluded.captured_at,
            camera_make = excluded.camera_make, camera_model = excluded.camera_model,
            gps_latitude = excluded.gps_latitude, gps_longitude = excluded.gps_longitude,
            width = excluded.width, height = excluded.height, orientation = excluded.orientation,
            page_count = excluded.page_count, title = excluded.title, author = excluded.author,
            last_modified_by = excluded.last_modified_by, created_at = excluded.created_at,
            modified_at = excluded.modified_at, application = excluded.application,
            format_version = excluded.format_version, details = excluded.details,
            unreadable = excluded.unreadable, extractor_version = excluded.extractor_version,
            extracted_at = now()"
    } else {
        "ON CONFLICT (sha256) DO NOTHING"
    };
    format!(
        "INSERT INTO content_metadata (sha256, mime_type, captured_at, camera_make, camera_model,
                gps_latitude, gps_longitude, width, height, orientation, page_count, title, author,
                last_modified_by, created_at, modified_at, application, format_version, details,
                unreadable, extractor_version)
         SELECT DISTINCT ON (sha256) sha256, mime_type, captured_at, camera_make, camera_model,
                gps_latitude, gps_longitude, width, height, orientation, page_count, title, author,
                last_modified_by, created_at, modified_at, application, format_version,
                coalesce(details, '{{}}'), unreadable, $2
           FROM json_to_recordset($1::text::json) AS m(sha256 text, mime_type text, captured_at timestamp,
                camera_make text, camera_model text, gps_latitude float8, gps_longitude float8,
                width int4, height int4, orientation int2, page_count int4, title text, author text,
                last_modified_by text, created_at timestamptz, modified_at timestamptz,
                application text, format_version text, details jsonb, unreadable text)
          WHERE sha256 IN (SELECT sha256 FROM file_contents)
          ORDER BY sha256
         {on_conflict}"
    )
}

/// The rows as one JSON array of records, each checked against the columns' types.
fn records<'a>(rows: impl Iterator<Item = (&'a str, &'a ContentMetadata)>) -> String {
    let records: Vec<serde_json::Value> = rows
        .map(|(sha256, metadata)| {
            let mut value = serde_json::to_value(fit_for_columns(metadata)).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("sha256".into(), sha256.into());
            }
            value
        })
        .collect();
    serde_json::Value::Array(records).to_string()
}

/// What the columns take: times PostgreSQL can hold (years 1 to 9999), integers that fit in
/// `int4`, coordinates in range. Anything else is dropped from its column.
pub(crate) fn fit_for_columns(metadata: &ContentMetadata) -> ContentMetadata {
    let time = |text: &Option<String>| {
        text.clone().filter(|text| {
            let year: Option<i32> = text.get(..4).and_then(|year| year.parse().ok());
            text.len() >= 19 && year.is_some_and(|year| (1..=9999).contains(&year))
        })
    };
    let int = |value: Option<u32>| value.filter(|value| *value <= i32::MAX as u32);
    let within = |value: Option<f64>, limit: f64| value.filter(|value| value.is_finite() && value.abs() <= limit);
    ContentMetadata {
        captured_at: time(&metadata.captured_at),
        created_at: time(&metadata.created_at),
        modified_at: time(&metadata.modified_at),
        width: int(metadata.width),
        height: int(metadata.height),
        page_count: int(metadata.page_count),
        gps_latitude: within(metadata.gps_latitude, 90.0),
        gps_longitude: within(metadata.gps_longitude, 180.0),
        ..metadata.clone()
    }
}

/// Write `rows` in `transaction`, under a savepoint. Returns the rows written, or (inner
/// error) the server's refusal of the rows, after which the transaction goes on without
/// them; the outer error is the transaction's own failure.
pub(crate) async fn write<'a>(
    transaction: &mut tokio_postgres::Transaction<'_>,
    rows: impl Iterator<Item = (&'a str, &'a ContentMetadata)>,
    replace: bool,
) -> Result<Result<u64, tokio_postgres::Error>, tokio_postgres::Error> {
    let json = records(rows);
    let savepoint = transaction.savepoint("content_metadata").await?;
    match savepoint
        .execute(&statement(replace), &[&json, &EXTRACTOR_VERSION])
        .await
    {
        Ok(written) => {
            savepoint.commit().await?;
            Ok(Ok(written))
        }
        Err(error) if error.as_db_error().is_some() => {
            savepoint.rollback().await?;
            Ok(Err(error))
        }
        Err(error) => Err(error),
    }
}

/// A content without metadata (or with metadata from older extractors), and one live file
/// that holds it, for `metadata backfill`.
#[derive(Clone, Debug)]
pub struct Undescribed {
    pub sha256: String,
    pub root: String,
    /// As stored (encoded text) and its encoding.
    pub path: String,
    pub encoding: crate::pathenc::PathEncoding,
}

impl super::Catalog {
    /// Up to `limit` contents after `after` (by SHA-256) that have no metadata row, or
    /// (`reread`) one written by older extractors, each with one live file under `roots`.
    pub async fn undescribed_contents(
        &self,
        after: &str,
        limit: i64,
        roots: &[String],
        reread: bool,
    ) -> Result<Vec<Undescribed>, super::CatalogError> {
        let rows = self
            .client
            .query(
                "SELECT c.sha256, f.root, f.path, f.path_encoding
                   FROM file_contents c
                  CROSS JOIN LATERAL (
                        SELECT root, path, path_encoding FROM files f
                         WHERE f.sha256 = c.sha256 AND f.deleted_at IS NULL AND f.root = ANY($3)
                         LIMIT 1) f
                  WHERE c.sha256 > $1
                    AND NOT EXISTS (SELECT 1 FROM content_metadata m
                                     WHERE m.sha256 = c.sha256 AND (NOT $4 OR m.extractor_version >= $5))
                  ORDER BY c.sha256
                  LIMIT $2",
                &[&after, &limit, &roots, &reread, &EXTRACTOR_VERSION],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Undescribed {
                sha256: row.get(0),
                root: row.get(1),
                path: row.get(2),
                encoding: crate::pathenc::PathEncoding::parse(row.get(3)).unwrap_or(crate::pathenc::PathEncoding::Utf8),
            })
            .collect())
    }

    /// Write metadata rows (replacing older ones when `replace`), in one transaction.
    /// Returns the rows written; a refusal by the server is an error naming it.
    pub async fn write_content_metadata(
        &mut self,
        rows: &[(String, ContentMetadata)],
        replace: bool,
    ) -> Result<u64, super::CatalogError> {
        let (timeout, canceller) = (self.client.timeout(), self.client.canceller());
        let work = async {
            let mut transaction = self.client.inner_mut().transaction().await?;
            let written = write(&mut transaction, rows.iter().map(|(sha, m)| (sha.as_str(), m)), replace).await??;
            transaction.commit().await?;
            Ok(written)
        };
        canceller.on_timeout(super::bounded::bounded(timeout, work).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_postgresql_cannot_hold_are_dropped_from_their_columns() {
        let m = ContentMetadata {
            captured_at: Some("0000-01-01T00:00:00".into()),
            created_at: Some("2024-03-15T09:30:00+01:00".into()),
            width: Some(u32::MAX),
            page_count: Some(12),
            gps_latitude: Some(f64::NAN),
            ..ContentMetadata::default()
        };
        let fit = fit_for_columns(&m);
        assert_eq!((fit.captured_at, fit.width, fit.gps_latitude), (None, None, None));
        assert_eq!((fit.created_at, fit.page_count), (m.created_at, Some(12)));
    }
}
