//! The operator's page end to end, against the real PostgreSQL and a real Garage: who may use
//! it (raw HTTP: no session, a wrong password, no CSRF token, too many attempts), and what an
//! operator does with it in a real browser (headless Chromium through chromedriver): log in,
//! read the overview, retry failed uploads, search, open a file's history and download a
//! version. Screenshots go to `target/page-screenshots/`.

mod common;

use common::daemon::{http_section, Daemon};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "Bauakte-2026!";

/// One HTTP/1.0 exchange: (status, headers, body).
fn exchange(port: u16, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    if let Some(cookie) = cookie {
        head.push_str(&format!("Cookie: fms_session={cookie}\r\n"));
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    write!(stream, "{head}\r\n{body}").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn set_cookie(headers: &str) -> Option<String> {
    headers.lines().find_map(|line| {
        let value = line.strip_prefix("Set-Cookie: ")?;
        Some(value.to_owned())
    })
}

/// A session: the cookie's token and the CSRF token of its forms.
fn log_in(port: u16) -> (String, String) {
    let (status, headers, _) = exchange(
        port,
        "POST",
        "/login",
        None,
        Some(&format!("password={}", enc(PASSWORD))),
    );
    assert_eq!(status, 303, "{headers}");
    let cookie = set_cookie(&headers).expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("fms_session=")
        .to_owned();
    let (status, _, page) = exchange(port, "GET", "/", Some(&token), None);
    assert_eq!(status, 200, "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token in the page")
        .to_owned();
    (token, csrf)
}

fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Uploads are refused (the key may read the bucket, not write it) until `allow_writes`.
fn deny_writes(garage: &Garage) {
    garage.set_writes(false);
}

fn allow_writes(garage: &Garage) {
    garage.set_writes(true);
}

struct Setup {
    garage: Garage,
    database: Database,
    fms: Fms,
    tree: tempfile::TempDir,
    manifest: Vec<ManifestEntry>,
    daemon: Daemon,
    /// `http.restore_folder`.
    restored: tempfile::TempDir,
}

/// A daemon whose uploads all failed (writes denied, one attempt each), page on.
async fn setup(name: &str, files: usize) -> Setup {
    let garage = Garage::start();
    let database = Database::create(name).await;
    let tree = tempfile::tempdir().unwrap();
    let manifest = make_corpus(tree.path(), files, &[]);
    let (http, port) = http_section();
    let restored = tempfile::tempdir().unwrap();
    let fms = Fms::new(
        &database,
        &format!("{}integrity = \"server\"\n", garage.storage_toml()),
        &[("docs", tree.path())],
        &format!(
            "{http}password = \"{PASSWORD}\"\nrestore_folder = \"{}\"\n[scan]\non_start = true\n[upload]\nmax_attempts = 1\n\
             [watch]\nmode = \"poll\"\npoll_interval = \"1h\"\n",
            restored.path().display()
        ),
    );
    fms.migrate();
    deny_writes(&garage);
    let daemon = fms.start_daemon(port, &[], &[]);
    let contents = expected_files(&manifest)
        .values()
        .map(|(_, sha)| sha.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while database
        .count("SELECT count(*) FROM upload_queue WHERE state = 'failed'")
        .await
        < contents
    {
        assert!(
            Instant::now() < deadline,
            "uploads did not all fail: {}\n{}",
            database.queue_rows().await,
            tail(&daemon.log_text())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Setup {
        garage,
        database,
        fms,
        tree,
        manifest,
        daemon,
        restored,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_refuses_without_a_session_a_password_or_a_token_and_changes_nothing() {
    let setup = setup("page_refuses", 12).await;
    let (port, database) = (setup.daemon.port, &setup.database);
    let failed = "SELECT count(*) FROM upload_queue WHERE state = 'failed'";
    let before = database.count(failed).await;
    assert!(before > 0);
    let one: String = {
        database
            .client
            .query_one("SELECT sha256 FROM upload_queue WHERE state = 'failed' LIMIT 1", &[])
            .await
            .unwrap()
            .get(0)
    };

    // No session: the login form with 401, and an action is refused.
    for path in ["/", "/activity", "/search?name=a", "/download?sha256=0"] {
        let (status, _, body) = exchange(port, "GET", path, None, None);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("name=\"password\""), "{path}: {body}");
    }
    let (status, _, _) = exchange(port, "POST", "/retry", None, Some(&format!("sha256={one}&csrf=x")));
    assert_eq!(status, 401);
    let (status, _, _) = exchange(
        port,
        "POST",
        "/retry",
        Some("forged"),
        Some(&format!("sha256={one}&csrf=x")),
    );
    assert_eq!(status, 401);
    // A wrong password: 401, no cookie.
    let (status, headers, body) = exchange(port, "POST", "/login", None, Some("password=wrong-password"));
    assert_eq!(status, 401, "{body}");
    assert!(set_cookie(&headers).is_none(), "{headers}");
    assert!(body.contains("Wrong password"), "{body}");

    // A session without the CSRF token, or with another: 403.
    let (token, csrf) = log_in(port);
    let (status, _, body) = exchange(port, "POST", "/retry", Some(&token), Some(&format!("sha256={one}")));
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = exchange(
        port,
        "POST",
        "/retry",
        Some(&token),
        Some(&format!("sha256={one}&csrf={}", "0".repeat(64))),
    );
    assert_eq!(status, 403);
    let (status, _, _) = exchange(port, "POST", "/retry", Some(&token), Some("sha256=all"));
    assert_eq!(status, 403);
    assert_eq!(database.count(failed).await, before, "nothing changed");

    // With both, the action is taken.
    let (status, headers, _) = exchange(
        port,
        "POST",
        "/retry",
        Some(&token),
        Some(&format!("sha256={one}&csrf={csrf}")),
    );
    assert_eq!(status, 303, "{headers}");
    assert_eq!(database.count(failed).await, before - 1);

    // Logged out: the token is dead.
    let (status, _, _) = exchange(port, "POST", "/logout", Some(&token), Some(&format!("csrf={csrf}")));
    assert_eq!(status, 303);
    let (status, _, _) = exchange(port, "GET", "/", Some(&token), None);
    assert_eq!(status, 401);

    // No secret on any page: not the password, not the store's key, not the database URL's.
    let (token, _) = log_in(port);
    for path in ["/", "/activity", "/search?name=.", "/search"] {
        let (status, _, body) = exchange(port, "GET", path, Some(&token), None);
        assert_eq!(status, 200, "{path}");
        assert!(!body.contains(PASSWORD), "{path}");
        assert!(!body.contains(&setup.garage.secret), "{path}");
    }

    // Login attempts are limited: the sixth within a minute from one address is refused,
    // even with the right password.
    let statuses: Vec<u16> = (0..6)
        .map(|_| exchange(port, "POST", "/login", None, Some("password=wrong-password")).0)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let (status, _, _) = exchange(
        port,
        "POST",
        "/login",
        None,
        Some(&format!("password={}", enc(PASSWORD))),
    );
    assert_eq!(status, 429);
    assert!(!setup
        .daemon
        .events_named("page login refused: too many attempts")
        .is_empty());
    // /healthz and /metrics are not behind the login.
    assert!(setup.daemon.http("/metrics").is_some_and(|(status, _)| status == 200));
    let _ = (&setup.fms, &setup.tree, &setup.manifest);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_password_the_page_is_off() {
    let database = Database::create("page_off").await;
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("a.txt"), "a").unwrap();
    let store = tempfile::tempdir().unwrap();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &format!("[storage]\nkind = \"local\"\npath = \"{}\"\n", store.path().display()),
        &[("docs", tree.path())],
        &http,
    );
    fms.migrate();
    let daemon = fms.start_daemon(port, &[], &[]);
    let (status, _, body) = exchange(port, "GET", "/", None, None);
    assert_eq!(status, 404);
    assert!(body.contains("set http.password"), "{body}");
    let (status, _, _) = exchange(port, "POST", "/login", None, Some("password=anything-at-all"));
    assert_eq!(status, 404);
    assert_eq!(daemon.http("/healthz").map(|(status, _)| status), Some(200));
    // A password too short is a configuration error, named.
    let short = Fms::new(
        &database,
        &format!("[storage]\nkind = \"local\"\npath = \"{}\"\n", store.path().display()),
        &[("docs", tree.path())],
        "[http]\npassword = \"short\"\n",
    );
    let output = short.run(&["config", "check"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("http.password") && stderr.contains("shorter than 8"),
        "{stderr}"
    );
}

/// chromedriver on a free port, with its output in a file.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver; scripts/test.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver { child, port }
}

async fn browser(driver: &Driver, downloads: &Path, profile: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,1400",
                     format!("--user-data-dir={}", profile.display())],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
            },
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/page-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The element, once the page that has it has loaded (a click that navigates returns before
/// the next page is there).
async fn find(
    client: &Client,
    locator: Locator<'_>,
) -> Result<fantoccini::elements::Element, fantoccini::error::CmdError> {
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(locator)
        .await
}

async fn click(client: &Client, locator: Locator<'_>) {
    find(client, locator).await.unwrap().click().await.unwrap();
}

async fn text(client: &Client, locator: Locator<'_>) -> String {
    find(client, locator).await.unwrap().text().await.unwrap()
}

async fn type_into(client: &Client, locator: Locator<'_>, keys: &str) {
    find(client, locator).await.unwrap().send_keys(keys).await.unwrap();
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The overview's figures, by name, as numbers (the page groups digits with thin spaces).
async fn figures(client: &Client) -> std::collections::BTreeMap<String, i64> {
    let mut figures = std::collections::BTreeMap::new();
    for element in client.find_all(Locator::Css("[data-figure]")).await.unwrap() {
        let name = element.attr("data-figure").await.unwrap().unwrap();
        let text = element.text().await.unwrap();
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        if name != "uploaded_bytes" {
            figures.insert(name, digits.parse().unwrap_or_else(|_| panic!("{text:?}")));
        }
    }
    figures
}

fn status_json(fms: &Fms) -> Value {
    let output = fms.run(&["status", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The figures `status --json` gives for the same names.
fn status_figures(status: &Value) -> std::collections::BTreeMap<String, i64> {
    [
        ("files", &status["files"]),
        ("deleted_files", &status["deleted_files"]),
        ("contents", &status["contents"]),
        ("uploaded_contents", &status["uploaded_contents"]),
        ("queue_pending", &status["queue"]["pending"]),
        ("queue_leased", &status["queue"]["leased"]),
        ("queue_failed", &status["queue"]["failed"]),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.as_i64().unwrap()))
    .collect()
}

async fn wait_for(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_logs_in_retries_searches_and_downloads_in_a_real_browser() {
    let setup = setup("page_browser", 40).await;
    let base = format!("http://127.0.0.1:{}", setup.daemon.port);
    let driver = start_chromedriver();
    let downloads = tempfile::tempdir().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, downloads.path(), profile.path()).await;

    // The login form, then the overview.
    client.goto(&format!("{base}/")).await.unwrap();
    find(&client, Locator::Id("password")).await.unwrap();
    screenshot(&client, "1-login").await;
    type_into(&client, Locator::Id("password"), PASSWORD).await;
    click(&client, Locator::Id("login")).await;
    let state = text(&client, Locator::Id("state")).await;
    assert!(
        state.starts_with("Degraded") && state.contains("uploads failed"),
        "{state}"
    );
    // Its figures are those of `status --json` (nothing moves while writes are denied).
    assert_eq!(figures(&client).await, status_figures(&status_json(&setup.fms)));
    let failed_rows = client.find_all(Locator::Css("#failed button.retry")).await.unwrap();
    assert!(!failed_rows.is_empty());
    screenshot(&client, "2-overview-failed-uploads").await;

    // The store takes writes again; retry one, then the rest.
    allow_writes(&setup.garage);
    let first = failed_rows[0].attr("data-sha256").await.unwrap().unwrap();
    failed_rows[0].click().await.unwrap();
    let message = text(&client, Locator::Id("message")).await;
    assert!(message.contains("back in the queue"), "{message}");
    let database = &setup.database;
    let stored = format!("SELECT count(*) FROM file_contents WHERE sha256 = '{first}' AND uploaded_at IS NOT NULL");
    wait_for("the retried upload is stored", Duration::from_secs(60), async || {
        database.count(&stored).await == 1
    })
    .await;
    client.goto(&format!("{base}/")).await.unwrap();
    click(&client, Locator::Id("retry-all")).await;
    wait_for("every upload is stored", Duration::from_secs(90), async || {
        database.count("SELECT count(*) FROM upload_queue").await == 0
    })
    .await;
    client.goto(&format!("{base}/")).await.unwrap();
    let state = text(&client, Locator::Id("state")).await;
    assert!(state.starts_with("In sync"), "{state}");
    assert_eq!(figures(&client).await, status_figures(&status_json(&setup.fms)));
    screenshot(&client, "3-overview-in-sync").await;

    // Search a file by a part of its name, open its history, download its version.
    let expected = expected_files(&setup.manifest);
    let (path, (size, sha256)) = expected
        .iter()
        .find(|(path, (size, _))| *size > 1000 && path.ends_with(".pdf"))
        .or_else(|| expected.iter().find(|(_, (size, _))| *size > 1000))
        .unwrap();
    let name = path.rsplit('/').next().unwrap();
    client.goto(&format!("{base}/search")).await.unwrap();
    type_into(&client, Locator::Id("name"), name).await;
    click(&client, Locator::Id("search")).await;
    let found = text(&client, Locator::Id("found")).await;
    assert!(found.contains(path.as_str()), "{path} not in\n{found}");
    screenshot(&client, "4-search").await;
    click(&client, Locator::LinkText(path)).await;
    let versions = text(&client, Locator::Id("versions")).await;
    assert!(versions.contains("created"), "{versions}");
    screenshot(&client, "5-file-history").await;
    let link = find(&client, Locator::Css("a.download")).await.unwrap();
    assert_eq!(
        link.attr("data-sha256").await.unwrap().as_deref(),
        Some(sha256.as_str())
    );
    link.click().await.unwrap();
    let target = downloads.path().join(name);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(target.exists() && std::fs::metadata(&target).unwrap().len() == *size as u64) {
        assert!(
            Instant::now() < deadline,
            "the download did not arrive: {:?}",
            std::fs::read_dir(downloads.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = hex::encode(Sha256::digest(std::fs::read(&target).unwrap()));
    assert_eq!(&got, sha256, "the downloaded version's hash");

    // Restore the version into http.restore_folder: checked, put in place, never over a file.
    click(&client, Locator::Css("button.restore")).await;
    let message = text(&client, Locator::Id("message")).await;
    let restored = setup.restored.path().join("docs").join(path);
    assert!(message.starts_with("Restored to"), "{message}");
    let got = hex::encode(Sha256::digest(std::fs::read(&restored).unwrap()));
    assert_eq!(&got, sha256, "the restored version's hash");
    screenshot(&client, "6-restored").await;
    std::fs::write(&restored, "changed since").unwrap();
    click(&client, Locator::Css("button.restore")).await;
    // The page before the click has a message too: wait for the new one.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let message = match client.find(Locator::Id("message")).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if message.contains("already exists") {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal to overwrite: {message}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(std::fs::read_to_string(&restored).unwrap(), "changed since");

    // The activity list, filtered by kind.
    client.goto(&format!("{base}/activity?kind=created")).await.unwrap();
    let events = text(&client, Locator::Id("events")).await;
    assert!(events.contains(path.as_str()), "{events}");
    assert!(!events.contains(" deleted "), "{events}");
    screenshot(&client, "7-activity").await;

    // Log out: the page asks for the password again.
    client.goto(&format!("{base}/")).await.unwrap();
    click(&client, Locator::Id("logout")).await;
    find(&client, Locator::Id("password")).await.unwrap();
    client.goto(&format!("{base}/search")).await.unwrap();
    find(&client, Locator::Id("password")).await.unwrap();
    client.close().await.unwrap();
    let _ = &setup.tree;
}
