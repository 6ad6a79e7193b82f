//! The tree of a root at a moment, from the catalog's events: a pure function, so that each
//! kind of event is tested by itself (see the tests below).
//!
//! A file row (`files.id`) lives through its events in order: `created` gives it a path and
//! a content; `modified` a new content; `moved` a new path; `deleted` ends it; `restored` (the
//! path seen again after a deletion) brings it back with the content then found. Replaying a
//! row's events up to the moment gives its state then; the tree is every row alive then.

use crate::pathenc::PathEncoding;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Modified,
    Moved,
    Deleted,
    Restored,
}

impl EventKind {
    pub fn parse(text: &str) -> Option<EventKind> {
        Some(match text {
            "created" => EventKind::Created,
            "modified" => EventKind::Modified,
            "moved" => EventKind::Moved,
            "deleted" => EventKind::Deleted,
            "restored" => EventKind::Restored,
            _ => return None,
        })
    }
}

/// One `file_events` row, as restore reads it (its `at` is not needed: the caller passes only
/// the events up to the moment, in `id` order).
#[derive(Clone, Debug)]
pub struct Event {
    pub file_id: i64,
    pub kind: EventKind,
    /// The path after the event (created, modified, moved, restored).
    pub new_path: Option<String>,
    pub new_sha256: Option<String>,
    pub encoding: PathEncoding,
    pub size: i64,
    /// The file's mtime as registered with this event, when the event recorded it.
    pub mtime_ns: Option<i64>,
    /// The content's object key, and whether the store has it (as the catalog says now).
    pub storage_key: Option<String>,
    pub stored: bool,
    /// When retention deleted the content from the store (RFC 3339), if it did.
    pub purged_at: Option<String>,
}

/// A file as it was: where, what, and its mtime when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub path: String,
    pub encoding: PathEncoding,
    pub sha256: String,
    pub size: i64,
    pub mtime_ns: Option<i64>,
    pub storage_key: Option<String>,
    pub stored: bool,
    pub purged_at: Option<String>,
}

/// The state of each file row as events are replayed, one event at a time (so that a large
/// root's events need not be held all at once).
#[derive(Default)]
pub struct Timeline {
    rows: BTreeMap<i64, (bool, Option<Version>)>,
}

impl Timeline {
    /// Apply the next event (events of one row in `id` order).
    pub fn push(&mut self, event: Event) {
        let (alive, version) = self.rows.entry(event.file_id).or_insert((false, None));
        match event.kind {
            EventKind::Created | EventKind::Restored | EventKind::Modified => {
                if let (Some(path), Some(sha256)) = (event.new_path, event.new_sha256) {
                    *version = Some(Version {
                        path,
                        encoding: event.encoding,
                        sha256,
                        size: event.size,
                        mtime_ns: event.mtime_ns,
                        storage_key: event.storage_key,
                        stored: event.stored,
                        purged_at: event.purged_at,
                    });
                    *alive = true;
                }
            }
            EventKind::Moved => {
                if let (Some(current), Some(path)) = (version.as_mut(), event.new_path) {
                    current.path = path;
                    current.encoding = event.encoding;
                    if event.mtime_ns.is_some() {
                        current.mtime_ns = event.mtime_ns;
                    }
                    *alive = true;
                }
            }
            EventKind::Deleted => *alive = false,
        }
    }

    /// The files alive after the events pushed (one per path: files has UNIQUE (root,
    /// path) and a path is freed before it is taken, so no two rows hold one at a moment).
    pub fn finish(self) -> Vec<Version> {
        self.rows
            .into_values()
            .filter_map(|(alive, version)| version.filter(|_| alive))
            .collect()
    }
}

/// The files alive after `events` (in `id` order), by stored path.
pub fn tree_after(events: impl IntoIterator<Item = Event>) -> BTreeMap<String, Version> {
    let mut timeline = Timeline::default();
    for event in events {
        timeline.push(event);
    }
    timeline
        .finish()
        .into_iter()
        .map(|version| (version.path.clone(), version))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::*;

    fn event(file_id: i64, kind: EventKind, path: Option<&str>, sha: Option<&str>, mtime: i64) -> Event {
        Event {
            file_id,
            kind,
            new_path: path.map(str::to_owned),
            new_sha256: sha.map(str::to_owned),
            encoding: PathEncoding::Utf8,
            size: 1,
            mtime_ns: Some(mtime),
            storage_key: sha.map(|sha| format!("files/{sha}")),
            stored: true,
            purged_at: None,
        }
    }

    /// (path, sha, mtime) of each file alive after the first `n` events.
    fn tree(events: &[Event], n: usize) -> Vec<(String, String, i64)> {
        tree_after(events[..n].iter().cloned())
            .into_values()
            .map(|v| (v.path, v.sha256, v.mtime_ns.unwrap()))
            .collect()
    }

    /// (path, sha, mtime) as a table row writes it.
    type Row<'a> = (&'a str, &'a str, i64);

    fn files(list: &[Row]) -> Vec<(String, String, i64)> {
        list.iter()
            .map(|(p, s, m)| (p.to_string(), s.to_string(), *m))
            .collect()
    }

    #[test]
    fn each_kind_of_event_at_each_moment() {
        let history = [
            event(1, Created, Some("a.txt"), Some("A1"), 10),
            event(2, Created, Some("b.txt"), Some("B1"), 11),
            event(1, Modified, Some("a.txt"), Some("A2"), 20),
            event(2, Moved, Some("dir/b.txt"), Some("B1"), 11),
            event(1, Deleted, None, None, 0),
            event(3, Created, Some("a.txt"), Some("A3"), 30),
            event(2, Deleted, None, None, 0),
            event(2, Restored, Some("dir/b.txt"), Some("B2"), 40),
        ];
        let table: &[(usize, &[Row])] = &[
            (0, &[]),
            (1, &[("a.txt", "A1", 10)]),
            (2, &[("a.txt", "A1", 10), ("b.txt", "B1", 11)]),
            // modified: the old content before, the new one after
            (3, &[("a.txt", "A2", 20), ("b.txt", "B1", 11)]),
            // moved: under the new path, same content and mtime
            (4, &[("a.txt", "A2", 20), ("dir/b.txt", "B1", 11)]),
            // deleted: gone
            (5, &[("dir/b.txt", "B1", 11)]),
            // the path taken again by a new row
            (6, &[("a.txt", "A3", 30), ("dir/b.txt", "B1", 11)]),
            (7, &[("a.txt", "A3", 30)]),
            // restored: back, with the content found then
            (8, &[("a.txt", "A3", 30), ("dir/b.txt", "B2", 40)]),
        ];
        for (n, expected) in table {
            assert_eq!(tree(&history, *n), files(expected), "after {n} events");
        }
    }

    #[test]
    fn a_folder_moved_and_a_move_back() {
        let history = [
            event(1, Created, Some("p/x"), Some("X"), 1),
            event(2, Created, Some("p/y"), Some("Y"), 2),
            event(1, Moved, Some("q/x"), Some("X"), 1),
            event(2, Moved, Some("q/y"), Some("Y"), 2),
            event(1, Moved, Some("p/x"), Some("X"), 1),
        ];
        assert_eq!(tree(&history, 4), files(&[("q/x", "X", 1), ("q/y", "Y", 2)]));
        assert_eq!(tree(&history, 5), files(&[("p/x", "X", 1), ("q/y", "Y", 2)]));
    }

    #[test]
    fn the_encoding_of_a_moved_path_follows_the_move() {
        let mut moved = event(1, Moved, Some("caf%E9"), Some("C"), 5);
        moved.encoding = PathEncoding::Percent;
        let history = [event(1, Created, Some("cafe"), Some("C"), 5), moved];
        let tree = tree_after(history);
        assert_eq!(tree["caf%E9"].encoding, PathEncoding::Percent);
    }

    #[test]
    fn events_without_a_version_change_nothing_they_cannot_know() {
        // A move or deletion of a row whose creation is not among the events (it cannot
        // happen in one root's full history, but a partial read must not invent files).
        let history = [
            event(9, Moved, Some("x"), Some("X"), 1),
            event(8, Deleted, None, None, 0),
        ];
        assert!(tree_after(history).is_empty());
    }
}
