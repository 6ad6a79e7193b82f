//! The FileMetadataSync engine: everything between a folder on disk and the catalog and the
//! object store. The application crate (`filemetasync`) adds the command line, the
//! configuration and logging on top.
//!
//! # Layout
//!
//! The data flow, read top to bottom:
//!
//! * [`fs`] — which names are ignored, walking a root, hashing one file (blocking I/O).
//! * [`hashing`] — the pool of hasher threads, fed through a bounded channel.
//! * [`scan`] — one full reconciliation of a root: walk, compare, hash, register, delete.
//! * [`catalog`] — PostgreSQL: migrations, registration batches, the upload queue, status.
//! * [`upload`] — lease queued contents, skip what the store has, store the rest.
//! * [`store`] — the object store backends (S3-compatible, local folder).
//! * [`restore`] — files of a root as they were at a moment, back from the store.
//! * [`daemon`] — the actix actors of `filemetasync run` and their Supervisor.
//! * [`key`], [`pathenc`] — the object key rule and the lossless path encoding.

pub mod backup;
pub mod catalog;
pub mod daemon;
pub mod fs;
pub mod hashing;
pub mod hooks;
pub mod key;
pub use fms_metadata as metadata;
pub mod pathenc;
pub mod restore;
pub mod retention;
pub mod scan;
pub mod store;
pub mod upload;
pub mod upload_controls;
pub mod upload_handoff;
pub mod upload_inflight;
pub mod verify;

/// The time zone of every schedule and of the upload window (`scan.timezone`).
pub use chrono_tz::Tz;
