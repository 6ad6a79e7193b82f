//! Test harness for the end-to-end tests: a database of its own per test (on the PostgreSQL
//! that scripts/test.sh provides), a Garage instance of its own per test (so that its request
//! counters are this test's alone, and the test may stop it), sample trees from `fms-corpus`,
//! and the real binary.
#![allow(dead_code)]

pub mod daemon;
pub mod front;

use fms_actors::store::{ObjectStore, S3Settings, S3Store};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

pub const BINARY: &str = env!("CARGO_BIN_EXE_filemetasync");

fn admin_url() -> String {
    std::env::var("FMSTEST_PG_ADMIN_URL").expect(
        "FMSTEST_PG_ADMIN_URL is not set: run the tests through scripts/test.sh, which provides PostgreSQL and Garage",
    )
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{:08x}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    u32::from_le_bytes(bytes)
}

/// A port free now, below the kernel's ephemeral range (32768 and up): the port 0 trick
/// hands out ports from that range, where the next outgoing connection of any test (to
/// PostgreSQL, to a store) may take it before the server that was to listen on it binds it.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (rand_u32() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A database of this test's own.
pub struct Database {
    pub url: String,
    pub client: Client,
}

impl Database {
    pub async fn create(name: &str) -> Database {
        Database::create_on(&admin_url(), name).await
    }

    /// A new database on the server of `admin_url`.
    pub async fn create_on(admin_url: &str, name: &str) -> Database {
        let name = unique(&format!("fms_{name}"));
        let (admin, connection) = tokio_postgres::connect(admin_url, NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(connection);
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("admin URL without a database: {admin_url}"),
        };
        Database::connect(url).await
    }

    /// A new connection to the database at `url` (after its server was restarted).
    pub async fn connect(url: String) -> Database {
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        Database { url, client }
    }

    /// The running totals of `catalog_counts` equal what count(*) finds.
    pub async fn assert_counts_match(&self) {
        let kept = self
            .client
            .query_one(
                "SELECT sum(live_files)::int8, sum(deleted_files)::int8, sum(contents)::int8, sum(content_bytes)::int8,
                        sum(uploaded_contents)::int8, sum(uploaded_bytes)::int8, sum(queue_pending)::int8,
                        sum(queue_failed)::int8
                   FROM catalog_counts",
                &[],
            )
            .await
            .unwrap();
        let counted = self
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM files WHERE deleted_at IS NULL),
                        (SELECT count(*) FROM files WHERE deleted_at IS NOT NULL),
                        (SELECT count(*) FROM file_contents),
                        (SELECT coalesce(sum(size), 0)::int8 FROM file_contents),
                        (SELECT count(*) FROM file_contents WHERE uploaded_at IS NOT NULL),
                        (SELECT coalesce(sum(size), 0)::int8 FROM file_contents WHERE uploaded_at IS NOT NULL),
                        (SELECT count(*) FROM upload_queue WHERE state = 'pending'),
                        (SELECT count(*) FROM upload_queue WHERE state = 'failed')",
                &[],
            )
            .await
            .unwrap();
        let row = |row: &tokio_postgres::Row| {
            (0..8)
                .map(|i| row.get::<_, Option<i64>>(i).unwrap_or(0))
                .collect::<Vec<i64>>()
        };
        assert_eq!(
            row(&kept),
            row(&counted),
            "catalog_counts (live, deleted, contents, bytes, uploaded, uploaded bytes, pending, failed) == count(*)"
        );
        // Per root (root_counts, for the operator's page): live files and their bytes.
        let per_root = |sql: &'static str| async move {
            self.client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)))
                .filter(|(_, files, bytes)| *files != 0 || *bytes != 0)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            per_root(
                "SELECT root, sum(live_files)::int8, sum(live_bytes)::int8 FROM root_counts GROUP BY root ORDER BY root"
            )
            .await,
            per_root(
                "SELECT root, count(*), coalesce(sum(size), 0)::int8 FROM files WHERE deleted_at IS NULL
                  GROUP BY root ORDER BY root"
            )
            .await,
            "root_counts (root, live files, live bytes) == count(*), sum(size)"
        );
    }

    /// Every queue row with its state, for a failure message.
    pub async fn queue_rows(&self) -> String {
        let rows = self
            .client
            .query(
                "SELECT q.sha256, q.state, q.attempts, q.lease_owner IS NOT NULL,
                        extract(epoch FROM q.next_attempt_at - now())::float8, coalesce(q.last_error, ''),
                        (SELECT string_agg(f.path || CASE WHEN f.deleted_at IS NULL THEN '' ELSE ' (deleted)' END, ', ')
                           FROM files f WHERE f.sha256 = q.sha256)
                   FROM upload_queue q ORDER BY q.sha256",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|row| {
                format!(
                    "{} state={} attempts={} leased={} next_attempt_in={:.1}s error={:?} files={:?}",
                    &row.get::<_, String>(0)[..12],
                    row.get::<_, String>(1),
                    row.get::<_, i32>(2),
                    row.get::<_, bool>(3),
                    row.get::<_, f64>(4),
                    row.get::<_, String>(5),
                    row.get::<_, Option<String>>(6),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The plan PostgreSQL makes for `sql`, as EXPLAIN prints it.
    pub async fn plan(&self, sql: &str) -> String {
        let rows = self.client.query(&format!("EXPLAIN {sql}"), &[]).await.unwrap();
        rows.iter()
            .map(|row| row.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Everything registered and uploaded: the live files of `root` equal `expected`, the
    /// queue is empty and every content is stored.
    pub async fn synced(&self, root: &str, expected: &BTreeMap<String, (i64, String)>) -> bool {
        self.live_files(root).await == *expected
            && self.count("SELECT count(*) FROM upload_queue").await == 0
            && self
                .count("SELECT count(*) FROM file_contents WHERE uploaded_at IS NULL")
                .await
                == 0
    }

    /// Live files as path -> (size, sha256).
    pub async fn live_files(&self, root: &str) -> BTreeMap<String, (i64, String)> {
        let rows = self
            .client
            .query(
                "SELECT path, size, sha256 FROM files WHERE root = $1 AND deleted_at IS NULL",
                &[&root],
            )
            .await
            .unwrap();
        rows.iter().map(|row| (row.get(0), (row.get(1), row.get(2)))).collect()
    }
}

/// A Garage server of this test's own, with a key and a bucket.
pub struct Garage {
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
    pub endpoint: String,
    admin: String,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
}

fn garage_command() -> Command {
    installed_command("garage")
}

/// A program that `cargo install` put in ~/.cargo/bin (Garage, s3s-fs).
fn installed_command(program: &str) -> Command {
    let mut command = Command::new(program);
    let home = std::env::var("HOME").unwrap_or_default();
    let path = std::env::var("PATH").unwrap_or_default();
    command.env("PATH", format!("{home}/.cargo/bin:{path}"));
    command
}

fn hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut raw)
        .unwrap();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl Garage {
    /// A Garage whose S3 and admin ports answer as Garage's; one whose port another
    /// process took in the meantime is stopped and started again on other ports.
    pub fn start() -> Garage {
        for _ in 0..5 {
            let mut garage = Garage::start_once();
            garage.wait_for_node();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !garage.answers() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if garage.answers() {
                garage.setup();
                return garage;
            }
            garage.stop();
        }
        panic!("garage did not answer on its own ports in five tries");
    }

    /// The S3 port answers an anonymous request with an S3 XML error, the admin port with
    /// its metrics.
    fn answers(&self) -> bool {
        let ask = |address: &str, path: &str| -> String {
            let Ok(mut stream) = std::net::TcpStream::connect(address) else {
                return String::new();
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
            let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer
        };
        let s3 = ask(self.endpoint.trim_start_matches("http://"), "/");
        let admin = ask(&self.admin, "/metrics");
        s3.starts_with("HTTP/1.")
            && s3.contains("application/xml")
            && admin.starts_with("HTTP/1.")
            && admin.contains(" 200 ")
    }

    fn start_once() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let text = format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"lmdb\"\nreplication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
             metadata_fsync = false\ndata_fsync = false\n\
             [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
            d = dir.path().display(),
            secret = hex(32),
        );
        std::fs::write(&config, text).unwrap();
        let mut garage = Garage {
            child: None,
            endpoint: format!("http://127.0.0.1:{s3}"),
            admin: format!("127.0.0.1:{admin}"),
            key_id: format!("GK{}", hex(12)),
            secret: hex(32),
            bucket: "fms".into(),
            config,
            dir,
        };
        garage.spawn();
        garage
    }

    /// Layout, key and bucket.
    fn setup(&mut self) {
        let node = self.wait_for_node();
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "10G", &node]);
        self.cli(&["layout", "apply", "--version", "1"]);
        let (key_id, secret) = (self.key_id.clone(), self.secret.clone());
        self.cli(&["key", "import", "--yes", "-n", "test", &key_id, &secret]);
        self.cli(&["bucket", "create", "fms"]);
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", "fms", "--key", &key_id,
        ]);
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = garage_command()
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start garage (installed by scripts/test.sh)");
        self.child = Some(child);
    }

    fn wait_for_node(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // `node id` reads local files; `status` needs the running server.
            let running = garage_command()
                .arg("-c")
                .arg(&self.config)
                .arg("status")
                .output()
                .unwrap();
            let output = garage_command()
                .arg("-c")
                .arg(&self.config)
                .args(["node", "id", "-q"])
                .output()
                .unwrap();
            if running.status.success() && output.status.success() {
                let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                return id.split('@').next().unwrap().to_owned();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "garage did not start: {}",
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn cli(&self, args: &[&str]) {
        let output = garage_command()
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same data (after `stop`), and wait until the S3 port answers.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_for_node();
        let address = self.endpoint.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "garage S3 port did not come back");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Requests that stored an object, counted by the server itself: those it answered
    /// without an error (the integrity probes, which Garage rejects, do not count).
    pub fn store_requests(&self) -> u64 {
        let metrics = self.metrics();
        ["PutObject", "CompleteMultipartUpload"]
            .iter()
            .map(|endpoint| metric(&metrics, endpoint) - errors(&metrics, endpoint))
            .sum()
    }

    /// Requests Garage has answered for one S3 API endpoint ("UploadPart", ...).
    pub fn requests(&self, endpoint: &str) -> u64 {
        metric(&self.metrics(), endpoint)
    }

    fn metrics(&self) -> String {
        let mut stream = std::net::TcpStream::connect(&self.admin).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.admin).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    pub fn store(&self) -> ObjectStore {
        test_store(&self.bucket, &self.endpoint, "garage", &self.key_id, &self.secret)
    }

    /// The `[storage]` section for a configuration file.
    /// A second access key with full rights on the bucket: (key id, secret).
    pub fn add_key(&self) -> (String, String) {
        let (key_id, secret) = (format!("GK{}", hex(12)), hex(32));
        self.cli(&["key", "import", "--yes", "-n", "second", &key_id, &secret]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &self.bucket,
            "--key",
            &key_id,
        ]);
        (key_id, secret)
    }

    /// Let the test's key write the bucket, or only read it (writes answer 403 AccessDenied).
    pub fn set_writes(&self, allowed: bool) {
        let verb = if allowed { "allow" } else { "deny" };
        self.cli(&["bucket", verb, "--write", &self.bucket, "--key", &self.key_id]);
    }

    /// Revoke a key: requests signed with it fail from now on.
    pub fn delete_key(&self, key_id: &str) {
        self.cli(&["key", "delete", "--yes", key_id]);
    }

    /// The `[storage]` section with other credentials.
    pub fn storage_toml_with(&self, key_id: &str, secret: &str) -> String {
        self.storage_toml()
            .replace(&self.key_id, key_id)
            .replace(&self.secret, secret)
    }

    /// Where a front forwards to, with the key it signs with.
    pub fn upstream(&self) -> front::Upstream {
        front::Upstream {
            endpoint: self.endpoint.clone(),
            region: "garage".into(),
            key_id: self.key_id.clone(),
            secret: self.secret.clone(),
        }
    }

    /// The `[storage]` section with another endpoint (a front before this Garage).
    pub fn storage_toml_at(&self, endpoint: &str) -> String {
        self.storage_toml().replace(
            &format!("endpoint = \"{}\"", self.endpoint),
            &format!("endpoint = \"{endpoint}\""),
        )
    }

    pub fn storage_toml(&self) -> String {
        format!(
            "[storage]\nkind = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nregion = \"garage\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nmultipart_threshold = \"5MiB\"\npart_size = \"5MiB\"\n",
            self.bucket, self.endpoint, self.key_id, self.secret
        )
    }
}

/// s3s-fs, a second S3 implementation independent of Garage (the s3s protocol crate over a
/// folder), on loopback with a folder of this test's own and one bucket.
pub struct S3sFs {
    dir: tempfile::TempDir,
    child: Child,
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
}

impl S3sFs {
    pub fn start() -> S3sFs {
        let dir = tempfile::tempdir().unwrap();
        // A bucket is a folder under the root.
        std::fs::create_dir_all(dir.path().join("data/fms")).unwrap();
        let port = free_port();
        let (key_id, secret) = (format!("AK{}", hex(8)), hex(20));
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = installed_command("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &key_id, "--secret-key", &secret])
            .arg(dir.path().join("data"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start s3s-fs (installed by scripts/test.sh)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3sFs {
            dir,
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            key_id,
            secret,
        }
    }

    pub fn storage_toml(&self) -> String {
        format!(
            "[storage]\nkind = \"s3\"\nbucket = \"fms\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nmultipart_threshold = \"5MiB\"\npart_size = \"5MiB\"\n",
            self.endpoint, self.key_id, self.secret
        )
    }

    pub fn store(&self) -> ObjectStore {
        test_store("fms", &self.endpoint, "us-east-1", &self.key_id, &self.secret)
    }

    /// Objects as files in its folder, outside `files/` too (probe leftovers would show).
    pub fn stored_paths(&self) -> Vec<String> {
        let base = self.dir.path().join("data/fms");
        walkdir::WalkDir::new(&base)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_file())
            .map(|entry| entry.path().strip_prefix(&base).unwrap().display().to_string())
            .collect()
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The engine's own S3 client for a test server (5 MiB parts, the default checks).
pub fn test_store(bucket: &str, endpoint: &str, region: &str, key_id: &str, secret: &str) -> ObjectStore {
    ObjectStore::S3(S3Store::new(&S3Settings {
        bucket: bucket.into(),
        endpoint: Some(endpoint.into()),
        region: region.into(),
        path_style: true,
        access_key_id: key_id.into(),
        secret_access_key: secret.into(),
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        ca_pem: None,
        integrity: Default::default(),
        timeout: fms_actors::store::DEFAULT_REQUEST_TIMEOUT,
    }))
}

/// Error answers of one S3 API endpoint, whatever their status.
fn errors(metrics: &str, endpoint: &str) -> u64 {
    let prefix = format!("api_s3_error_counter{{api_endpoint=\"{endpoint}\",");
    metrics
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(_, value)| value.trim().parse::<u64>().unwrap())
        .sum()
}

fn metric(metrics: &str, endpoint: &str) -> u64 {
    let prefix = format!("api_s3_request_counter{{api_endpoint=\"{endpoint}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

pub use fms_corpus::ManifestEntry;

/// A sample NAS tree made by the project's own generator (`corpus/`), with its manifest;
/// `extra` are `fms-corpus` options (`["--large", "0"]`).
pub fn make_corpus(out: &Path, files: usize, extra: &[&str]) -> Vec<ManifestEntry> {
    let options = fms_corpus::Options::with_args(out, files, extra).expect("fms-corpus options");
    fms_corpus::generate(&options).expect("make the sample tree").manifest
}

/// The expected catalog of a manifest: path -> (size, sha256), ignored entries left out.
pub fn expected_files(manifest: &[ManifestEntry]) -> BTreeMap<String, (i64, String)> {
    manifest
        .iter()
        .filter(|m| !m.ignored)
        .map(|m| (m.path.clone(), (m.size, m.sha256.clone())))
        .collect()
}

/// A configuration file and the binary run with it.
pub struct Fms {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Fms {
    /// `roots` are (label, path); `extra` is appended to the file as it is.
    pub fn new(database: &Database, storage_toml: &str, roots: &[(&str, &Path)], extra: &str) -> Fms {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "agent = \"test\"\n[database]\nurl = \"{}\"\n{storage_toml}\n",
            database.url
        );
        for (label, path) in roots {
            text.push_str(&format!(
                "[[roots]]\nlabel = \"{label}\"\npath = \"{}\"\n",
                path.display()
            ));
        }
        text.push_str("[log]\nformat = \"json\"\nlevel = \"info\"\n");
        text.push_str(extra);
        let config = dir.path().join("filemetasync.toml");
        std::fs::write(&config, text).unwrap();
        Fms { dir, config }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command.arg("--config").arg(&self.config).args(args);
        for (key, _) in std::env::vars() {
            if key.starts_with("FMS_") {
                command.env_remove(key);
            }
        }
        command
    }

    /// `migrate`, so that a test can watch the catalog from the start.
    pub fn migrate(&self) {
        let output = self.run(&["migrate"]);
        assert!(
            output.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `scan --wait --json`, expecting `code`; returns the summary.
    pub fn scan(&self, code: i32) -> serde_json::Value {
        self.scan_with(&["scan", "--wait", "--json"], code)
    }

    pub fn scan_with(&self, args: &[&str], code: i32) -> serde_json::Value {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(code),
            "scan exit code\nstdout:\n{}\nstderr:\n{}",
            tail(&stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        summary_of(&stdout)
    }
}

/// A running `filemetasync`, killed if the test ends (or panics) before it exits.
pub struct Running(pub Option<Child>);

impl Running {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    pub fn take(&mut self) -> Child {
        self.0.take().expect("running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Fms {
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running(Some(
            self.command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    }
}

/// The pretty-printed JSON summary at the end of stdout (log lines come before it).
pub fn summary_of(stdout: &str) -> serde_json::Value {
    let start = stdout
        .rfind("\n{\n")
        .map(|i| i + 1)
        .or_else(|| stdout.starts_with("{\n").then_some(0));
    let start = start.unwrap_or_else(|| panic!("no summary in output:\n{}", tail(stdout)));
    let mut values = serde_json::Deserializer::from_str(&stdout[start..]).into_iter::<serde_json::Value>();
    match values.next() {
        Some(Ok(value)) => value,
        other => panic!("bad summary ({other:?}):\n{}", &stdout[start..]),
    }
}

/// The JSON log events with this message in a command's log (its stdout).
pub fn log_events(log: &[u8], message: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(log)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["msg"] == message)
        .collect()
}

pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Every object's bytes hash to the SHA-256 in its key; returns those hashes.
pub async fn assert_store_matches_keys(store: &ObjectStore) -> BTreeSet<String> {
    use futures::stream::{self, StreamExt};
    let keys = store.list_keys().await.unwrap();
    let checked: Vec<String> = stream::iter(keys)
        .map(|(key, size)| async move {
            let (sha256, read) = store.read_digest(&key).await.unwrap().expect("listed object exists");
            let from_key = &key["files/".len().."files/".len() + 64];
            assert_eq!(&sha256, from_key, "object {key} does not hash to its key");
            assert_eq!(read, size);
            sha256
        })
        .buffer_unordered(16)
        .collect()
        .await;
    checked.into_iter().collect()
}
