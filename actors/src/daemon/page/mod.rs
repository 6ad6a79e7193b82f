//! The operator's page on `http.listen`: overview, activity, search and history with version
//! download, behind a password. Server-rendered HTML (maud), no script needed.
//!
//! Page requests are answered by [`WORKERS`] threads of their own, each with its own catalog
//! connection, fed through a short queue by the accepting thread; `/healthz` and `/metrics`
//! never wait behind a page (a long download holds one worker only).

mod auth;
mod chart;
mod views;

pub use auth::{check_password_hash, hash_password, Login};
pub use chart::{RateHistory, SAMPLE_EVERY};

use super::http::{respond, Endpoint};
use super::supervisor::ActorState;
use super::Observed;
use crate::catalog::history::{glob_to_regex, FindQuery};
use crate::catalog::page::ActivityFilter;
use crate::scan::RootSpec;
use crate::store::ObjectStore;
use auth::{cookie, same_token, Attempts, Sessions, SESSION_COOKIE};
use maud::Markup;
use slog::{info, warn};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response};

/// Who may open the page (`http.password` or `password_hash`, `http.session_idle`).
#[derive(Clone, Debug, PartialEq)]
pub struct PageAccess {
    pub login: Login,
    pub session_idle: Duration,
    pub restore_folder: Option<std::path::PathBuf>,
}

/// What the page needs beyond the HTTP endpoint's settings.
#[derive(Clone)]
pub struct PageSettings {
    pub access: PageAccess,
    /// Where the page may restore versions (`http.restore_folder`); None: it may not.
    pub restore_folder: Option<std::path::PathBuf>,
    pub store: ObjectStore,
    pub roots: Vec<RootSpec>,
}

/// Threads that answer pages.
pub const WORKERS: usize = 2;
/// Page requests waiting for a worker; more are answered 503 at once.
pub const QUEUED: usize = 16;
/// Largest form body read.
const MAX_FORM: u64 = 16 << 10;
/// Waiting contents per root are counted up to this many (each needs a look at its files:
/// 10,000 took 200 ms in a catalog of a million files; the total is in the figures above).
const PENDING_CAP: i64 = 1_000;
/// Rows a search or the activity list shows.
const ROWS: i64 = 200;

/// Shared by the page workers.
pub struct Page {
    settings: PageSettings,
    sessions: Sessions,
    attempts: Attempts,
    pub history: Arc<RateHistory>,
    observed: Observed,
}

impl Page {
    pub fn new(settings: PageSettings, observed: Observed) -> Page {
        Page {
            sessions: Sessions::new(settings.access.session_idle),
            settings,
            attempts: Attempts::default(),
            history: Arc::default(),
            observed,
        }
    }
}

/// What a handler answers.
enum Answer {
    Html(u16, Markup),
    /// 303 to a path, with cookies to set.
    Redirect(String, Vec<String>),
    Text(u16, String),
    /// A downloaded, checked file: its temporary copy, the name to give it, its hash.
    File(tempfile::NamedTempFile, String, String),
}

/// Answer page requests until the queue closes.
pub(super) fn serve(
    page: Arc<Page>,
    mut endpoint: Endpoint,
    runtime: &tokio::runtime::Runtime,
    queue: crossbeam_channel::Receiver<Request>,
) {
    for mut request in queue {
        // A page that panics answers 500 and the thread goes on serving (the panic hook has
        // logged the message); the catalog connection is opened afresh.
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(handle(&page, &mut endpoint, &mut request))
        }))
        .unwrap_or_else(|_| {
            endpoint.forget_catalog();
            Answer::Text(500, "the page failed; the daemon's log says why\n".into())
        });
        send(request, answer, &endpoint.log);
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("header names and values are ASCII")
}

/// Headers on every page: nothing cached, framed, sniffed or sent on as a referrer, and no
/// script or style from anywhere but the page itself.
fn security_headers() -> Vec<Header> {
    vec![
        header("Cache-Control", "no-store"),
        header("X-Frame-Options", "DENY"),
        header("X-Content-Type-Options", "nosniff"),
        header("Referrer-Policy", "no-referrer"),
        header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    ]
}

fn with_headers<R: Read>(mut response: Response<R>, extra: Vec<Header>) -> Response<R> {
    for header in security_headers().into_iter().chain(extra) {
        response.add_header(header);
    }
    response
}

fn send(request: Request, answer: Answer, log: &slog::Logger) {
    let result = match answer {
        Answer::Html(status, markup) => request.respond(with_headers(
            Response::from_string(markup.into_string()).with_status_code(status),
            vec![header("Content-Type", "text/html; charset=utf-8")],
        )),
        Answer::Redirect(location, cookies) => {
            let mut extra = vec![header("Location", &location)];
            extra.extend(cookies.iter().map(|cookie| header("Set-Cookie", cookie)));
            request.respond(with_headers(Response::empty(303), extra))
        }
        Answer::Text(status, text) => {
            respond(request, status, "text/plain; charset=utf-8", text);
            Ok(())
        }
        Answer::File(file, name, sha256) => match file.reopen() {
            Ok(reader) => {
                let length = reader.metadata().map(|m| m.len() as usize).ok();
                let response = Response::new(200.into(), Vec::new(), reader, length, None);
                request.respond(with_headers(
                    response,
                    vec![
                        header("Content-Type", "application/octet-stream"),
                        header("Content-Disposition", &content_disposition(&name)),
                        header("X-Content-SHA256", &sha256),
                    ],
                ))
            }
            Err(error) => {
                respond(
                    request,
                    500,
                    "text/plain",
                    format!("cannot read the download back: {error}\n"),
                );
                Ok(())
            }
        },
    };
    if let Err(error) = result {
        slog::debug!(log, "page answer not sent"; "error" => error.to_string());
    }
}

/// `attachment` with an ASCII name and the UTF-8 one (RFC 6266).
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn session_cookie(token: &str, max_age: Option<u64>) -> String {
    let age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{age}")
}

fn pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

fn value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

async fn handle(page: &Page, endpoint: &mut Endpoint, request: &mut Request) -> Answer {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let query = pairs(query);
    let method = request.method().clone();
    let session = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Cookie"))
        .and_then(|h| cookie(h.value.as_str(), SESSION_COOKIE).map(str::to_owned))
        .and_then(|token| page.sessions.check(&token).map(|csrf| (token, csrf)));
    let form = if method == Method::Post {
        let mut body = String::new();
        if request.as_reader().take(MAX_FORM).read_to_string(&mut body).is_err() {
            return Answer::Text(400, "the form could not be read\n".into());
        }
        pairs(&body)
    } else {
        Vec::new()
    };
    match (&method, path) {
        (Method::Get, "/login") => return Answer::Html(200, views::login(None)),
        (Method::Post, "/login") => return login(page, endpoint, request, &form),
        _ => {}
    }
    let Some((token, csrf)) = session else {
        return match method {
            Method::Get => Answer::Html(401, views::login(Some("Log in to see this page."))),
            _ => Answer::Text(401, "log in first\n".into()),
        };
    };
    if method == Method::Post {
        if !value(&form, "csrf").is_some_and(|given| same_token(given, &csrf)) {
            warn!(endpoint.log, "page action refused: no valid CSRF token"; "path" => path);
            return Answer::Text(
                403,
                "refused: the form's token is missing or stale; reload the page\n".into(),
            );
        }
        return match path {
            "/logout" => {
                page.sessions.close(&token);
                Answer::Redirect("/login".into(), vec![session_cookie("", Some(0))])
            }
            "/retry" => retry(endpoint, &form).await,
            "/restore" => restore(page, endpoint, &form, &csrf).await,
            _ => Answer::Text(404, "no such action\n".into()),
        };
    }
    if method != Method::Get {
        return Answer::Text(405, "only GET and POST\n".into());
    }
    match path {
        "/" => Answer::Html(200, overview(page, endpoint, &query, &csrf).await),
        "/activity" => activity(endpoint, &query, &csrf).await,
        "/search" => search(endpoint, &query, &csrf).await,
        "/file" => file(page, endpoint, &query, &csrf).await,
        "/download" => download(page, endpoint, &query, &csrf).await,
        _ => Answer::Html(404, views::problem("Not found", "There is no such page.", Some(&csrf))),
    }
}

fn login(page: &Page, endpoint: &Endpoint, request: &Request, form: &[(String, String)]) -> Answer {
    let address = request
        .remote_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if !page.attempts.allow(address) {
        warn!(endpoint.log, "page login refused: too many attempts"; "address" => address.to_string());
        return Answer::Html(
            429,
            views::login(Some("Too many attempts: wait a minute before the next one.")),
        );
    }
    let given = form
        .iter()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !page.settings.access.login.accepts(given) {
        warn!(endpoint.log, "page login failed: wrong password"; "address" => address.to_string());
        return Answer::Html(401, views::login(Some("Wrong password.")));
    }
    let (token, _) = page.sessions.open();
    info!(endpoint.log, "page login"; "address" => address.to_string());
    Answer::Redirect("/".into(), vec![session_cookie(&token, None)])
}

async fn retry(endpoint: &mut Endpoint, form: &[(String, String)]) -> Answer {
    let target = value(form, "sha256").unwrap_or("").to_ascii_lowercase();
    let outcome = if target == "all" {
        endpoint
            .ask(async |catalog| catalog.retry_all_failed().await)
            .await
            .map(|n| format!("{n} failed uploads are back in the queue."))
    } else if is_sha256(&target) {
        endpoint
            .ask(async |catalog| catalog.retry_failed(&target).await)
            .await
            .map(|done| {
                if done {
                    format!("The upload of {}… is back in the queue.", &target[..16])
                } else {
                    format!("The upload of {}… was not failed (any more).", &target[..16])
                }
            })
    } else {
        return Answer::Text(400, "sha256 must be a content hash or \"all\"\n".into());
    };
    match outcome {
        Ok(message) => {
            info!(endpoint.log, "page retry"; "content" => &target, "outcome" => &message);
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("message", &message)
                .finish();
            Answer::Redirect(format!("/?{query}"), Vec::new())
        }
        Err(problem) => Answer::Text(503, format!("the catalog did not take the retry: {problem}\n")),
    }
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn overview(page: &Page, endpoint: &mut Endpoint, query: &[(String, String)], csrf: &str) -> Markup {
    let observed = &page.observed;
    let status = endpoint.ask(async |catalog| catalog.status().await).await;
    let totals = endpoint
        .ask(async |catalog| catalog.root_totals().await)
        .await
        .unwrap_or_default();
    let unavailable = observed
        .unavailable_roots
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut roots = Vec::new();
    for spec in &page.settings.roots {
        let label = spec.label.clone();
        let pending = endpoint
            .ask(async |catalog| catalog.pending_in_root(&label, PENDING_CAP).await)
            .await
            .ok();
        let last_scan = status.as_ref().ok().and_then(|status| {
            status
                .last_scans
                .iter()
                .find(|scan| scan.root == spec.label)
                .map(|scan| {
                    let at = scan.finished_at.as_deref().unwrap_or(&scan.started_at);
                    format!(
                        "{} UTC ({})",
                        at.get(..19).unwrap_or(at),
                        scan.outcome.as_deref().unwrap_or("running")
                    )
                })
        });
        roots.push(views::RootRow {
            unavailable: unavailable.get(&spec.label).cloned(),
            totals: totals
                .iter()
                .find(|t| t.root == spec.label)
                .cloned()
                .unwrap_or_default(),
            path: spec.path.display().to_string(),
            last_scan,
            pending,
            label,
        });
    }
    let actors = super::http::board_actors(observed);
    let samples = page.history.samples();
    let rate = chart::recent_rate(&samples, Duration::from_secs(600));
    let store = &page.settings.store;
    let integrity = status
        .as_ref()
        .ok()
        .and_then(|status| status.store_checks.first())
        .map(|check| format!("{} ({})", check.mode, check.reason))
        .unwrap_or_else(|| {
            let integrity = store.integrity();
            format!("{} ({})", integrity.mode, integrity.reason)
        });
    let state = overall_state(page, &status, &actors, &unavailable, rate);
    let view = views::Overview {
        state,
        roots,
        pending_cap: PENDING_CAP,
        actors,
        store: store.describe(),
        integrity,
        rate,
        chart: chart::svg(&samples),
        message: value(query, "message").map(str::to_owned),
        status,
    };
    views::overview(&view, csrf)
}

fn overall_state(
    page: &Page,
    status: &Result<crate::catalog::StatusReport, String>,
    actors: &[super::supervisor::ActorHealth],
    unavailable: &std::collections::BTreeMap<String, String>,
    rate: Option<f64>,
) -> views::OverallState {
    let bad = |text: String| views::OverallState { class: "bad", text };
    let status = match status {
        Ok(status) => status,
        Err(problem) => return bad(format!("Degraded: the catalog does not answer ({problem}).")),
    };
    if let Some(actor) = actors.iter().find(|a| a.state != ActorState::Running) {
        return bad(format!(
            "Degraded: {} is {}{}.",
            actor.actor,
            format!("{:?}", actor.state).to_lowercase(),
            actor.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
        ));
    }
    if let Some((root, why)) = unavailable.iter().next() {
        return bad(format!("Degraded: root {root} is unavailable ({why})."));
    }
    if status.queue.failed > 0 {
        return bad(format!(
            "Degraded: {} uploads failed; see below and retry once the cause is fixed.",
            status.queue.failed
        ));
    }
    let observed = &page.observed;
    let scanning = observed.scans.running.load(Ordering::Relaxed) > 0;
    let left_bytes = (status.content_bytes - status.uploaded_bytes).max(0);
    if status.queue.pending > 0 && observed.uploads.held.load(Ordering::Relaxed) > 0 {
        let window = observed.knobs.window().map(|w| w.describe()).unwrap_or_default();
        return views::OverallState {
            class: "held",
            text: format!(
                "Uploads held by the upload window {window}: {} contents waiting.",
                status.queue.pending
            ),
        };
    }
    if status.queue.pending > 0 || scanning {
        let estimate = match rate {
            Some(rate) if rate > 0.0 && left_bytes > 0 => {
                format!(
                    ", about {} at the current rate",
                    human_duration(left_bytes as f64 / rate)
                )
            }
            _ => String::new(),
        };
        return views::OverallState {
            class: "busy",
            text: format!(
                "Syncing{}: {} contents ({}) left to store{estimate}.",
                if scanning { " (a scan is running)" } else { "" },
                status.queue.pending,
                views::bytes(left_bytes)
            ),
        };
    }
    views::OverallState {
        class: "ok",
        text: format!(
            "In sync: {} files, {} stored.",
            status.files,
            views::bytes(status.uploaded_bytes)
        ),
    }
}

fn human_duration(seconds: f64) -> String {
    let seconds = seconds.round() as u64;
    match seconds {
        0..=89 => format!("{seconds} s"),
        90..=5399 => format!("{} min", seconds / 60),
        _ => format!("{:.1} h", seconds as f64 / 3600.0),
    }
}

async fn activity(endpoint: &mut Endpoint, query: &[(String, String)], csrf: &str) -> Answer {
    let filter = ActivityFilter {
        root: value(query, "root").map(str::to_owned),
        kind: value(query, "kind").map(str::to_owned),
        path: value(query, "path").map(str::to_owned),
        limit: ROWS,
    };
    let events = endpoint.ask(async |catalog| catalog.activity(&filter).await).await;
    let choices = endpoint
        .ask(async |catalog| catalog.search_choices().await)
        .await
        .unwrap_or_default();
    match events {
        Ok(events) => Answer::Html(200, views::activity(&events, &choices.roots, query, csrf)),
        Err(problem) => catalog_problem(&problem, csrf),
    }
}

fn catalog_problem(problem: &str, csrf: &str) -> Answer {
    Answer::Html(503, views::problem("The catalog did not answer", problem, Some(csrf)))
}

/// The search form's name field as a regular expression on file names (matched in any
/// case): a pattern with `*`, `?` or `[` as a glob, anything else as a part of the name.
fn name_pattern(name: &str) -> Result<String, String> {
    if name.contains(['*', '?', '[']) {
        glob_to_regex(name).ok_or_else(|| format!("{name:?} is not a pattern: a [ is not closed"))
    } else {
        let mut regex = String::new();
        for c in name.chars() {
            if "\\.^$+(){}|[]*?".contains(c) {
                regex.push('\\');
            }
            regex.push(c);
        }
        Ok(regex)
    }
}

async fn search(endpoint: &mut Endpoint, query: &[(String, String)], csrf: &str) -> Answer {
    let choices = match endpoint.ask(async |catalog| catalog.search_choices().await).await {
        Ok(choices) => choices,
        Err(problem) => return catalog_problem(&problem, csrf),
    };
    let asked = ["name", "root", "project", "building", "cost_group", "deleted"]
        .iter()
        .any(|key| value(query, key).is_some());
    let mut more = false;
    let found = if asked {
        Some(run_search(endpoint, query).await.map(|mut found| {
            more = found.len() as i64 > ROWS;
            found.truncate(ROWS as usize);
            found
        }))
    } else {
        None
    };
    let view = views::SearchView {
        choices: &choices,
        form: query,
        found,
        more,
    };
    Answer::Html(200, views::search(&view, csrf))
}

async fn run_search(
    endpoint: &mut Endpoint,
    query: &[(String, String)],
) -> Result<Vec<crate::catalog::history::Found>, String> {
    let cost_group = match value(query, "cost_group") {
        None => None,
        Some(text) => Some(
            text.parse::<i32>()
                .map_err(|_| format!("cost group {text:?} is not a number such as 300"))?,
        ),
    };
    let find = FindQuery {
        root: value(query, "root").map(str::to_owned),
        name_regex: value(query, "name").map(name_pattern).transpose()?,
        name_ignore_case: true,
        any_matches: true,
        project: value(query, "project").map(str::to_owned),
        building: value(query, "building").map(str::to_owned),
        cost_group,
        deleted: value(query, "deleted") == Some("1"),
        limit: ROWS + 1,
        ..FindQuery::default()
    };
    endpoint.ask(async |catalog| catalog.find(&find).await).await
}

async fn file(page: &Page, endpoint: &mut Endpoint, query: &[(String, String)], csrf: &str) -> Answer {
    let (Some(root), Some(path)) = (value(query, "root"), value(query, "path")) else {
        return Answer::Html(400, views::problem("Which file?", "Give root and path.", Some(csrf)));
    };
    match endpoint.ask(async |catalog| catalog.history(root, path).await).await {
        Ok(versions) => {
            let view = views::FileView {
                root,
                path,
                versions: &versions,
                restore_folder: page.settings.restore_folder.as_deref(),
                message: value(query, "message"),
            };
            Answer::Html(200, views::file(&view, csrf))
        }
        Err(problem) => catalog_problem(&problem, csrf),
    }
}

/// How long a download from the store may take, at least (plus a second per 4 MB).
const DOWNLOAD_BASE: Duration = Duration::from_secs(60);

/// A version fetched from the store into a temporary file (in `dir`, else the system's
/// temporary folder), hashed on the way; Err with the status and the reason unless its hash
/// and size are the catalog's.
async fn fetch_checked(
    page: &Page,
    endpoint: &mut Endpoint,
    sha256: &str,
    dir: Option<&std::path::Path>,
) -> Result<tempfile::NamedTempFile, (u16, String)> {
    if !is_sha256(sha256) {
        return Err((400, "sha256 must be a content hash".into()));
    }
    let location = match endpoint
        .ask(async |catalog| catalog.content_location(sha256).await)
        .await
    {
        Ok(Some(location)) => location,
        Ok(None) => return Err((404, "The catalog has no such content.".into())),
        Err(problem) => return Err((503, format!("The catalog did not answer: {problem}"))),
    };
    if location.purged {
        return Err((410, "Retention removed this version from the store.".into()));
    }
    if !location.stored {
        return Err((409, "This version is not stored yet.".into()));
    }
    let file = match dir {
        Some(dir) => tempfile::Builder::new().prefix(".fms-restore-").tempfile_in(dir),
        None => tempfile::NamedTempFile::new(),
    }
    .map_err(|error| (500, format!("cannot make a temporary file: {error}")))?;
    let limit = DOWNLOAD_BASE + Duration::from_secs(location.size.max(0) as u64 / (4 << 20));
    let key = &location.storage_key;
    match tokio::time::timeout(limit, page.settings.store.download(key, file.path())).await {
        Err(_) => Err((
            504,
            format!("The store did not deliver {key} within {} s.", limit.as_secs()),
        )),
        Ok(Err(error)) => Err((502, format!("The store refused the download: {error}"))),
        Ok(Ok(None)) => Err((
            502,
            format!("The store has no object {key} although the catalog says it is stored: run `filemetasync verify`."),
        )),
        Ok(Ok(Some((got, size)))) if got != sha256 || size != location.size as u64 => {
            warn!(endpoint.log, "page fetch refused: the store's bytes differ"; "key" => key, "sha256" => &got);
            Err((
                502,
                format!("The store's copy of {key} does not match its hash (it has {got}): nothing was used; run `filemetasync verify --deep`."),
            ))
        }
        Ok(Ok(Some(_))) => {
            info!(endpoint.log, "page fetch"; "key" => key, "bytes" => location.size);
            Ok(file)
        }
    }
}

/// A version, sent only when its hash is the one the catalog recorded.
async fn download(page: &Page, endpoint: &mut Endpoint, query: &[(String, String)], csrf: &str) -> Answer {
    let sha256 = value(query, "sha256").unwrap_or("").to_ascii_lowercase();
    let name = value(query, "name").unwrap_or(&sha256).to_owned();
    match fetch_checked(page, endpoint, &sha256, None).await {
        Ok(file) => Answer::File(file, name, sha256),
        Err((status, message)) => Answer::Html(status, views::problem("Download", &message, Some(csrf))),
    }
}

/// Where `path` of `root` goes under the restore folder, or why it may not: every part a
/// plain name (no `..`, nothing absolute).
fn restore_target(folder: &std::path::Path, root: &str, path: &str) -> Result<std::path::PathBuf, String> {
    use std::path::Component;
    let relative = std::path::Path::new(root).join(path);
    if relative.components().any(|part| !matches!(part, Component::Normal(_))) {
        return Err(format!("{root}/{path} is not a path inside a root"));
    }
    Ok(folder.join(relative))
}

/// A version written into `http.restore_folder`/ROOT/PATH, checked before it is put in
/// place, never over an existing file.
async fn restore(page: &Page, endpoint: &mut Endpoint, form: &[(String, String)], csrf: &str) -> Answer {
    let refuse = |status: u16, message: String| Answer::Html(status, views::problem("Restore", &message, Some(csrf)));
    let Some(folder) = page.settings.restore_folder.clone() else {
        return refuse(404, "Restoring from the page is off: set http.restore_folder.".into());
    };
    let (Some(root), Some(path), Some(sha256)) = (value(form, "root"), value(form, "path"), value(form, "sha256"))
    else {
        return refuse(400, "Give root, path and sha256.".into());
    };
    let target = match restore_target(&folder, root, path) {
        Ok(target) => target,
        Err(problem) => return refuse(400, problem),
    };
    let parent = target.parent().unwrap_or(&folder).to_path_buf();
    if let Err(error) = std::fs::create_dir_all(&parent) {
        return refuse(500, format!("cannot make the folder {}: {error}", parent.display()));
    }
    let file = match fetch_checked(page, endpoint, &sha256.to_ascii_lowercase(), Some(&parent)).await {
        Ok(file) => file,
        Err((status, message)) => return refuse(status, message),
    };
    let message = match file.persist_noclobber(&target) {
        Ok(_) => {
            info!(endpoint.log, "page restore"; "root" => root, "path" => path, "to" => target.display().to_string());
            format!("Restored to {}.", target.display())
        }
        Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => {
            format!(
                "{} already exists: nothing was written; move it away first.",
                target.display()
            )
        }
        Err(error) => return refuse(500, format!("cannot write {}: {}", target.display(), error.error)),
    };
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("root", root)
        .append_pair("path", path)
        .append_pair("message", &message)
        .finish();
    Answer::Redirect(format!("/file?{query}"), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_a_part_or_a_pattern() {
        assert_eq!(name_pattern("plan.pdf").unwrap(), "plan\\.pdf");
        assert_eq!(name_pattern("*.PDF").unwrap(), "^[^/]*\\.PDF$");
        assert!(name_pattern("[abc").is_err());
    }

    #[test]
    fn a_restore_stays_inside_its_folder() {
        let folder = std::path::Path::new("/restore");
        assert_eq!(
            restore_target(folder, "docs", "Projekte/a.pdf").unwrap(),
            std::path::Path::new("/restore/docs/Projekte/a.pdf")
        );
        assert!(restore_target(folder, "docs", "../../etc/passwd").is_err());
        assert!(restore_target(folder, "docs", "/etc/passwd").is_err());
        assert!(restore_target(folder, "..", "a").is_err());
    }

    #[test]
    fn a_download_keeps_its_name_in_both_forms() {
        assert_eq!(
            content_disposition("Grundriss Ä.pdf"),
            "attachment; filename=\"Grundriss _.pdf\"; filename*=UTF-8''Grundriss%20%C3%84%2Epdf"
        );
        assert_eq!(human_duration(30.0), "30 s");
        assert_eq!(human_duration(600.0), "10 min");
        assert_eq!(human_duration(7200.0), "2.0 h");
    }
}
