//! Running `filemetasync run` in a test: its JSON log stream captured to a file that the test
//! reads while it runs, its HTTP endpoint, SIGTERM, and a PostgreSQL cluster of the test's
//! own that it may stop and start.

use super::{free_port, Fms};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
    pub port: u16,
}

/// The `[http]` section for a daemon on a free port, and the port.
pub fn http_section() -> (String, u16) {
    let port = free_port();
    (format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"), port)
}

impl Fms {
    /// `run` with `args`, `env` added; its log goes to a file of its own.
    pub fn start_daemon(&self, port: u16, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = self
            .dir
            .path()
            .join(format!("daemon-{port}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = self.command(&["run"]);
        command.args(args).stdout(file).stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let daemon = Daemon {
            child: Some(command.spawn().unwrap()),
            log,
            port,
        };
        daemon.wait_until("the daemon answers /healthz", Duration::from_secs(60), || {
            daemon.http("/healthz").is_some()
        });
        daemon
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Every JSON line logged so far.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The events with this message.
    pub fn events_named(&self, message: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["msg"] == message)
            .collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `condition` every 100 ms; panics with the log's tail after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}\nlog tail:\n{}",
                super::tail(&self.log_text())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `wait_until` for a condition that queries the catalog (or anything else async).
    pub async fn wait_for(&self, what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}\nlog tail:\n{}",
                super::tail(&self.log_text())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (status, body) of a GET, or None if nothing answers.
    pub fn http(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// A sample of `/metrics`: the value of the series named exactly `series`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.http("/metrics")?;
        body.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// SIGTERM, then wait for the exit: (exit code, how long it took).
    pub fn terminate(mut self) -> (Option<i32>, Duration) {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return (None, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A PostgreSQL cluster of one test's own (the shared one must not be stopped), from the
/// installed server binaries, run as the postgres user when the tests run as root.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::start_with(|_| {})
    }

    /// Start a new cluster; `configure` edits its data directory before the first start.
    pub fn start_with(configure: impl FnOnce(&Path)) -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(Result::ok)
                    .map(|entry| entry.path().join("bin"))
                    .find(|bin| bin.join("initdb").exists())
            })
            .expect("PostgreSQL server binaries under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        let postgres = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
        };
        if is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(postgres.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let data = postgres.data();
        postgres.pg(
            &postgres.bin.join("initdb"),
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        configure(Path::new(&data));
        postgres.start_server();
        postgres
    }

    /// A cluster that speaks TLS with this certificate and key, and refuses every TCP
    /// connection without it (its unix socket, in `socket_url`, stays open for the test).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> PrivatePostgres {
        PrivatePostgres::start_with(|data| {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let owner = std::fs::metadata(data).unwrap();
            for (name, text, mode) in [("server.crt", cert_pem, 0o644), ("server.key", key_pem, 0o600)] {
                let path = data.join(name);
                std::fs::write(&path, text).unwrap();
                std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            writeln!(
                conf,
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
            )
            .unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostnossl all all 0.0.0.0/0 reject\n\
                 hostnossl all all ::/0 reject\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostssl all all ::1/128 trust\n",
            )
            .unwrap();
        })
    }

    /// The superuser over the cluster's unix socket (no TLS there).
    pub fn socket_url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `program` as the user that owns the cluster.
    fn as_owner(program: &Path) -> Command {
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn pg(&self, program: &Path, args: &[&str]) {
        let output = Self::as_owner(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn start_server(&self) {
        let options = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let data = self.data();
        self.pg(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-l", &log, "-w", "-o", &options, "start"],
        );
    }

    pub fn stop_server(&self) {
        let data = self.data();
        self.pg(&self.bin.join("pg_ctl"), &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = Self::as_owner(&self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}
