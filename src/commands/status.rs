//! `filemetasync status [--json]`: what the catalog holds and how far the uploads are.

use crate::app;
use crate::config::Config;
use std::process::ExitCode;

pub async fn run(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = app::open_catalog(config).await?;
    let report = catalog.status().await?;
    let window = config.upload.window.as_ref().map(|window| {
        let now = chrono::Utc::now();
        serde_json::json!({
            "window": window.describe(),
            "open": window.contains(now),
            "opens_at": window.next_open(now).to_rfc3339(),
        })
    });
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["upload_window"] = window.unwrap_or(serde_json::Value::Null);
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "files            {:>10}   ({} deleted)",
        report.files, report.deleted_files
    );
    println!(
        "contents         {:>10}   ({})",
        report.contents,
        bytesize::ByteSize(report.content_bytes as u64)
    );
    println!(
        "uploaded         {:>10}   ({})",
        report.uploaded_contents,
        bytesize::ByteSize(report.uploaded_bytes as u64)
    );
    println!(
        "queue pending    {:>10}   ({} leased now)",
        report.queue.pending, report.queue.leased
    );
    println!("failed uploads   {:>10}", report.queue.failed);
    if let Some(window) = &window {
        if window["open"] == true {
            println!(
                "upload window    {}   (open now)",
                window["window"].as_str().unwrap_or("")
            );
        } else {
            println!(
                "upload window    {}   uploads are HELD until {}",
                window["window"].as_str().unwrap_or(""),
                window["opens_at"].as_str().unwrap_or("")
            );
        }
    }
    for check in &report.store_checks {
        println!(
            "store integrity  {} ({}) for {}, decided {} by {}: {}",
            check.mode, check.checks, check.store, check.decided_at, check.agent, check.reason
        );
    }
    for failed in &report.failed_uploads {
        println!(
            "  {} after {} attempts: {}",
            failed.sha256,
            failed.attempts,
            failed.last_error.as_deref().unwrap_or("-")
        );
    }
    for scan in &report.last_scans {
        println!(
            "last scan of {:<12} {} by {}: {} ({} files){}",
            scan.root,
            scan.finished_at.as_deref().unwrap_or(&scan.started_at),
            scan.agent,
            scan.outcome.as_deref().unwrap_or("running"),
            scan.files_seen,
            scan.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(),
        );
    }
    for process in &report.processes {
        println!(
            "daemon {} (role {}, pid {}): {}, last heartbeat {}",
            process.agent, process.role, process.pid, process.state, process.heartbeat_at
        );
        for actor in process.actors.as_array().into_iter().flatten() {
            let field = |name: &str| actor[name].as_str().unwrap_or("-").to_owned();
            println!(
                "  {:<12} {:<10} restarts {:>4}{}",
                field("actor"),
                field("state"),
                actor["restarts"].as_u64().unwrap_or(0),
                actor["reason"]
                    .as_str()
                    .map(|reason| format!("   last failure: {reason}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
