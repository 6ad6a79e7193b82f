//! The filesystem side of the engine: which names are ignored, walking a root, and hashing
//! one file. All of it is blocking I/O and runs on plain threads, never on an async executor,
//! except [`read_cached`], which never waits for the disk.

pub mod cached;
pub mod hash;
pub mod ignore;
pub mod poll;
pub mod walk;

pub use cached::read_cached;
pub use hash::{
    hash_file, hash_file_in_parts, hash_file_observed, hash_file_with, FileStat, HashError, Hashed, PartDigests,
    PartLayout,
};
pub use ignore::IgnoreMatcher;
pub use walk::{walk_root, WalkEntry, WalkOutcome};
