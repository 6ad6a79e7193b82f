//! Streaming SHA-256 of one file, with a stat before and after, so that a file that changes
//! while it is read is reported as unstable instead of being registered with a wrong hash.

use crate::metadata::{ContentMetadata, Source, HEAD_BYTES};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Read size: small enough that a buffer is still in the L2 cache when it is hashed.
const READ_BUFFER: usize = 256 << 10;
/// Files at least this large are read on a helper thread while the caller hashes, so the
/// copy out of the page cache overlaps the hashing (when a core is free).
const OVERLAP_THRESHOLD: u64 = 8 << 20;
/// Buffers in flight between the reader thread and the hasher.
const OVERLAP_BUFFERS: usize = 4;

thread_local! {
    /// Each thread's read buffer, kept from one file to the next: a fresh one per file cost
    /// an allocation and a 256 KiB memset for every small file hashed.
    static READ_BUFFERS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The part of a stat that the quick check compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    pub inode: u64,
    pub device: u64,
}

#[derive(Clone, Debug)]
pub struct Hashed {
    pub sha256: String,
    /// The stat that held before and after the read: the one to register.
    pub stat: FileStat,
    /// What the bytes are, read during the same read (when asked for).
    pub metadata: Option<Box<ContentMetadata>>,
    /// The SHA-256 of each part the store will take the file in, from the same read (when
    /// asked for and the file is large enough to go in parts).
    pub parts: Option<Arc<PartDigests>>,
}

/// How the object store takes a large file: in parts of `part_size` bytes (the last one
/// shorter), for files of at least `threshold` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartLayout {
    pub threshold: u64,
    pub part_size: u64,
}

/// The SHA-256 of each `part_size` slice of a file, in order: what a multipart upload signs
/// its parts with, so that it need not hash the file again (the store checks each part
/// against its digest, and so that the bytes sent are the bytes hashed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartDigests {
    pub part_size: u64,
    pub digests: Vec<[u8; 32]>,
}

/// Cuts a stream of bytes into parts and hashes each.
struct PartHasher {
    part_size: u64,
    filled: u64,
    current: Sha256,
    digests: Vec<[u8; 32]>,
}

impl PartHasher {
    fn new(part_size: u64) -> PartHasher {
        PartHasher {
            part_size: part_size.max(1),
            filled: 0,
            current: Sha256::new(),
            digests: Vec::new(),
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = ((self.part_size - self.filled) as usize).min(bytes.len());
            self.current.update(&bytes[..take]);
            self.filled += take as u64;
            bytes = &bytes[take..];
            if self.filled == self.part_size {
                self.digests.push(self.current.finalize_reset().into());
                self.filled = 0;
            }
        }
    }

    /// The parts as a multipart upload makes them: full ones, then the rest if any (one
    /// empty part for an empty file).
    fn finish(mut self) -> PartDigests {
        if self.filled > 0 || self.digests.is_empty() {
            self.digests.push(self.current.finalize().into());
        }
        PartDigests {
            part_size: self.part_size,
            digests: self.digests,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("vanished before it could be read")]
    Vanished,
    #[error("is no longer a regular file")]
    NotRegular,
    #[error("changed while it was being read")]
    Changed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Hash `path`. Opens without following a symlink and without blocking on a FIFO that took
/// the file's place since the walk.
pub fn hash_file(path: &Path) -> Result<Hashed, HashError> {
    hash_file_observed(path, &mut || {}, &AtomicU64::new(0))
}

/// `hash_file`, calling `after_first_read` once the first buffer is read (tests use it to
/// change or delete the file mid-read, deterministically) and adding every buffer's bytes to
/// `read` as it goes (a hasher's progress, for the stall watchdog).
pub fn hash_file_observed(
    path: &Path,
    after_first_read: &mut dyn FnMut(),
    read: &AtomicU64,
) -> Result<Hashed, HashError> {
    hash_file_with(path, after_first_read, read, false)
}

/// `hash_file_observed`, and with `metadata` the content's metadata too: the head of the
/// file is kept as it is read for the hash, and the extractors look at it (and, bounded, at
/// the open file) before the stat that proves the file did not change.
pub fn hash_file_with(
    path: &Path,
    after_first_read: &mut dyn FnMut(),
    read: &AtomicU64,
    metadata: bool,
) -> Result<Hashed, HashError> {
    hash_file_in_parts(path, after_first_read, read, metadata, None)
}

/// `hash_file_with`, and with `parts` the digest of each part too, for a file large enough
/// to go in parts.
pub fn hash_file_in_parts(
    path: &Path,
    after_first_read: &mut dyn FnMut(),
    read: &AtomicU64,
    metadata: bool,
    parts: Option<PartLayout>,
) -> Result<Hashed, HashError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(map_open_error)?;
    let before = file.metadata()?;
    if !before.file_type().is_file() {
        return Err(HashError::NotRegular);
    }
    advise_sequential(&file);
    let mut head = Vec::new();
    let keep = metadata.then_some(&mut head);
    let mut part_hasher = parts
        .filter(|layout| before.len() >= layout.threshold)
        .map(|layout| PartHasher::new(layout.part_size));
    let (sha256, bytes_read) = if before.len() >= OVERLAP_THRESHOLD {
        digest_overlapped(&file, after_first_read, read, keep, part_hasher.as_mut())?
    } else {
        digest_observed(&file, after_first_read, read, keep, part_hasher.as_mut())?
    };
    let metadata = metadata.then(|| {
        Box::new(crate::metadata::extract(&Source {
            head: &head,
            size: bytes_read,
            file: &file,
        }))
    });
    let after_fd = FileStat::from_metadata(&file.metadata()?);
    let after_path = match std::fs::symlink_metadata(path) {
        Ok(metadata) => FileStat::from_metadata(&metadata),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(HashError::Vanished),
        Err(error) => return Err(error.into()),
    };
    let before = FileStat::from_metadata(&before);
    if before != after_fd || before != after_path || bytes_read != before.size {
        return Err(HashError::Changed);
    }
    Ok(Hashed {
        sha256,
        stat: before,
        metadata,
        parts: part_hasher.map(|hasher| Arc::new(hasher.finish())),
    })
}

/// SHA-256 of everything readable from `reader`, and how many bytes that was.
pub fn digest(reader: impl Read) -> std::io::Result<(String, u64)> {
    digest_observed(reader, &mut || {}, &AtomicU64::new(0), None, None)
}

/// Copy the start of the bytes into `head`, up to HEAD_BYTES.
fn keep_head(head: &mut Option<&mut Vec<u8>>, bytes: &[u8]) {
    if let Some(head) = head {
        let room = HEAD_BYTES.saturating_sub(head.len());
        head.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

fn digest_observed(
    mut reader: impl Read,
    after_first_read: &mut dyn FnMut(),
    progress: &AtomicU64,
    mut head: Option<&mut Vec<u8>>,
    mut parts: Option<&mut PartHasher>,
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = READ_BUFFERS.with(|kept| std::mem::take(&mut *kept.borrow_mut()));
    buffer.resize(READ_BUFFER, 0);
    let mut total = 0u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        keep_head(&mut head, &buffer[..read]);
        if let Some(parts) = parts.as_mut() {
            parts.update(&buffer[..read]);
        }
        if total == 0 {
            after_first_read();
        }
        total += read as u64;
        progress.fetch_add(read as u64, Ordering::Relaxed);
    }
    READ_BUFFERS.with(|kept| *kept.borrow_mut() = buffer);
    Ok((hex::encode(hasher.finalize()), total))
}

/// `digest_observed` with reading on a scoped helper thread: full buffers go to the hasher
/// and empty ones come back, through bounded channels, so at most OVERLAP_BUFFERS are alive.
fn digest_overlapped(
    file: &File,
    after_first_read: &mut dyn FnMut(),
    progress: &AtomicU64,
    mut head: Option<&mut Vec<u8>>,
    mut parts: Option<&mut PartHasher>,
) -> std::io::Result<(String, u64)> {
    let (full_sender, full) = crossbeam_channel::bounded::<std::io::Result<(Vec<u8>, usize)>>(OVERLAP_BUFFERS);
    let (empty_sender, empty) = crossbeam_channel::bounded::<Vec<u8>>(OVERLAP_BUFFERS);
    for _ in 0..OVERLAP_BUFFERS {
        empty_sender
            .send(vec![0u8; READ_BUFFER])
            .expect("room for every buffer");
    }
    std::thread::scope(|scope| {
        scope.spawn(move || read_into_buffers(file, &empty, &full_sender));
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        for message in full.iter() {
            let (buffer, read) = message?;
            hasher.update(&buffer[..read]);
            keep_head(&mut head, &buffer[..read]);
            if let Some(parts) = parts.as_mut() {
                parts.update(&buffer[..read]);
            }
            if total == 0 {
                after_first_read();
            }
            total += read as u64;
            progress.fetch_add(read as u64, Ordering::Relaxed);
            // The reader may have stopped (end of file); a lost buffer is fine then.
            let _ = empty_sender.send(buffer);
        }
        Ok((hex::encode(hasher.finalize()), total))
    })
}

/// The reader side of `digest_overlapped`: stops at end of file, on an error (which it
/// passes on), or when the hasher hangs up.
fn read_into_buffers(
    mut reader: &File,
    empty: &crossbeam_channel::Receiver<Vec<u8>>,
    full: &crossbeam_channel::Sender<std::io::Result<(Vec<u8>, usize)>>,
) {
    for mut buffer in empty.iter() {
        let read = loop {
            match reader.read(&mut buffer) {
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match read {
            Ok(0) => return,
            Ok(read) => {
                if full.send(Ok((buffer, read))).is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = full.send(Err(error));
                return;
            }
        }
    }
}

fn map_open_error(error: std::io::Error) -> HashError {
    match error.raw_os_error() {
        Some(libc::ENOENT) => HashError::Vanished,
        // O_NOFOLLOW on a symlink that took the file's place.
        Some(libc::ELOOP) => HashError::NotRegular,
        _ => HashError::Io(error),
    }
}

fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // Only a hint to the page cache; failure changes nothing.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_digests_are_those_of_the_parts_a_multipart_upload_sends() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PartLayout {
            threshold: 1 << 20,
            part_size: 5 << 20,
        };
        // Exactly two parts, two and a bit (read overlapped), and one short part.
        for size in [10usize << 20, (10 << 20) + 12_345, (1 << 20) + 7] {
            let bytes: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            let path = dir.path().join(format!("large-{size}"));
            std::fs::write(&path, &bytes).unwrap();
            let hashed = hash_file_in_parts(&path, &mut || {}, &AtomicU64::new(0), false, Some(layout)).unwrap();
            let expected: Vec<[u8; 32]> = bytes
                .chunks(layout.part_size as usize)
                .map(|part| Sha256::digest(part).into())
                .collect();
            let parts = hashed.parts.expect("a file above the threshold has parts");
            assert_eq!(parts.part_size, layout.part_size);
            assert_eq!(parts.digests, expected, "{size} bytes");
            assert_eq!(hashed.sha256, hex::encode(Sha256::digest(&bytes)));
        }
        let small = dir.path().join("small");
        std::fs::write(&small, vec![7u8; 1000]).unwrap();
        let hashed = hash_file_in_parts(&small, &mut || {}, &AtomicU64::new(0), false, Some(layout)).unwrap();
        assert!(hashed.parts.is_none(), "below the threshold: no parts");
    }

    #[test]
    fn known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            hash_file(&empty).unwrap().sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let abc = dir.path().join("abc");
        std::fs::write(&abc, b"abc").unwrap();
        let hashed = hash_file(&abc).unwrap();
        assert_eq!(
            hashed.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hashed.stat.size, 3);
    }

    fn big_file(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("big.bin");
        std::fs::write(&path, vec![7u8; 3 * READ_BUFFER]).unwrap();
        path
    }

    #[test]
    fn overlapped_reading_gives_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large.bin");
        let data: Vec<u8> = (0..(OVERLAP_THRESHOLD as usize + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let expected = hex::encode(Sha256::digest(&data));
        assert_eq!(hash_file(&path).unwrap().sha256, expected);
        let result = hash_file_observed(&path, &mut || std::fs::remove_file(&path).unwrap(), &AtomicU64::new(0));
        assert!(matches!(result, Err(HashError::Vanished)), "{result:?}");
    }

    #[test]
    fn a_file_appended_to_while_read_is_reported_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let result = hash_file_observed(
            &path,
            &mut || {
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap()
                    .write_all(b"more")
                    .unwrap();
            },
            &AtomicU64::new(0),
        );
        assert!(matches!(result, Err(HashError::Changed)), "{result:?}");
    }

    #[test]
    fn a_file_rewritten_in_place_while_read_is_reported_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let result = hash_file_observed(
            &path,
            &mut || {
                // Same size, new bytes: only the mtime tells.
                std::thread::sleep(std::time::Duration::from_millis(5));
                std::fs::write(&path, vec![8u8; 3 * READ_BUFFER]).unwrap();
            },
            &AtomicU64::new(0),
        );
        assert!(matches!(result, Err(HashError::Changed)), "{result:?}");
    }

    #[test]
    fn a_file_replaced_by_rename_while_read_is_reported_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let result = hash_file_observed(
            &path,
            &mut || {
                let other = dir.path().join("other");
                std::fs::write(&other, vec![7u8; 3 * READ_BUFFER]).unwrap();
                std::fs::rename(&other, &path).unwrap();
            },
            &AtomicU64::new(0),
        );
        assert!(matches!(result, Err(HashError::Changed)), "{result:?}");
    }

    #[test]
    fn a_file_deleted_while_read_is_reported_vanished() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let result = hash_file_observed(&path, &mut || std::fs::remove_file(&path).unwrap(), &AtomicU64::new(0));
        assert!(matches!(result, Err(HashError::Vanished)), "{result:?}");
    }

    #[test]
    fn vanished_and_special_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            hash_file(&dir.path().join("missing")),
            Err(HashError::Vanished)
        ));
        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        assert!(matches!(hash_file(&fifo), Err(HashError::NotRegular)));
        std::os::unix::fs::symlink("missing", dir.path().join("link")).unwrap();
        assert!(matches!(
            hash_file(&dir.path().join("link")),
            Err(HashError::NotRegular)
        ));
    }
}
