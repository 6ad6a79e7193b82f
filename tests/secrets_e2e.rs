//! Secrets never leave the process: the database password and the S3 secret key are searched
//! for in everything the commands print — the daemon's log stream at debug level (with the
//! dependencies' own logging), `config check`, `status`, a scan's summary, and the error
//! messages of a failed connection.

mod common;

use common::daemon::http_section;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_the_database_password_nor_the_s3_secret_is_ever_printed() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_corpus(&tree, 50, &["--large", "0"]);
    let database = Database::create("secrets").await;
    let garage = Garage::start();
    let password = "Pw-geheim-7f3a91c2";
    let with_password = database
        .url
        .replacen("postgres://postgres@", &format!("postgres://postgres:{password}@"), 1);
    assert_ne!(with_password, database.url);
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("{http}[scan]\nschedule = \"*/2 * * * * *\"\n"),
    );
    let text = std::fs::read_to_string(&fms.config)
        .unwrap()
        .replace(&database.url, &with_password)
        .replace("level = \"info\"", "level = \"debug\"");
    std::fs::write(&fms.config, text).unwrap();
    let secrets = [password, garage.secret.as_str()];
    let mut printed = String::new();
    fn record(printed: &mut String, what: &str, output: std::process::Output) {
        printed.push_str(&format!(
            "--- {what}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }

    record(&mut printed, "config check", fms.run(&["config", "check"]));
    record(&mut printed, "scan", fms.run(&["scan", "--wait", "--json"]));
    let daemon = fms.start_daemon(port, &[], &[]);
    daemon.wait_until("two scheduled scans", Duration::from_secs(20), || {
        daemon.events_named("scheduled scan due").len() >= 2
    });
    record(&mut printed, "status", fms.run(&["status"]));
    record(&mut printed, "status --json", fms.run(&["status", "--json"]));
    printed.push_str(&daemon.http("/metrics").unwrap().1);
    printed.push_str(&daemon.http("/healthz").unwrap().1);
    let log = daemon.log.clone();
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    printed.push_str(&std::fs::read_to_string(&log).unwrap());

    // A connection that fails: its error message names the server, not the password.
    // Port 1 (tcpmux) has no listener; prefixing the port with a digit, as before, made an
    // invalid port (> 65535) whenever the test server listened on an ephemeral port.
    let port_start = with_password.find("127.0.0.1:").unwrap() + "127.0.0.1:".len();
    let port_len = with_password[port_start..].find(|c: char| !c.is_ascii_digit()).unwrap();
    let unreachable = format!(
        "{}1{}",
        &with_password[..port_start],
        &with_password[port_start + port_len..]
    );
    let text = std::fs::read_to_string(&fms.config)
        .unwrap()
        .replace(&with_password, &unreachable);
    std::fs::write(&fms.config, text).unwrap();
    let failed = fms.run(&["status"]);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "status against an unreachable server: {}",
        String::from_utf8_lossy(&failed.stderr)
    );
    record(&mut printed, "status against an unreachable server", failed);

    assert!(printed.contains("\"level\":\"DEBUG\""), "the log ran at debug level");
    assert!(printed.contains("cannot connect"), "the failure was printed");
    for secret in secrets {
        assert!(!printed.contains(secret), "a secret was printed:\n{}", tail(&printed));
    }
}
