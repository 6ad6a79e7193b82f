//! The pages, rendered by the server (maud escapes every value it inserts).

use crate::catalog::history::Found;
use crate::catalog::page::{ActivityEvent, RootTotals, SearchChoices};
use crate::catalog::{HistoryEntry, StatusReport};
use crate::daemon::supervisor::{ActorHealth, ActorState};
use maud::{html, Markup, PreEscaped, DOCTYPE};

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1c2430;background:#f4f6f8}
header{background:#1f3a5f;color:#fff;padding:.6em 1.2em;display:flex;gap:1.4em;align-items:center}
header a{color:#fff;text-decoration:none}header a.here{text-decoration:underline}
header form{margin-left:auto}main{padding:1em 1.2em;max-width:1200px}
table{border-collapse:collapse;background:#fff;margin:.4em 0 1.2em;width:100%}
th,td{border-bottom:1px solid #dde3ea;padding:.3em .6em;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}
.state{font-size:1.3em;padding:.6em .9em;border-radius:6px;margin:.4em 0 1em;background:#fff}
.ok{border-left:8px solid #2e8b57}.busy{border-left:8px solid #2f6fb3}.held{border-left:8px solid #c9a227}
.bad{border-left:8px solid #c0392b}.muted{color:#667}.error{color:#c0392b}
.figures{display:flex;flex-wrap:wrap;gap:.8em}.figure{background:#fff;padding:.5em .9em;border-radius:6px}
.figure b{display:block;font-size:1.4em}.chart rect.rate{fill:#2f6fb3}
.chart polyline.pending{fill:none;stroke:#c0392b;stroke-width:1.5}.chart text{font-size:10px;fill:#445}
.chart{background:#fff;border-radius:6px}form.inline{display:inline}
input,select,button{font:inherit}fieldset{border:0;padding:0;display:flex;flex-wrap:wrap;gap:.6em;align-items:end}
label{display:flex;flex-direction:column;font-size:12px;color:#445}.message{background:#e8f3ec;padding:.5em .8em}
";

/// Bytes as a person reads them (KB = 1000 bytes).
pub fn bytes(value: i64) -> String {
    bytesize::ByteSize::b(value.max(0) as u64).display().si().to_string()
}

/// An integer with thin spaces between thousands.
pub fn count(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(digit);
    }
    if value < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A form or query field as given ("" when absent), to fill a form in again.
fn field<'a>(form: &'a [(String, String)], key: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Which page the navigation marks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Activity,
    Search,
    None,
}

/// Every page: the navigation (with the log-out action) around `body`.
pub fn layout(title: &str, tab: Tab, csrf: Option<&str>, body: Markup) -> Markup {
    let link = |href: &str, name: &str, this: Tab| {
        html! { a href=(href) class=[(tab == this).then_some("here")] { (name) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · FileMetadataSync" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "FileMetadataSync" }
                    @if let Some(csrf) = csrf {
                        (link("/", "Overview", Tab::Overview))
                        (link("/activity", "Activity", Tab::Activity))
                        (link("/search", "Search", Tab::Search))
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" id="logout" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn login(problem: Option<&str>) -> Markup {
    layout(
        "Log in",
        Tab::None,
        None,
        html! {
            h1 { "Log in" }
            @if let Some(problem) = problem { p.error id="problem" { (problem) } }
            form method="post" action="/login" {
                fieldset {
                    label { "Password" input type="password" name="password" id="password" autofocus required; }
                    button type="submit" id="login" { "Log in" }
                }
            }
        },
    )
}

/// One root as the overview shows it.
pub struct RootRow {
    pub label: String,
    pub path: String,
    /// None: available; else why not.
    pub unavailable: Option<String>,
    pub totals: RootTotals,
    pub last_scan: Option<String>,
    pub pending: Option<i64>,
}

/// The overall state, in one line.
pub struct OverallState {
    /// ok | busy | held | bad
    pub class: &'static str,
    pub text: String,
}

pub struct Overview {
    pub state: OverallState,
    pub status: Result<StatusReport, String>,
    pub roots: Vec<RootRow>,
    pub pending_cap: i64,
    pub actors: Vec<ActorHealth>,
    pub store: String,
    pub integrity: String,
    pub rate: Option<f64>,
    pub chart: Markup,
    pub message: Option<String>,
}

pub fn overview(view: &Overview, csrf: &str) -> Markup {
    let figure = |name: &str, id: &str, value: i64| {
        html! { div.figure { (name) b data-figure=(id) { (count(value)) } } }
    };
    layout(
        "Overview",
        Tab::Overview,
        Some(csrf),
        html! {
            meta http-equiv="refresh" content="30";
            div class={"state " (view.state.class)} id="state" { (view.state.text) }
            @if let Some(message) = &view.message { p.message id="message" { (message) } }
            @match &view.status {
                Err(problem) => p.error { "The catalog did not answer: " (problem) },
                Ok(status) => {
                    div.figures {
                        (figure("Files", "files", status.files))
                        (figure("Deleted files", "deleted_files", status.deleted_files))
                        (figure("Contents", "contents", status.contents))
                        (figure("Stored contents", "uploaded_contents", status.uploaded_contents))
                        (figure("Waiting for upload", "queue_pending", status.queue.pending))
                        (figure("Uploading now", "queue_leased", status.queue.leased))
                        (figure("Failed uploads", "queue_failed", status.queue.failed))
                        div.figure { "Stored" b data-figure="uploaded_bytes" { (bytes(status.uploaded_bytes)) } }
                        div.figure { "Upload rate (10 min)" b { (view.rate.map(|r| format!("{}/s", bytes(r as i64))).unwrap_or_else(|| "–".into())) } }
                    }
                }
            }
            h2 { "Last hours" }
            (view.chart)
            h2 { "Roots" }
            table id="roots" {
                tr { th { "Root" } th { "Folder" } th { "Available" } th.n { "Files" } th.n { "Bytes" } th { "Last scan" } th.n { "Waiting" } }
                @for root in &view.roots {
                    tr {
                        td { (root.label) } td { code { (root.path) } }
                        td { @match &root.unavailable { None => "yes", Some(why) => span.error { "no: " (why) } } }
                        td.n { (count(root.totals.files)) } td.n { (bytes(root.totals.bytes)) }
                        td { (root.last_scan.as_deref().unwrap_or("never")) }
                        td.n { @match root.pending {
                            Some(n) if n >= view.pending_cap => { "≥ " (count(n)) }
                            Some(n) => (count(n)),
                            None => "–",
                        } }
                    }
                }
            }
            @if let Ok(status) = &view.status {
                h2 { "Failed uploads" }
                @if status.failed_uploads.is_empty() {
                    p.muted { "None." }
                } @else {
                    form.inline method="post" action="/retry" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="sha256" value="all";
                        button type="submit" id="retry-all" { "Retry all" }
                    }
                    table id="failed" {
                        tr { th { "Content" } th.n { "Attempts" } th { "Last error" } th {} }
                        @for failed in &status.failed_uploads {
                            tr {
                                td { code { (failed.sha256[..16.min(failed.sha256.len())]) "…" } }
                                td.n { (failed.attempts) }
                                td { (failed.last_error.as_deref().unwrap_or("")) }
                                td {
                                    form.inline method="post" action="/retry" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="sha256" value=(failed.sha256);
                                        button type="submit" class="retry" data-sha256=(failed.sha256) { "Retry" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Actors" }
            table id="actors" {
                tr { th { "Actor" } th { "State" } th.n { "Restarts" } th { "Last failure" } }
                @for actor in &view.actors {
                    tr {
                        td { (actor.actor) }
                        td { @if actor.state == ActorState::Running { "running" } @else { span.error { (format!("{:?}", actor.state).to_lowercase()) } } }
                        td.n { (actor.restarts) }
                        td { (actor.reason.as_deref().unwrap_or("")) }
                    }
                }
            }
            h2 { "Store" }
            p { (view.store) br; "Integrity: " span id="integrity" { (view.integrity) } }
        },
    )
}

pub fn activity(events: &[ActivityEvent], roots: &[String], form: &[(String, String)], csrf: &str) -> Markup {
    let value = |key: &str| field(form, key);
    layout(
        "Activity",
        Tab::Activity,
        Some(csrf),
        html! {
            h1 { "Activity" }
            form method="get" action="/activity" {
                fieldset {
                    label { "Root" select name="root" {
                        option value="" { "all" }
                        @for root in roots { option value=(root) selected[value("root") == root] { (root) } }
                    } }
                    label { "Kind" select name="kind" {
                        option value="" { "all" }
                        @for kind in ["created", "modified", "moved", "deleted", "restored"] {
                            option value=(kind) selected[value("kind") == kind] { (kind) }
                        }
                    } }
                    label { "Path contains" input type="search" name="path" value=(value("path")); }
                    button type="submit" { "Show" }
                }
            }
            table id="events" {
                tr { th { "When (UTC)" } th { "What" } th { "Root" } th { "Path" } th { "Content" } th { "Agent" } }
                @for event in events {
                    tr {
                        td { (event.at) } td { (event.kind) } td { (event.root) }
                        td {
                            @if let (Some(old), Some(new)) = (&event.old_path, &event.new_path) {
                                @if old != new { (old) " → " }
                            }
                            @if let Some(path) = event.new_path.as_ref().or(event.old_path.as_ref()) {
                                a href=(file_link(&event.root, path)) { (path) }
                            }
                        }
                        td { code { (event.sha256.as_deref().map(|s| &s[..12.min(s.len())]).unwrap_or("")) } }
                        td { (event.agent) }
                    }
                }
            }
            @if events.is_empty() { p.muted { "No events match." } }
        },
    )
}

fn file_link(root: &str, path: &str) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("root", root)
        .append_pair("path", path)
        .finish();
    format!("/file?{query}")
}

fn download_link(sha256: &str, path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("sha256", sha256)
        .append_pair("name", name)
        .finish();
    format!("/download?{query}")
}

pub struct SearchView<'a> {
    pub choices: &'a SearchChoices,
    pub form: &'a [(String, String)],
    pub found: Option<Result<Vec<Found>, String>>,
    pub more: bool,
}

pub fn search(view: &SearchView, csrf: &str) -> Markup {
    let value = |key: &str| field(view.form, key);
    layout(
        "Search",
        Tab::Search,
        Some(csrf),
        html! {
            h1 { "Search" }
            form method="get" action="/search" {
                fieldset {
                    label { "Name (part, or a pattern with * and ?)" input type="search" name="name" id="name" value=(value("name")); }
                    label { "Root" select name="root" {
                        option value="" { "all" }
                        @for root in &view.choices.roots { option value=(root) selected[value("root") == root] { (root) } }
                    } }
                    label { "Project" select name="project" id="project" {
                        option value="" { "any" }
                        @for project in &view.choices.projects { option value=(project) selected[value("project") == project] { (project) } }
                    } }
                    label { "Building" input type="text" name="building" value=(value("building")); }
                    label { "Cost group" select name="cost_group" {
                        option value="" { "any" }
                        @for (code, name) in &view.choices.cost_groups {
                            option value=(code) selected[value("cost_group") == code.to_string()] { (code) " " (name) }
                        }
                    } }
                    label { "Deleted files" input type="checkbox" name="deleted" value="1" checked[value("deleted") == "1"]; }
                    button type="submit" id="search" { "Search" }
                }
            }
            @match &view.found {
                None => {}
                Some(Err(problem)) => p.error id="problem" { (problem) },
                Some(Ok(found)) => {
                    table id="found" {
                        tr { th { "Root" } th { "Path" } th.n { "Size" } th { "Modified (UTC)" } th { "Project" } th { "Building" } th { "Cost group" } th { "Stored" } }
                        @for file in found {
                            tr {
                                td { (file.root) }
                                td { a href=(file_link(&file.root, &file.path)) { (file.path) } }
                                td.n { (bytes(file.size)) } td { (file.mtime) }
                                td { (file.project.as_deref().unwrap_or("")) } td { (file.building.as_deref().unwrap_or("")) }
                                td { (file.cost_group.map(|c| c.to_string()).unwrap_or_default()) }
                                td { @if file.stored { "yes" } @else { "not yet" } }
                            }
                        }
                    }
                    @if found.is_empty() { p.muted { "No files match." } }
                    @if view.more { p.muted { "More files match than are shown (these are some of them, by path): narrow the search." } }
                }
            }
        },
    )
}

pub struct FileView<'a> {
    pub root: &'a str,
    pub path: &'a str,
    pub versions: &'a [HistoryEntry],
    pub restore_folder: Option<&'a std::path::Path>,
    pub message: Option<&'a str>,
}

pub fn file(view: &FileView, csrf: &str) -> Markup {
    let (root, path) = (view.root, view.path);
    layout(
        path,
        Tab::None,
        Some(csrf),
        html! {
            h1 { code { (path) } }
            @if let Some(message) = view.message { p.message id="message" { (message) } }
            p.muted { "Root " (root) ". Every version the catalog recorded, oldest first." }
            table id="versions" {
                tr { th { "When (UTC)" } th { "What" } th { "Path" } th.n { "Size" } th { "Content" } th {} }
                @for version in view.versions {
                    tr {
                        td { (version.at) } td { (version.kind) }
                        td { (version.new_path.as_deref().or(version.old_path.as_deref()).unwrap_or("")) }
                        td.n { (version.size.map(bytes).unwrap_or_default()) }
                        td { code { (version.sha256.as_deref().map(|s| &s[..12.min(s.len())]).unwrap_or("")) } }
                        td {
                            @match (&version.sha256, version.stored, &version.purged_at) {
                                (Some(_), _, Some(purged)) => span.muted { "removed by retention " (purged) },
                                (Some(sha256), true, None) if version.kind != "deleted" => {
                                    a.download href=(download_link(sha256, path)) data-sha256=(sha256) { "Download" }
                                    @if let Some(folder) = view.restore_folder {
                                        " "
                                        form.inline method="post" action="/restore" {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="root" value=(root);
                                            input type="hidden" name="path" value=(path);
                                            input type="hidden" name="sha256" value=(sha256);
                                            button type="submit" class="restore" data-sha256=(sha256) { "Restore to " (folder.display()) }
                                        }
                                    }
                                }
                                (Some(_), false, None) => span.muted { "not stored yet" },
                                _ => {}
                            }
                        }
                    }
                }
            }
            @if view.versions.is_empty() { p.muted { "The catalog has no file at this path." } }
        },
    )
}

pub fn problem(title: &str, message: &str, csrf: Option<&str>) -> Markup {
    layout(
        title,
        Tab::None,
        csrf,
        html! { h1 { (title) } p.error id="problem" { (message) } },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_read_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1\u{202f}000");
        assert_eq!(count(-1234567), "-1\u{202f}234\u{202f}567");
        assert_eq!(bytes(1_500_000), "1.5 MB");
    }

    #[test]
    fn what_a_path_or_an_error_holds_is_escaped() {
        let page = problem("x", "<script>alert(1)</script>", Some("t\"k"));
        let text = page.into_string();
        assert!(!text.contains("<script>alert"), "{text}");
        assert!(text.contains("&lt;script&gt;"), "{text}");
        assert!(text.contains("value=\"t&quot;k\""), "{text}");
    }
}
