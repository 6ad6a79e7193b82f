//! Comparing one root's walk with its catalog rows: what is unchanged (quick check), what
//! must be hashed, what moved (same device, inode, size and mtime), and what vanished.
//! Pure: no I/O, so every rule has a table test below.

use crate::catalog::{CatalogFile, Move, Registration};
use crate::fs::{FileStat, WalkEntry};
use crate::pathenc::{self, PathEncoding};
// A fast hash (foldhash) for maps keyed by our own paths and ids: a rescan of a million
// files builds three of them, and SipHash was a large part of its time.
use foldhash::{HashMap, HashMapExt};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// A file to hash, with the catalog row at its path if there is one.
#[derive(Clone, Debug)]
pub struct HashJob {
    pub relative: OsString,
    pub path: String,
    pub encoding: PathEncoding,
    pub walked: FileStat,
    /// Id of the row at this path (live or deleted), if any.
    pub existing: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub seen: u64,
    pub unchanged: u64,
    pub to_hash: Vec<HashJob>,
    /// Rows that moved to a path that has no row (recognised by inode: not rehashed).
    pub moves: Vec<Move>,
    /// A moved file landed on a path that has a row: that row takes the content, unhashed.
    pub carried: Vec<Registration>,
    /// Live rows whose path the walk did not find, by id; hash moves take from here, the
    /// rest are soft-deleted at the end of the scan.
    pub vanished: HashMap<i64, CatalogFile>,
    /// Live rows under directories that could not be read: neither seen nor deleted.
    pub protected: u64,
    /// Paths whose encoded text equals another path's (see `pathenc`): not registered.
    pub collisions: Vec<String>,
}

/// Stat key that recognises a file after a rename on the same filesystem.
type InodeKey = (u64, u64, u64, i128);

fn inode_key(stat: &FileStat) -> InodeKey {
    (stat.device, stat.inode, stat.size, stat.mtime_ns)
}

pub fn plan(walked: Vec<WalkEntry>, catalog: Vec<CatalogFile>, unreadable_dirs: &[OsString]) -> Plan {
    let mut plan = Plan::default();
    // Walked files that are not unchanged, with the id of the row at their path if any.
    let mut candidates: Vec<(WalkEntry, String, PathEncoding, Option<i64>)> = Vec::new();
    // Rows whose path the walk found.
    let mut found = vec![false; catalog.len()];
    {
        // Rows by path, borrowed: a rescan of a million unchanged files copies no path.
        let mut by_path: HashMap<&str, usize> = HashMap::with_capacity(catalog.len());
        for (index, row) in catalog.iter().enumerate() {
            by_path.insert(row.path.as_str(), index);
        }
        // Two walked paths can have one text only if it holds a '%' (a percent-encoded name,
        // or a UTF-8 name that looks like one): only those are remembered.
        let mut encoded_seen: foldhash::HashSet<String> = foldhash::HashSet::default();
        for entry in walked {
            // A UTF-8 path without '%' is its own text (the common case: no copy to look up).
            let plain = entry.relative.to_str().filter(|text| !text.contains('%'));
            let (index, encoded) = match plain {
                Some(text) => (by_path.get(text).copied(), None),
                None => {
                    let (path, encoding) = pathenc::encode(&entry.relative);
                    if path.contains('%') && !encoded_seen.insert(path.clone()) {
                        plan.collisions.push(path);
                        continue;
                    }
                    (by_path.get(path.as_str()).copied(), Some((path, encoding)))
                }
            };
            plan.seen += 1;
            if let Some(index) = index {
                found[index] = true;
                let row = &catalog[index];
                if !row.deleted && quick_check_matches(row, &entry.stat) {
                    plan.unchanged += 1;
                    continue;
                }
            }
            let (path, encoding) =
                encoded.unwrap_or_else(|| (plain.unwrap_or_default().to_owned(), PathEncoding::Utf8));
            let existing = index.map(|index| catalog[index].id);
            candidates.push((entry, path, encoding, existing));
        }
    }
    // The rows the walk did not find.
    let mut vanished_by_inode: HashMap<InodeKey, i64> = HashMap::new();
    for (row, found) in catalog.into_iter().zip(found) {
        if found || row.deleted {
            continue;
        }
        if !unreadable_dirs.is_empty() && is_under_any(&row.relative(), unreadable_dirs) {
            plan.protected += 1;
            continue;
        }
        vanished_by_inode.insert((row.device, row.inode, row.size, row.mtime_ns), row.id);
        plan.vanished.insert(row.id, row);
    }
    for (entry, path, encoding, existing) in candidates {
        let moved_from = vanished_by_inode.remove(&inode_key(&entry.stat));
        match (moved_from, existing) {
            (Some(id), None) => {
                let row = plan.vanished.remove(&id).expect("vanished row by inode");
                plan.moves.push(make_move(row.id, path, encoding, &entry.stat));
            }
            (Some(id), Some(_)) => {
                // The path has a row of its own: it takes the moved row's content, which
                // stays in `vanished` and is soft-deleted.
                let sha256 = plan.vanished[&id].sha256.clone();
                let storage_key = crate::key::storage_key(&sha256, &entry.relative);
                plan.carried.push(make_registration(
                    path,
                    encoding,
                    &entry.stat,
                    sha256,
                    storage_key,
                    None,
                ));
            }
            (None, existing) => plan.to_hash.push(HashJob {
                relative: entry.relative,
                path,
                encoding,
                walked: entry.stat,
                existing,
            }),
        }
    }
    plan
}

fn quick_check_matches(row: &CatalogFile, stat: &FileStat) -> bool {
    row.size == stat.size && row.mtime_ns == stat.mtime_ns && row.inode == stat.inode
}

fn is_under_any(relative: &OsStr, dirs: &[OsString]) -> bool {
    dirs.iter().any(|dir| {
        let dir = dir.as_bytes();
        let path = relative.as_bytes();
        dir.is_empty() || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
    })
}

pub fn make_move(id: i64, path: String, encoding: PathEncoding, stat: &FileStat) -> Move {
    Move {
        id,
        path,
        encoding,
        size: stat.size,
        mtime_ns: stat.mtime_ns,
        inode: stat.inode,
        device: stat.device,
    }
}

pub fn make_registration(
    path: String,
    encoding: PathEncoding,
    stat: &FileStat,
    sha256: String,
    storage_key: String,
    metadata: Option<Box<crate::metadata::ContentMetadata>>,
) -> Registration {
    Registration {
        path,
        encoding,
        size: stat.size,
        mtime_ns: stat.mtime_ns,
        inode: stat.inode,
        device: stat.device,
        sha256,
        storage_key,
        metadata,
        parts: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(inode: u64, size: u64, mtime_ns: i128) -> FileStat {
        FileStat {
            size,
            mtime_ns,
            inode,
            device: 7,
        }
    }

    fn walked(path: &str, stat: FileStat) -> WalkEntry {
        WalkEntry {
            relative: path.into(),
            stat,
        }
    }

    fn row(id: i64, path: &str, stat: FileStat, deleted: bool) -> CatalogFile {
        CatalogFile {
            id,
            path: path.into(),
            encoding: PathEncoding::Utf8,
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            inode: stat.inode,
            device: stat.device,
            sha256: format!("{id:064x}"),
            deleted,
        }
    }

    #[test]
    fn unchanged_changed_new_and_vanished() {
        let a = stat(1, 10, 100);
        let plan = plan(
            vec![
                walked("a", a),
                walked("b", stat(2, 11, 200)),
                walked("c", stat(3, 5, 5)),
            ],
            vec![
                row(1, "a", a, false),
                row(2, "b", stat(2, 11, 199), false),
                row(4, "gone", stat(4, 1, 1), false),
            ],
            &[],
        );
        assert_eq!((plan.seen, plan.unchanged), (3, 1));
        let hashed: Vec<_> = plan.to_hash.iter().map(|j| (j.path.as_str(), j.existing)).collect();
        assert_eq!(hashed, vec![("b", Some(2)), ("c", None)]);
        assert_eq!(plan.vanished.keys().copied().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn rename_is_a_move_without_hashing() {
        let s = stat(9, 42, 1_000_000_001);
        let plan = plan(vec![walked("new/name.pdf", s)], vec![row(5, "old.pdf", s, false)], &[]);
        assert!(plan.to_hash.is_empty());
        assert!(plan.vanished.is_empty());
        assert_eq!(plan.moves.len(), 1);
        assert_eq!((plan.moves[0].id, plan.moves[0].path.as_str()), (5, "new/name.pdf"));
    }

    #[test]
    fn rename_over_an_existing_path_carries_the_content() {
        let temp = stat(20, 8, 8);
        let plan = plan(
            vec![walked("doc.docx", temp)],
            vec![
                row(1, "doc.docx", stat(10, 7, 7), false),
                row(2, "~tmp1.docx", temp, false),
            ],
            &[],
        );
        assert!(plan.to_hash.is_empty());
        assert_eq!(plan.carried.len(), 1);
        assert_eq!(plan.carried[0].sha256, format!("{:064x}", 2));
        assert!(plan.vanished.contains_key(&2), "the temp row is soft-deleted");
    }

    #[test]
    fn deleted_row_at_a_walked_path_is_rehashed_for_restore() {
        let s = stat(3, 3, 3);
        let plan = plan(vec![walked("back.txt", s)], vec![row(8, "back.txt", s, true)], &[]);
        assert_eq!(plan.to_hash.len(), 1);
        assert_eq!(plan.to_hash[0].existing, Some(8));
    }

    #[test]
    fn rows_under_unreadable_dirs_are_protected() {
        let plan = plan(
            vec![],
            vec![
                row(1, "locked/a.pdf", stat(1, 1, 1), false),
                row(2, "lockedother/b.pdf", stat(2, 1, 1), false),
            ],
            &["locked".into()],
        );
        assert_eq!(plan.protected, 1);
        assert_eq!(plan.vanished.keys().copied().collect::<Vec<_>>(), vec![2]);
    }
}
