//! TLS against real servers. PostgreSQL refusing plain TCP: the scan, the commands and the
//! daemon reach it only with `sslmode=require` (or `verify-full`) and the CA that signed its
//! certificate. Garage behind a TLS front: uploads go over HTTPS, verified against
//! `storage.ca_file`. Every wrong setting fails with a message that says what to change.

mod common;

use common::daemon::{http_section, PrivatePostgres};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A CA, and a server certificate for `localhost` signed by it.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let ca = new_ca("FileMetadataSync test CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Point the configuration file of `fms` at `url` (and the CA file), from its original text.
fn set_database(fms: &Fms, original: &str, socket_url: &str, url: &str, ca_file: Option<&Path>) {
    let old = format!("url = \"{socket_url}\"\n");
    assert!(original.contains(&old));
    let mut new = format!("url = \"{url}\"\n");
    if let Some(file) = ca_file {
        new.push_str(&format!("ca_file = \"{}\"\n", file.display()));
    }
    std::fs::write(&fms.config, original.replace(&old, &new)).unwrap();
}

/// `migrate` with this URL and CA file: its exit code and stderr.
fn migrate_with(
    fms: &Fms,
    original: &str,
    socket_url: &str,
    url: &str,
    ca_file: Option<&Path>,
) -> (Option<i32>, String) {
    set_database(fms, original, socket_url, url, ca_file);
    let output = fms.run(&["migrate"]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!(
        "migrate with {url} (CA file {ca_file:?}): {:?}\n  {}",
        output.status.code(),
        stderr.trim()
    );
    (output.status.code(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_reached_over_verified_tls_or_not_at_all() {
    let pki = pki();
    let postgres = {
        let (cert, key) = (pki.cert_pem.clone(), pki.key_pem.clone());
        tokio::task::spawn_blocking(move || PrivatePostgres::start_tls(&cert, &key))
            .await
            .unwrap()
    };
    let socket_url = postgres.socket_url();
    let admin = Database::connect(socket_url.clone()).await;
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let other_ca = work.path().join("other-ca.pem");
    std::fs::write(&other_ca, new_ca("Someone else's CA").pem()).unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 200, &["--large", "0"]);
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &admin,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("{http}[watch]\npoll_interval = \"1s\"\ndebounce = \"1s\"\n"),
    );
    let original = std::fs::read_to_string(&fms.config).unwrap();
    let port_pg = postgres.port;
    let password = "tls-secret-in-url";

    // Plain TCP: the server refuses it, and the message says what to add.
    let (code, stderr) = migrate_with(
        &fms,
        &original,
        &socket_url,
        &format!("postgres://postgres@localhost:{port_pg}/postgres"),
        None,
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no encryption") && stderr.contains("sslmode=require"),
        "{stderr}"
    );

    // TLS without the CA: the server's certificate is not trusted, and nothing is sent.
    let require = format!("postgres://postgres:{password}@localhost:{port_pg}/postgres?sslmode=require");
    let (code, stderr) = migrate_with(&fms, &original, &socket_url, &require, None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("UnknownIssuer") && stderr.contains("database.ca_file"),
        "{stderr}"
    );
    assert!(!stderr.contains(password), "the password leaked: {stderr}");

    // Another CA: still not trusted.
    let (code, stderr) = migrate_with(&fms, &original, &socket_url, &require, Some(&other_ca));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not signed by a CA in database.ca_file"), "{stderr}");

    // The right CA, but a host name the certificate does not carry.
    let by_address = format!("postgres://postgres@127.0.0.1:{port_pg}/postgres?sslmode=verify-full");
    let (code, stderr) = migrate_with(&fms, &original, &socket_url, &by_address, Some(&ca_file));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("not valid for name") && stderr.contains("does not name the host"),
        "{stderr}"
    );

    // A CA file that is not there is a configuration error, named by its key.
    let (code, stderr) = migrate_with(
        &fms,
        &original,
        &socket_url,
        &require,
        Some(&work.path().join("missing.pem")),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("database.ca_file") && stderr.contains("missing.pem"),
        "{stderr}"
    );

    // libpq's own spelling, as a hosted database hands it out: verify-full + sslrootcert.
    let pasted = format!(
        "postgres://postgres@localhost:{port_pg}/postgres?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    );
    let (code, stderr) = migrate_with(&fms, &original, &socket_url, &pasted, None);
    assert_eq!(code, Some(0), "{stderr}");

    // sslmode=require and the CA file: a full scan with uploads.
    let daemon_url = require.replace(&format!(":{password}"), "");
    set_database(&fms, &original, &socket_url, &daemon_url, Some(&ca_file));
    let summary = fms.scan(0);
    let expected = expected_files(&manifest);
    assert_eq!(summary["totals"]["new"], expected.len() as u64);
    assert_eq!(admin.live_files("docs").await, expected);
    let status = fms.run(&["status"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    // The daemon: every one of its connections is encrypted, and a new file still syncs.
    let daemon = fms.start_daemon(port, &[], &[]);
    std::fs::write(tree.join("Projekte/over-tls.txt"), b"registered over TLS").unwrap();
    daemon
        .wait_for("the new file is registered", Duration::from_secs(20), async || {
            admin.live_files("docs").await.contains_key("Projekte/over-tls.txt")
        })
        .await;
    daemon.wait_until("/healthz 200", Duration::from_secs(10), || {
        daemon.http("/healthz").map(|(code, _)| code) == Some(200)
    });
    let tcp = "FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.client_addr IS NOT NULL AND a.backend_type = 'client backend'";
    let encrypted = admin.count(&format!("SELECT count(*) {tcp} AND s.ssl")).await;
    let plain = admin.count(&format!("SELECT count(*) {tcp} AND NOT s.ssl")).await;
    eprintln!("daemon: {encrypted} TLS connections, {plain} plain");
    assert!(
        encrypted >= 3,
        "scanner, registrar and uploader each hold one: {encrypted}"
    );
    assert_eq!(plain, 0);
    daemon
        .wait_for("every content is uploaded", Duration::from_secs(20), async || {
            admin.count("SELECT count(*) FROM upload_queue").await == 0
        })
        .await;

    // The CA file changed live to a CA that did not sign the server: the actors holding
    // connections restart for that key and cannot reconnect (the reason says why). The right
    // CA back: they reconnect and a new file syncs.
    let restarted_for = |key: &str| {
        let reason = format!("configuration changed: {key}");
        ["scanner", "registrar", "uploader"].iter().all(|actor| {
            daemon
                .events_named("actor restarted")
                .iter()
                .any(|e| e["actor"] == *actor && e["reason"] == reason.as_str())
        })
    };
    set_database(&fms, &original, &socket_url, &daemon_url, Some(&other_ca));
    daemon.wait_until("restarts for database.ca_file", Duration::from_secs(10), || {
        restarted_for("database.ca_file")
    });
    daemon.wait_until("a failed reconnect naming the CA", Duration::from_secs(20), || {
        daemon.events_named("actor restarted").iter().any(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("UnknownIssuer") && r.contains("database.ca_file"))
        })
    });
    let restarts_before = daemon.events_named("actor restarted").len();
    set_database(&fms, &original, &socket_url, &daemon_url, Some(&ca_file));
    daemon.wait_until("restarts after the CA came back", Duration::from_secs(10), || {
        daemon.events_named("actor restarted").len() > restarts_before
    });
    std::fs::write(tree.join("Projekte/after-the-ca-came-back.txt"), b"synced again").unwrap();
    daemon
        .wait_for("the new file is synced", Duration::from_secs(60), async || {
            admin
                .live_files("docs")
                .await
                .contains_key("Projekte/after-the-ca-came-back.txt")
                && admin.count("SELECT count(*) FROM upload_queue").await == 0
        })
        .await;
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

/// A TLS front for Garage's S3 port (Garage speaks plain HTTP), as a private S3 server with
/// its own CA looks from outside. Returns its port and the number of handshakes it completed.
async fn tls_front(upstream: String, pki: &Pki) -> (u16, Arc<AtomicUsize>) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream, counted) = (acceptor.clone(), upstream.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(mut garage) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut garage).await;
            });
        }
    });
    (port, handshakes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_to_an_https_endpoint_are_verified_against_the_store_ca_file() {
    let pki = pki();
    let garage = Garage::start();
    let upstream = garage.endpoint.trim_start_matches("http://").to_owned();
    let (port, handshakes) = tls_front(upstream, &pki).await;
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("s3-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 150, &["--large", "1"]);
    let database = Database::create("tls_s3").await;
    let https = garage
        .storage_toml()
        .replace(&garage.endpoint, &format!("https://localhost:{port}"));
    assert!(https.contains("https://localhost"));

    // The system's roots do not know this CA: nothing is sent, and the error says why.
    let untrusted = Fms::new(&database, &https, &[("docs", &tree)], "[upload]\nmax_attempts = 1\n");
    untrusted.scan_with(&["scan", "--no-upload", "--json"], 0);
    let output = untrusted.run(&["verify"]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!(
        "verify without the CA: {:?}\n{}{}",
        output.status.code(),
        tail(&stdout),
        tail(&stderr)
    );
    assert!(!output.status.success());
    assert!(
        format!("{stdout}{stderr}").contains("storage.ca_file"),
        "the message names storage.ca_file:\n{stdout}{stderr}"
    );
    assert!(
        assert_store_matches_keys(&garage.store()).await.is_empty(),
        "nothing stored"
    );

    // With the CA file: every content uploaded over TLS, and verified by the server.
    let trusted = Fms::new(
        &database,
        &format!("{https}ca_file = \"{}\"\n", ca_file.display()),
        &[("docs", &tree)],
        "",
    );
    let summary = trusted.scan(0);
    let contents: std::collections::BTreeSet<String> =
        expected_files(&manifest).values().map(|(_, sha)| sha.clone()).collect();
    assert_eq!(summary["uploaded"], contents.len() as u64, "{summary}");
    let stored = assert_store_matches_keys(&garage.store()).await;
    assert_eq!(stored.len(), contents.len());
    let deep = trusted.run(&["verify", "--deep"]);
    assert!(deep.status.success(), "{}", String::from_utf8_lossy(&deep.stdout));
    let handshakes = handshakes.load(Ordering::SeqCst);
    eprintln!(
        "{} contents uploaded through {handshakes} TLS handshakes",
        contents.len()
    );
    assert!(handshakes >= 1);
}
