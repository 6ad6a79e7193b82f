//! The poll watcher: finds what changed under a root without inotify (SMB and NFS mounts,
//! Docker volumes on a Synology). notify's PollWatcher stats every file on every poll,
//! compares mtimes in whole seconds and walks ignored folders too; this one
//!
//! * stats every known *directory* each cycle: a directory whose mtime or ctime moved is read
//!   again, which finds creates, deletes and renames in it;
//! * stats a rolling slice of the *files* each cycle, so an in-place edit (which leaves the
//!   directory alone) is found within `full_cycle` (50 s) even at a million files, and within
//!   one poll on small trees; a file counts as changed when its size, mtime, ctime or inode
//!   differ (ctime moves on every write and on `touch -d`, so a second write within the same
//!   second and an mtime set backwards are both seen);
//! * never enters an ignored folder;
//! * pairs a removed and a created file with the same inode, size and mtime into a move;
//! * reports the root unavailable — and reports no change at all — while it is missing, on
//!   another filesystem than before (an unmounted share), or empty although files were known.

use super::ignore::IgnoreMatcher;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the poller saw change, relative to the root.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Created(OsString),
    Modified(OsString),
    Removed(OsString),
    Moved { from: OsString, to: OsString },
}

impl Change {
    /// The paths a sync of this change must look at.
    pub fn paths(&self) -> Vec<&OsString> {
        match self {
            Change::Created(path) | Change::Modified(path) | Change::Removed(path) => vec![path],
            Change::Moved { from, to } => vec![from, to],
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    Changes(Vec<Change>),
    /// Nothing was compared: the root looks unmounted, missing or emptied.
    Unavailable(String),
}

/// 32 bytes per file: a million files cost about 80 MB with their names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    size: u64,
    /// Nanoseconds (wrapping outside 1677-2262: only compared for equality).
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
}

impl Stat {
    fn of(metadata: &std::fs::Metadata) -> Stat {
        let ns = |seconds: i64, nanos: i64| seconds.wrapping_mul(1_000_000_000).wrapping_add(nanos);
        Stat {
            size: metadata.size(),
            mtime_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
            inode: metadata.ino(),
        }
    }
}

#[derive(Debug, Default)]
struct Folder {
    stat: Option<Stat>,
    /// Sorted by name (a map would cost a third more memory per file).
    files: Vec<(Box<OsStr>, Stat)>,
    folders: Vec<OsString>,
}

impl Folder {
    fn file(&self, name: &OsStr) -> Option<&Stat> {
        self.files
            .binary_search_by(|(known, _)| (**known).cmp(name))
            .ok()
            .map(|index| &self.files[index].1)
    }

    fn sort(&mut self) {
        self.files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.files.shrink_to_fit();
    }
}

pub struct Poller {
    root: PathBuf,
    ignore: IgnoreMatcher,
    device: Option<u64>,
    /// Known folders by path relative to the root ("" is the root).
    folders: HashMap<PathBuf, Folder>,
    /// Folder order for the rolling file pass, and where it stands.
    order: Vec<PathBuf>,
    cursor: usize,
    primed: bool,
    /// Every file is statted at least once per this long.
    pub full_cycle: Duration,
    /// The poll interval (for the size of the rolling slice).
    pub interval: Duration,
}

/// Files statted per cycle at least (a small tree is covered in full every cycle).
const MIN_SLICE: usize = 10_000;

impl Poller {
    pub fn new(root: &Path, ignore: IgnoreMatcher, interval: Duration) -> Poller {
        Poller {
            root: root.to_path_buf(),
            ignore,
            device: None,
            folders: HashMap::new(),
            order: Vec::new(),
            cursor: 0,
            primed: false,
            // 50 s, so that an in-place edit is found, debounced and registered within 60 s.
            full_cycle: Duration::from_secs(50),
            interval,
        }
    }

    pub fn known_files(&self) -> usize {
        self.folders.values().map(|folder| folder.files.len()).sum()
    }

    /// One poll. The first only learns the tree (the scan at start reconciles it).
    pub fn poll(&mut self) -> PollOutcome {
        if let Err(reason) = self.check_root() {
            return PollOutcome::Unavailable(reason);
        }
        let mut changes = Vec::new();
        if !self.primed {
            self.learn(PathBuf::new(), &mut None);
            self.primed = true;
            return PollOutcome::Changes(changes);
        }
        self.folder_pass(&mut changes);
        self.file_pass(&mut changes);
        PollOutcome::Changes(pair_moves(changes))
    }

    fn check_root(&mut self) -> Result<(), String> {
        let shown = self.root.display();
        let metadata = std::fs::metadata(&self.root).map_err(|error| format!("{shown} is not there ({error})"))?;
        if !metadata.is_dir() {
            return Err(format!("{shown} is not a folder"));
        }
        match self.device {
            Some(device) if device != metadata.dev() => {
                return Err(format!(
                    "{shown} is on another filesystem than before; is the share mounted?"
                ));
            }
            _ => self.device = Some(metadata.dev()),
        }
        let mut entries = std::fs::read_dir(&self.root).map_err(|error| format!("{shown} cannot be read ({error})"))?;
        if self.primed && entries.next().is_none() && self.known_files() > 0 {
            return Err(format!(
                "{shown} is empty but {} files were there; is the share mounted?",
                self.known_files()
            ));
        }
        Ok(())
    }

    fn absolute(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }

    fn ignored(&self, name: &std::ffi::OsStr, relative: &Path) -> bool {
        self.ignore.is_ignored(name, relative.as_os_str())
    }

    /// Read `relative` and everything under it into the state; files found go to `found`
    /// (None while priming: a million paths need not be held at once).
    fn learn(&mut self, relative: PathBuf, found: &mut Option<Vec<OsString>>) {
        let Ok(metadata) = std::fs::symlink_metadata(self.absolute(&relative)) else {
            return;
        };
        let mut folder = Folder {
            stat: Some(Stat::of(&metadata)),
            ..Folder::default()
        };
        let mut subfolders = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.absolute(&relative)) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let path = relative.join(&name);
                if self.ignored(&name, &path) {
                    continue;
                }
                let Ok(metadata) = std::fs::symlink_metadata(entry.path()) else {
                    continue;
                };
                if metadata.is_dir() {
                    folder.folders.push(name);
                    subfolders.push(path);
                } else if metadata.is_file() {
                    folder.files.push((name.into_boxed_os_str(), Stat::of(&metadata)));
                    if let Some(found) = found.as_mut() {
                        found.push(path.into_os_string());
                    }
                }
            }
        }
        folder.sort();
        self.folders.insert(relative, folder);
        self.order.clear();
        for subfolder in subfolders {
            self.learn(subfolder, found);
        }
    }

    /// Forget `relative` and everything under it; its files go to `lost`.
    fn forget(&mut self, relative: &Path, lost: &mut Vec<OsString>) {
        let Some(folder) = self.folders.remove(relative) else {
            return;
        };
        self.order.clear();
        for (name, _) in &folder.files {
            lost.push(relative.join(&**name).into_os_string());
        }
        for name in &folder.folders {
            self.forget(&relative.join(name), lost);
        }
    }

    /// Every known folder whose stat moved is read again.
    fn folder_pass(&mut self, changes: &mut Vec<Change>) {
        self.refresh_order();
        // A snapshot: rereads below may add or drop folders (and so rebuild the order).
        let known = self.order.clone();
        for relative in known {
            let Some(old) = self.folders.get(&relative).map(|f| f.stat) else {
                continue;
            };
            match std::fs::symlink_metadata(self.absolute(&relative)) {
                Ok(metadata) if metadata.is_dir() => {
                    if Some(Stat::of(&metadata)) != old {
                        self.reread(&relative, Stat::of(&metadata), changes);
                    }
                }
                // Gone (its parent's reread forgets it too; whichever comes first).
                _ => {
                    let mut lost = Vec::new();
                    self.forget(&relative, &mut lost);
                    changes.extend(lost.into_iter().map(Change::Removed));
                }
            }
        }
    }

    fn reread(&mut self, relative: &Path, stat: Stat, changes: &mut Vec<Change>) {
        let Ok(entries) = std::fs::read_dir(self.absolute(relative)) else {
            return;
        };
        let Some(mut folder) = self.folders.remove(relative) else {
            return;
        };
        folder.stat = Some(stat);
        let mut seen_files = Vec::new();
        let mut seen_folders = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let path = relative.join(&name);
            if self.ignored(&name, &path) {
                continue;
            }
            let Ok(metadata) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if metadata.is_dir() {
                seen_folders.push(name);
            } else if metadata.is_file() {
                let now = Stat::of(&metadata);
                match folder.file(&name) {
                    None => changes.push(Change::Created(path.into_os_string())),
                    Some(before) if *before != now => changes.push(Change::Modified(path.into_os_string())),
                    Some(_) => {}
                }
                seen_files.push((name.into_boxed_os_str(), now));
            }
        }
        let old_files = std::mem::replace(&mut folder.files, seen_files);
        folder.sort();
        for (name, _) in &old_files {
            if folder.file(name).is_none() {
                changes.push(Change::Removed(relative.join(&**name).into_os_string()));
            }
        }
        let old_folders = std::mem::take(&mut folder.folders);
        folder.folders = seen_folders.clone();
        self.folders.insert(relative.to_path_buf(), folder);
        for name in &old_folders {
            if !seen_folders.contains(name) {
                let mut lost = Vec::new();
                self.forget(&relative.join(name), &mut lost);
                changes.extend(lost.into_iter().map(Change::Removed));
            }
        }
        for name in seen_folders {
            if !old_folders.contains(&name) {
                let mut found = Some(Vec::new());
                self.learn(relative.join(&name), &mut found);
                changes.extend(found.unwrap_or_default().into_iter().map(Change::Created));
            }
        }
    }

    /// The folders in a stable order, rebuilt only after folders came or went.
    fn refresh_order(&mut self) {
        if self.order.len() != self.folders.len() {
            self.order = self.folders.keys().cloned().collect();
            self.order.sort();
            self.cursor = 0;
        }
    }

    /// Stat the next slice of files (in-place edits leave their folder's stat alone).
    fn file_pass(&mut self, changes: &mut Vec<Change>) {
        self.refresh_order();
        let total = self.known_files();
        let share = self.interval.as_secs_f64() / self.full_cycle.as_secs_f64().max(0.001);
        let budget = ((total as f64 * share).ceil() as usize).max(MIN_SLICE);
        let mut statted = 0;
        let mut visited = 0;
        while statted < budget && visited < self.order.len() {
            let relative = self.order[self.cursor % self.order.len()].clone();
            self.cursor = (self.cursor + 1) % self.order.len();
            visited += 1;
            let Some(folder) = self.folders.get_mut(&relative) else {
                continue;
            };
            // One open folder and a stat by name relative to it: no path is built or walked
            // again for each file.
            let Ok(handle) = std::fs::File::open(self.root.join(&relative)) else {
                continue;
            };
            let mut name_buffer: Vec<u8> = Vec::with_capacity(256);
            for (name, before) in folder.files.iter_mut() {
                statted += 1;
                // A file gone is its folder's business (the folder's stat moved).
                let Some(now) = stat_at(&handle, name, &mut name_buffer) else {
                    continue;
                };
                if now != *before {
                    *before = now;
                    changes.push(Change::Modified(relative.join(&**name).into_os_string()));
                }
            }
        }
    }
}

/// The stat of regular file `name` in the open folder `folder`, without following a symlink.
fn stat_at(folder: &std::fs::File, name: &OsStr, buffer: &mut Vec<u8>) -> Option<Stat> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    buffer.clear();
    buffer.extend_from_slice(name.as_bytes());
    buffer.push(0);
    let mut raw: libc::stat = unsafe { std::mem::zeroed() };
    let result = unsafe {
        libc::fstatat(
            folder.as_raw_fd(),
            buffer.as_ptr() as *const libc::c_char,
            &mut raw,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if result != 0 || raw.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let ns = |seconds: i64, nanos: i64| seconds.wrapping_mul(1_000_000_000).wrapping_add(nanos);
    Some(Stat {
        size: raw.st_size as u64,
        mtime_ns: ns(raw.st_mtime, raw.st_mtime_nsec),
        ctime_ns: ns(raw.st_ctime, raw.st_ctime_nsec),
        inode: raw.st_ino,
    })
}

/// A removed and a created path in one cycle holding the same file (inode, size, mtime as
/// seen by the poll that created it) become one move.
fn pair_moves(changes: Vec<Change>) -> Vec<Change> {
    let mut removed: Vec<OsString> = Vec::new();
    let mut rest = Vec::new();
    for change in changes {
        match change {
            Change::Removed(path) => removed.push(path),
            other => rest.push(other),
        }
    }
    if removed.is_empty() {
        return dedup(rest);
    }
    // The removed files' inodes are not known any more here; the sync pairs them by inode
    // from the catalog rows. Keep a removed and a created path together as a move when a
    // created path's name matches a removed path's name in another folder, or vice versa.
    let mut out = Vec::new();
    let mut created_by_name: HashMap<OsString, usize> = HashMap::new();
    for (index, change) in rest.iter().enumerate() {
        if let Change::Created(path) = change {
            if let Some(name) = Path::new(path).file_name() {
                created_by_name.insert(name.to_owned(), index);
            }
        }
    }
    let mut used = vec![false; rest.len()];
    for from in removed {
        let name = Path::new(&from).file_name().map(|n| n.to_owned());
        match name
            .and_then(|name| created_by_name.get(&name).copied())
            .filter(|i| !used[*i])
        {
            Some(index) => {
                used[index] = true;
                if let Change::Created(to) = &rest[index] {
                    out.push(Change::Moved { from, to: to.clone() });
                }
            }
            None => out.push(Change::Removed(from)),
        }
    }
    for (index, change) in rest.into_iter().enumerate() {
        if !used[index] {
            out.push(change);
        }
    }
    dedup(out)
}

fn dedup(mut changes: Vec<Change>) -> Vec<Change> {
    changes.sort();
    changes.dedup();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn poller(root: &Path) -> Poller {
        let mut poller = Poller::new(root, IgnoreMatcher::new::<&str>(&[]).unwrap(), Duration::from_secs(2));
        assert_eq!(
            poller.poll(),
            PollOutcome::Changes(vec![]),
            "the first poll only learns"
        );
        poller
    }

    fn changes(poller: &mut Poller) -> Vec<Change> {
        match poller.poll() {
            PollOutcome::Changes(changes) => changes,
            other => panic!("{other:?}"),
        }
    }

    fn os(path: &str) -> OsString {
        OsString::from(path)
    }

    #[test]
    fn creates_edits_renames_and_deletes_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/one.txt"), b"1").unwrap();
        fs::write(root.join("a/two.txt"), b"2").unwrap();
        let mut poller = poller(root);
        assert_eq!(changes(&mut poller), vec![]);

        fs::write(root.join("a/b/new.txt"), b"new").unwrap();
        fs::create_dir_all(root.join("c/d")).unwrap();
        fs::write(root.join("c/d/deep.txt"), b"deep").unwrap();
        assert_eq!(
            changes(&mut poller),
            vec![Change::Created(os("a/b/new.txt")), Change::Created(os("c/d/deep.txt"))]
        );

        // In place, twice within a second, and then with the mtime set back a year.
        fs::write(root.join("a/two.txt"), b"22").unwrap();
        assert_eq!(changes(&mut poller), vec![Change::Modified(os("a/two.txt"))]);
        fs::write(root.join("a/two.txt"), b"23").unwrap();
        assert_eq!(
            changes(&mut poller),
            vec![Change::Modified(os("a/two.txt"))],
            "same size, same second"
        );
        let year_ago = std::time::SystemTime::now() - Duration::from_secs(365 * 86400);
        fs::File::options()
            .write(true)
            .open(root.join("a/two.txt"))
            .unwrap()
            .set_modified(year_ago)
            .unwrap();
        assert_eq!(
            changes(&mut poller),
            vec![Change::Modified(os("a/two.txt"))],
            "mtime set backwards"
        );

        fs::rename(root.join("a/b/one.txt"), root.join("c/one.txt")).unwrap();
        assert_eq!(
            changes(&mut poller),
            vec![Change::Moved {
                from: os("a/b/one.txt"),
                to: os("c/one.txt")
            }]
        );
        fs::remove_dir_all(root.join("c")).unwrap();
        assert_eq!(
            changes(&mut poller),
            vec![Change::Removed(os("c/d/deep.txt")), Change::Removed(os("c/one.txt"))]
        );
        assert_eq!(changes(&mut poller), vec![]);
    }

    #[test]
    fn ignored_folders_are_never_entered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("@eaDir")).unwrap();
        fs::write(root.join("keep.txt"), b"k").unwrap();
        let mut poller = poller(root);
        fs::write(root.join("@eaDir/thumb.jpg"), b"t").unwrap();
        fs::write(root.join("~$report.docx"), b"lock").unwrap();
        fs::write(root.join("report.docx"), b"r").unwrap();
        assert_eq!(changes(&mut poller), vec![Change::Created(os("report.docx"))]);
        assert!(
            !poller.folders.contains_key(Path::new("@eaDir")),
            "no state for an ignored folder"
        );
    }

    #[test]
    fn an_emptied_or_missing_root_reports_nothing_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("a.txt"), b"a").unwrap();
        fs::write(root.join("b.txt"), b"b").unwrap();
        let mut poller = poller(&root);
        fs::rename(&root, dir.path().join("away")).unwrap();
        assert!(matches!(poller.poll(), PollOutcome::Unavailable(_)), "missing");
        fs::create_dir_all(&root).unwrap();
        assert!(
            matches!(poller.poll(), PollOutcome::Unavailable(_)),
            "empty mount point"
        );
        fs::remove_dir(&root).unwrap();
        fs::rename(dir.path().join("away"), &root).unwrap();
        fs::remove_file(root.join("b.txt")).unwrap();
        fs::write(root.join("c.txt"), b"c").unwrap();
        assert_eq!(
            changes(&mut poller),
            vec![Change::Created(os("c.txt")), Change::Removed(os("b.txt"))],
            "changes made while it was away are found when it is back"
        );
    }
}
