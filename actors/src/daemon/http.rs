//! `http.listen`: `/healthz` and `/metrics` (tiny_http), on three plain threads so that none
//! waits behind another:
//!
//! * `http` accepts and answers `/healthz` at once, from the actors' board and the catalog's
//!   last known state; it never asks PostgreSQL itself;
//! * `heartbeat` pings the catalog every second (that is the catalog's state for `/healthz`)
//!   and writes the process's heartbeat, with every actor's state, into `agent_processes`
//!   every few seconds, which is what `filemetasync status` shows;
//! * `metrics` answers scrapes, with the catalog's running totals, on its own connection;
//! * with `http.password` set, `page-1` and `page-2` answer the operator's page ([`super::page`]).

use super::supervisor::{ActorHealth, ActorState};
use super::Observed;
use crate::catalog::{Catalog, StatusReport, Target};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use slog::{info, warn, Logger};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct HttpSettings {
    pub listen: SocketAddr,
    pub database: Target,
    pub agent: String,
    pub role: &'static str,
    /// The operator's page; None: off.
    pub page: Option<super::page::PageSettings>,
}

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How often the heartbeat thread asks the catalog whether it answers.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// The catalog gets this long to answer a ping or a scrape.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(3);
/// A catalog state older than this is itself a problem (the heartbeat thread is stuck).
const CATALOG_STATE_STALE: Duration = Duration::from_secs(10);
/// Scrapes waiting for the metrics thread; more are answered 503 at once.
const SCRAPES_QUEUED: usize = 4;

/// What the heartbeat thread last learnt of the catalog, for `/healthz`.
struct CatalogState {
    checked_at: Instant,
    problem: Option<String>,
}

type SharedCatalogState = Arc<std::sync::Mutex<CatalogState>>;

/// Bind now (so that a taken port is a clear error at start), serve until `stop` is set.
/// The handle returned ends after the last heartbeat (marked stopped) is written.
pub fn spawn(
    settings: HttpSettings,
    observed: Observed,
    stop: Arc<AtomicBool>,
    log: Logger,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let server = tiny_http::Server::http(settings.listen)
        .map_err(|error| std::io::Error::other(format!("cannot listen on {}: {error}", settings.listen)))?;
    let page = settings
        .page
        .clone()
        .map(|page| Arc::new(super::page::Page::new(page, observed.clone())));
    info!(log, "http listening"; "address" => settings.listen.to_string(), "paths" => "/healthz /metrics",
        "page" => if page.is_some() { "on (login required)" } else { "off (no http.password)" });
    let settings = Arc::new(settings);
    let catalog_state: SharedCatalogState = Arc::new(std::sync::Mutex::new(CatalogState {
        checked_at: Instant::now(),
        problem: None,
    }));
    let endpoint = |name: &str| Endpoint {
        settings: settings.clone(),
        observed: observed.clone(),
        catalog: None,
        log: log.new(slog::o!("thread" => name.to_owned())),
    };
    let history = page.as_ref().map(|page| page.history.clone());
    let heartbeat = spawn_with_runtime("heartbeat", endpoint("heartbeat"), {
        let (stop, catalog_state) = (stop.clone(), catalog_state.clone());
        move |endpoint, runtime| heartbeat_loop(endpoint, runtime, &stop, &catalog_state, history)
    })?;
    let mut page_workers = Vec::new();
    let pages = match page {
        None => None,
        Some(page) => {
            let (pages, page_queue) = crossbeam_channel::bounded::<tiny_http::Request>(super::page::QUEUED);
            for n in 1..=super::page::WORKERS {
                let (page, queue) = (page.clone(), page_queue.clone());
                page_workers.push(spawn_with_runtime(
                    &format!("page-{n}"),
                    endpoint("page"),
                    move |endpoint, runtime| super::page::serve(page, endpoint, runtime, queue),
                )?);
            }
            Some(pages)
        }
    };
    let (scrapes, scrape_queue) = crossbeam_channel::bounded::<tiny_http::Request>(SCRAPES_QUEUED);
    let metrics = spawn_with_runtime("metrics", endpoint("metrics"), move |mut endpoint, runtime| {
        for request in scrape_queue {
            let body = runtime.block_on(endpoint.metrics());
            respond(request, 200, "text/plain; version=0.0.4; charset=utf-8", body);
        }
    })?;
    std::thread::Builder::new().name("http".into()).spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match server.recv_timeout(Duration::from_millis(250)) {
                Ok(Some(request)) => route(request, &observed, &catalog_state, &scrapes, pages.as_ref()),
                Ok(None) => {}
                Err(error) => warn!(log, "http accept failed"; "error" => error.to_string()),
            }
        }
        drop(scrapes);
        drop(pages);
        for worker in page_workers {
            let _ = worker.join();
        }
        let _ = metrics.join();
        let _ = heartbeat.join();
    })
}

/// A thread with a current-thread runtime of its own.
fn spawn_with_runtime(
    name: &str,
    endpoint: Endpoint,
    work: impl FnOnce(Endpoint, &tokio::runtime::Runtime) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => work(endpoint, &runtime),
            Err(error) => warn!(endpoint.log, "cannot start a runtime"; "error" => error.to_string()),
        }
    })
}

fn heartbeat_loop(
    mut endpoint: Endpoint,
    runtime: &tokio::runtime::Runtime,
    stop: &AtomicBool,
    state: &SharedCatalogState,
    history: Option<Arc<super::page::RateHistory>>,
) {
    let mut last_sample: Option<Instant> = None;
    // The first heartbeat once the actors have had a moment to report in.
    let mut last_heartbeat = Instant::now().checked_sub(HEARTBEAT_INTERVAL - Duration::from_secs(1));
    while !stop.load(Ordering::SeqCst) {
        let problem = runtime
            .block_on(endpoint.ask(async |catalog| catalog.ping().await))
            .err();
        *state.lock().unwrap_or_else(|e| e.into_inner()) = CatalogState {
            checked_at: Instant::now(),
            problem,
        };
        if last_heartbeat.is_none_or(|at| at.elapsed() >= HEARTBEAT_INTERVAL) {
            runtime.block_on(endpoint.heartbeat(false));
            last_heartbeat = Some(Instant::now());
        }
        if let Some(history) = &history {
            if last_sample.is_none_or(|at| at.elapsed() >= super::page::SAMPLE_EVERY) {
                let pending = runtime
                    .block_on(endpoint.ask(async |catalog| catalog.queue_counts().await))
                    .ok()
                    .map(|queue| queue.pending);
                history.record(
                    endpoint.observed.uploads.uploaded_bytes.load(Ordering::Relaxed),
                    pending,
                );
                last_sample = Some(Instant::now());
            }
        }
        let next = Instant::now() + PING_INTERVAL;
        while !stop.load(Ordering::SeqCst) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    runtime.block_on(endpoint.heartbeat(true));
}

fn route(
    request: tiny_http::Request,
    observed: &Observed,
    state: &SharedCatalogState,
    scrapes: &crossbeam_channel::Sender<tiny_http::Request>,
    pages: Option<&crossbeam_channel::Sender<tiny_http::Request>>,
) {
    let path = request.url().split('?').next().unwrap_or("").to_owned();
    match path.as_str() {
        "/healthz" => {
            let (status, body) = health(observed, state);
            respond(request, status, "text/plain", body);
        }
        "/metrics" => {
            hand_over(scrapes, request, "busy: earlier scrapes are still being answered\n");
        }
        _ => match pages {
            Some(pages) => hand_over(
                pages,
                request,
                "busy: the page is answering other requests; try again in a moment\n",
            ),
            None => respond(
                request,
                404,
                "text/plain",
                "not found: try /healthz or /metrics (the operator's page is off: set http.password)\n".into(),
            ),
        },
    }
}

/// Give `request` to the thread behind `queue`, or answer 503 with `busy` at once when its
/// queue is full (or the thread is gone): the accepting thread never waits.
fn hand_over(queue: &crossbeam_channel::Sender<tiny_http::Request>, request: tiny_http::Request, busy: &str) {
    if let Err(
        crossbeam_channel::TrySendError::Full(request) | crossbeam_channel::TrySendError::Disconnected(request),
    ) = queue.try_send(request)
    {
        respond(request, 503, "text/plain", busy.to_owned());
    }
}

pub(super) fn respond(request: tiny_http::Request, status: u16, content_type: &str, body: String) {
    let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("static header is valid");
    let response = tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header);
    let _ = request.respond(response);
}

pub(super) fn board_actors(observed: &Observed) -> Vec<ActorHealth> {
    let board = observed.board.lock().unwrap_or_else(|e| e.into_inner());
    board.values().cloned().collect()
}

/// 200 only while every actor runs and the catalog answered its last ping; the body says
/// what does not. Asks nothing of PostgreSQL.
fn health(observed: &Observed, state: &SharedCatalogState) -> (u16, String) {
    let mut problems: Vec<String> = board_actors(observed)
        .into_iter()
        .filter(|actor| actor.state != ActorState::Running)
        .map(|actor| {
            format!(
                "{}: {:?}{}",
                actor.actor,
                actor.state,
                actor.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            )
        })
        .collect();
    for (root, reason) in observed
        .unavailable_roots
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        problems.push(format!("root {root}: unavailable ({reason})"));
    }
    {
        let state = state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(problem) = &state.problem {
            problems.push(format!("catalog: unreachable ({problem})"));
        } else if state.checked_at.elapsed() > CATALOG_STATE_STALE {
            problems.push(format!(
                "catalog: no answer for {} s",
                state.checked_at.elapsed().as_secs()
            ));
        }
    }
    if problems.is_empty() {
        (200, "ok\n".to_owned())
    } else {
        (503, problems.join("\n") + "\n")
    }
}

pub(super) struct Endpoint {
    settings: Arc<HttpSettings>,
    observed: Observed,
    catalog: Option<Catalog>,
    pub(super) log: Logger,
}

impl Endpoint {
    /// The catalog connection, opened on first use and after a failure.
    async fn catalog(&mut self) -> Result<&Catalog, String> {
        if self.catalog.is_none() {
            let connect = Catalog::connect(&self.settings.database, &self.settings.agent);
            let catalog = tokio::time::timeout(CATALOG_TIMEOUT, connect)
                .await
                .map_err(|_| "no answer from PostgreSQL".to_owned())?
                .map_err(|error| error.detail())?;
            self.catalog = Some(catalog);
        }
        Ok(self.catalog.as_ref().expect("just set"))
    }

    /// Run `query` on the catalog with a timeout; a failure drops the connection, so the
    /// next use reconnects.
    pub(super) async fn ask<T>(
        &mut self,
        query: impl AsyncFnOnce(&Catalog) -> Result<T, crate::catalog::CatalogError>,
    ) -> Result<T, String> {
        let result = match self.catalog().await {
            Ok(catalog) => match tokio::time::timeout(CATALOG_TIMEOUT, query(catalog)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(error.detail()),
                Err(_) => Err("no answer from PostgreSQL".to_owned()),
            },
            Err(error) => Err(error),
        };
        if result.is_err() {
            self.catalog = None;
        }
        result
    }

    /// Drop the catalog connection; the next use opens a new one.
    pub(super) fn forget_catalog(&mut self) {
        self.catalog = None;
    }

    fn actors(&self) -> Vec<ActorHealth> {
        board_actors(&self.observed)
    }

    async fn heartbeat(&mut self, stopped: bool) {
        let mut actors = serde_json::to_value(self.actors()).unwrap_or_default();
        // Unavailable roots ride along, so that `status` shows them with the actors.
        if let Some(list) = actors.as_array_mut() {
            for (root, reason) in self
                .observed
                .unavailable_roots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                list.push(serde_json::json!({"actor": format!("root {root}"), "state": "unavailable", "restarts": 0, "reason": reason}));
            }
        }
        let role = self.settings.role;
        if let Err(error) = self
            .ask(async |catalog| catalog.heartbeat(role, &actors, stopped).await)
            .await
        {
            // The actors that need the catalog report its loss themselves; this is only a
            // missed heartbeat.
            slog::debug!(self.log, "heartbeat not written"; "error" => error);
        }
    }

    async fn metrics(&mut self) -> String {
        let totals = self.ask(async |catalog| catalog.status().await).await;
        let mut registry = Registry::with_prefix("fms");
        self.register_process(&mut registry);
        register_catalog(&mut registry, totals.as_ref().ok());
        let mut text = String::new();
        if encode(&mut text, &registry).is_err() {
            return "# encoding failed\n".to_owned();
        }
        text
    }

    fn register_process(&self, registry: &mut Registry) {
        let observed = &self.observed;
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
            registry.register(name, help, ConstCounter::new(value));
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
            registry.register(name, help, ConstGauge::new(value));
        };
        counter(
            registry,
            "files_walked",
            "Files and folders seen by scan walks",
            load(&observed.progress.walked),
        );
        counter(
            registry,
            "files_hashed",
            "Files hashed by this process",
            load(&observed.hashing.files),
        );
        counter(
            registry,
            "bytes_hashed",
            "Bytes hashed by this process",
            load(&observed.hashing.bytes),
        );
        let uploads = &observed.uploads;
        counter(
            registry,
            "uploads",
            "Contents stored by this process",
            load(&uploads.uploaded),
        );
        counter(
            registry,
            "uploaded_bytes",
            "Bytes stored by this process",
            load(&uploads.uploaded_bytes),
        );
        counter(
            registry,
            "uploads_skipped_existing",
            "Uploads skipped because the store had the object",
            load(&uploads.skipped_existing),
        );
        gauge(
            registry,
            "upload_in_flight_limit",
            "Slots of uploads allowed in flight now, adapted to the store's latency (a small upload takes one, a large one four)",
            load(&uploads.in_flight_limit) as i64,
        );
        gauge(
            registry,
            "upload_in_flight_peak",
            "The most uploads that were in flight at once since this process started",
            load(&uploads.in_flight_peak) as i64,
        );
        counter(
            registry,
            "upload_failures",
            "Failed upload attempts",
            load(&uploads.failed_attempts),
        );
        counter(
            registry,
            "uploads_given_up",
            "Contents marked failed after their last attempt",
            load(&uploads.failed_final),
        );
        let exports = &observed.exports;
        counter(
            registry,
            "catalog_exports",
            "Catalog exports written into the store",
            load(&exports.exported),
        );
        counter(
            registry,
            "catalog_export_failures",
            "Scheduled catalog exports that failed",
            load(&exports.failed),
        );
        gauge(
            registry,
            "catalog_export_last_bytes",
            "Size of the last catalog export (compressed)",
            load(&exports.last_bytes) as i64,
        );
        gauge(
            registry,
            "catalog_export_last_timestamp_seconds",
            "When the last catalog export was written (Unix time; 0: none yet)",
            load(&exports.last_unix) as i64,
        );
        let gc = &observed.gc;
        counter(registry, "gc_runs", "Scheduled retention runs finished", load(&gc.runs));
        counter(
            registry,
            "gc_failures",
            "Scheduled retention runs that failed",
            load(&gc.failed),
        );
        counter(
            registry,
            "gc_marked",
            "Contents marked by retention (no live file holds them, the policy lets them go)",
            load(&gc.progress.marked),
        );
        counter(
            registry,
            "gc_purged",
            "Objects deleted from the store by retention",
            load(&gc.progress.purged),
        );
        counter(
            registry,
            "gc_reclaimed_bytes",
            "Bytes deleted from the store by retention",
            load(&gc.progress.reclaimed_bytes),
        );
        let scans = &observed.scans;
        counter(registry, "scans_started", "Scans started", load(&scans.started));
        counter(
            registry,
            "scans_failed",
            "Scans cut short by a catalog failure",
            load(&scans.failed),
        );
        counter(
            registry,
            "scans_skipped_overlap",
            "Scheduled scans skipped because one was running",
            load(&scans.skipped_overlap),
        );
        gauge(
            registry,
            "scan_running",
            "1 while a scan runs",
            load(&scans.running) as i64,
        );
        registry.register(
            "last_scan_duration_seconds",
            "Duration of the last finished scan",
            ConstGauge::new(load(&scans.last_duration_ms) as f64 / 1000.0),
        );
        gauge(
            registry,
            "roots_unavailable",
            "Roots the last scan found missing or unmounted",
            load(&scans.roots_unavailable) as i64,
        );
        gauge(
            registry,
            "roots_unavailable_watch",
            "Roots the watcher finds missing or unmounted now",
            observed.unavailable_roots.lock().map(|roots| roots.len()).unwrap_or(0) as i64,
        );
        counter(
            registry,
            "paths_synced",
            "Paths reconciled one by one for the watcher",
            load(&scans.paths_synced),
        );
        gauge(
            registry,
            "hashers",
            "Hasher actors in the pool",
            observed.hashers.load(Ordering::Relaxed) as i64,
        );
        let knobs = &observed.knobs;
        gauge(
            registry,
            "upload_concurrency",
            "Transfers at once (upload.concurrency)",
            knobs.concurrency() as i64,
        );
        gauge(
            registry,
            "upload_bandwidth_limit_bytes",
            "upload.bandwidth_limit in bytes per second; 0: none",
            knobs.limiter.limit() as i64,
        );
        gauge(
            registry,
            "uploads_held",
            "1 while the upload window holds new uploads back",
            load(&uploads.held) as i64,
        );
        let restarts = Family::<Vec<(String, String)>, prometheus_client::metrics::counter::Counter>::default();
        let up = Family::<Vec<(String, String)>, Gauge>::default();
        for actor in self.actors() {
            let labels = vec![("actor".to_owned(), actor.actor.clone())];
            restarts.get_or_create(&labels).inc_by(actor.restarts);
            up.get_or_create(&labels)
                .set(i64::from(actor.state == ActorState::Running));
        }
        registry.register(
            "actor_restarts",
            "Restarts of each actor since the daemon started",
            restarts,
        );
        registry.register("actor_up", "1 while the actor runs", up);
    }
}

fn register_catalog(registry: &mut Registry, totals: Option<&StatusReport>) {
    registry.register(
        "catalog_up",
        "1 when the catalog answered this scrape",
        ConstGauge::new(i64::from(totals.is_some())),
    );
    let Some(totals) = totals else { return };
    let gauges: [(&str, &str, i64); 9] = [
        ("files", "Live files in the catalog", totals.files),
        (
            "files_deleted",
            "Soft-deleted files in the catalog",
            totals.deleted_files,
        ),
        ("contents", "Distinct contents in the catalog", totals.contents),
        ("content_bytes", "Bytes of all distinct contents", totals.content_bytes),
        (
            "contents_uploaded",
            "Contents stored in the object store",
            totals.uploaded_contents,
        ),
        (
            "contents_uploaded_bytes",
            "Bytes of the stored contents",
            totals.uploaded_bytes,
        ),
        ("queue_pending", "Contents waiting for upload", totals.queue.pending),
        ("queue_leased", "Contents being uploaded now", totals.queue.leased),
        ("queue_failed", "Contents whose upload gave up", totals.queue.failed),
    ];
    for (name, help, value) in gauges {
        registry.register(name, help, ConstGauge::new(value));
    }
}
