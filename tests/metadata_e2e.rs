//! Content metadata against the real PostgreSQL: files of each format made by crates give
//! exactly their metadata in `file_details` (joined with the links the path gives); damaged
//! files are marked unreadable and synced like any other; `metadata backfill` fills in
//! contents registered with `hash.metadata = false`, from the NAS, resumably.

mod common;

use common::*;
use fms_corpus::samples;
use std::path::Path;

/// One file of each format under a project folder the default link rules know, plus damaged
/// ones. Returns the paths (relative) of the good ones by extension.
fn write_tree(root: &Path) {
    let folder = root.join("Projekte/2024-017 Haus B/Haus B/300 Bauwerk/Ausführung");
    std::fs::create_dir_all(&folder).unwrap();
    for (extension, bytes) in samples::one_of_each(1) {
        std::fs::write(folder.join(format!("sample{extension}")), bytes).unwrap();
    }
    let damaged = root.join("Projekte/2024-017 Haus B/kaputt");
    std::fs::create_dir_all(&damaged).unwrap();
    let pdf = samples::pdf(&samples::PLAN_PDF, 2);
    std::fs::write(damaged.join("half.pdf"), &pdf[..pdf.len() / 2]).unwrap();
    std::fs::write(damaged.join("bomb.docx"), samples::office_bomb(64 << 20)).unwrap();
    std::fs::write(damaged.join("empty.jpg"), b"").unwrap();
    std::fs::write(
        damaged.join("random.xlsx"),
        (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
}

async fn details(database: &Database) -> std::collections::BTreeMap<String, serde_json::Value> {
    let rows = database
        .client
        .query(
            "SELECT path, row_to_json(d)::text FROM file_details d ORDER BY path",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            let path: String = row.get(0);
            let name = path.rsplit('/').next().unwrap().to_string();
            (name, serde_json::from_str(&row.get::<_, String>(1)).unwrap())
        })
        .collect()
}

fn assert_fields(found: &serde_json::Value, expected: serde_json::Value) {
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&found[key], value, "{key} of {}: {found:#}", found["path"]);
    }
}

fn assert_every_format(rows: &std::collections::BTreeMap<String, serde_json::Value>) {
    use serde_json::json;
    assert_fields(
        &rows["sample.jpg"],
        json!({"mime_type": "image/jpeg", "captured_at": "2024-03-15T09:30:12", "camera_make": "Canon",
               "camera_model": "Canon EOS R6", "width": 64, "height": 48, "orientation": 6,
               "project_code": "2024-017", "metadata_unreadable": null}),
    );
    let latitude = rows["sample.jpg"]["gps_latitude"].as_f64().unwrap();
    assert!((latitude - (48.0 + 8.0 / 60.0 + 24.0 / 3600.0)).abs() < 1e-9);
    assert_fields(
        &rows["sample.png"],
        json!({"mime_type": "image/png", "width": 32, "height": 24}),
    );
    assert_fields(
        &rows["sample.pdf"],
        json!({"mime_type": "application/pdf", "page_count": 3, "title": "Grundriss EG Haus B",
               "author": "Anna Architektin", "application": "AutoCAD 2024",
               "content_created_at": "2024-03-15T08:30:00+00:00", "format_version": "PDF 1.7"}),
    );
    assert_eq!(rows["sample.pdf"]["details"]["producer"], "PDF-XChange 9.5");
    assert_fields(
        &rows["sample.docx"],
        json!({"mime_type": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
               "title": "Leistungsverzeichnis Rohbau", "author": "Anna Architektin",
               "last_modified_by": "Bernd Bauleiter", "page_count": 12,
               "content_modified_at": "2024-02-28T12:00:00+00:00"}),
    );
    assert_fields(
        &rows["sample.xlsx"],
        json!({"title": "Kostenschätzung KG 300", "page_count": 4, "application": "Microsoft Excel"}),
    );
    assert_fields(
        &rows["sample.pptx"],
        json!({"title": "Bauherrenpräsentation & Zeitplan", "page_count": 7}),
    );
    assert_fields(
        &rows["sample.ifc"],
        json!({"mime_type": "application/x-step", "format_version": "IFC4", "author": "Anna Architektin",
               "application": "Autodesk Revit 2024 (DEU)", "content_created_at": "2024-03-15T08:30:00+00:00"}),
    );
    assert_eq!(rows["sample.ifc"]["details"]["organization"], "Planungsbüro Süd");
    assert_fields(
        &rows["sample.dwg"],
        json!({"mime_type": "image/vnd.dwg", "format_version": "AC1032"}),
    );
    assert_eq!(rows["sample.dwg"]["details"]["release"], "AutoCAD 2018");
    assert_fields(
        &rows["sample.eml"],
        json!({"mime_type": "message/rfc822", "title": "Baustelle Haus B: Betonage Decke über EG",
               "author": "Bernd Bauleiter <bernd@example.org>"}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_gives_its_metadata_in_the_view_and_damaged_files_sync_marked_unreadable() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("share");
    write_tree(&tree);
    let database = Database::create("metadata").await;
    let store = format!(
        "[storage]\nkind = \"local\"\npath = \"{}\"\n",
        work.path().join("store").display()
    );
    let fms = Fms::new(&database, &store, &[("docs", &tree)], "");
    database.client.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    let summary = fms.scan(0);
    assert_eq!(summary["totals"]["new"], 13, "{summary:#}");
    assert_eq!(summary["totals"]["failed"], 0);
    assert_eq!(summary["totals"]["metadata_written"], 13);
    assert_eq!(summary["totals"]["metadata_refused"], 0);
    assert_eq!(summary["queue_pending"], 0);
    let rows = details(&database).await;
    assert_eq!(rows.len(), 13);
    assert_every_format(&rows);
    assert!(rows["half.pdf"]["metadata_unreadable"]
        .as_str()
        .unwrap()
        .starts_with("PDF unreadable: "));
    assert_eq!(
        rows["bomb.docx"]["metadata_unreadable"],
        "Office file not read: docProps/core.xml decompresses to more than 1024 KiB"
    );
    assert_eq!(rows["empty.jpg"]["metadata_unreadable"], "empty file");
    assert_eq!(rows["random.xlsx"]["mime_type"], "application/octet-stream");
    // Every damaged file is catalogued and stored like any other.
    assert_eq!(
        database
            .count("SELECT count(*) FROM file_contents WHERE uploaded_at IS NULL")
            .await,
        0
    );
    // The indexes for the usual filters serve the view (13 rows are too few for the planner
    // to prefer them on its own: sequential scans are priced out for the question).
    database.client.batch_execute("SET enable_seqscan = off").await.unwrap();
    for (filter, index) in [
        (
            "captured_at >= '2024-03-01' AND captured_at < '2024-04-01'",
            "content_metadata_captured_at",
        ),
        ("mime_type = 'application/pdf'", "content_metadata_mime_type"),
    ] {
        let plan = database
            .plan(&format!("SELECT path FROM file_details WHERE {filter}"))
            .await;
        assert!(plan.contains(index), "{filter}: {plan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_older_contents_from_the_nas_bounded_and_resumable() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("share");
    write_tree(&tree);
    let database = Database::create("backfill").await;
    database.client.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    let store = format!(
        "[storage]\nkind = \"local\"\npath = \"{}\"\n",
        work.path().join("store").display()
    );
    let without = Fms::new(&database, &store, &[("docs", &tree)], "[hash]\nmetadata = false\n");
    let summary = without.scan(0);
    assert_eq!(summary["totals"]["metadata_written"], 0);
    assert_eq!(database.count("SELECT count(*) FROM content_metadata").await, 0);

    // A changed file is not described with the bytes it holds now.
    let changed = tree.join("Projekte/2024-017 Haus B/kaputt/random.xlsx");
    std::fs::write(&changed, b"other bytes than registered").unwrap();
    // Bounded: five at a time, each run goes on where the last stopped.
    let with = Fms::new(&database, &store, &[("docs", &tree)], "");
    let first = with.run(&["metadata", "backfill", "--limit", "5", "--json"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        (first["read"].as_u64(), first["more_left"].as_bool()),
        (Some(5), Some(true)),
        "{first:#}"
    );
    let rest = with.run(&["metadata", "backfill", "--json"]);
    assert!(rest.status.success(), "{}", String::from_utf8_lossy(&rest.stderr));
    let rest: serde_json::Value = serde_json::from_slice(&rest.stdout).unwrap();
    assert_eq!(rest["more_left"], false, "{rest:#}");
    assert_eq!(
        first["written"].as_u64().unwrap() + rest["written"].as_u64().unwrap(),
        12,
        "{first:#} {rest:#}"
    );
    assert_eq!(
        first["changed"].as_u64().unwrap() + rest["changed"].as_u64().unwrap(),
        1
    );
    let rows = details(&database).await;
    assert_every_format(&rows);
    assert_eq!(rows["random.xlsx"]["mime_type"], serde_json::Value::Null);
    // The changed file's old content stays without metadata (its file holds other bytes)
    // until the next scan registers the new ones, with metadata; then nothing is left.
    let backfill = |fms: &Fms| -> serde_json::Value {
        serde_json::from_slice(&fms.run(&["metadata", "backfill", "--json"]).stdout).unwrap()
    };
    let again = backfill(&with);
    assert_eq!(
        (again["read"].as_u64(), again["changed"].as_u64()),
        (Some(1), Some(1)),
        "{again:#}"
    );
    let summary = with.scan(0);
    assert_eq!(summary["totals"]["metadata_written"], 1, "{summary:#}");
    assert_eq!(backfill(&with)["read"], 0);
    assert_eq!(details(&database).await["random.xlsx"]["mime_type"], "text/plain");
}
