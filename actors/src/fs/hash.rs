//! Streaming SHA-256 of one file, with a stat before and after, so that a file that changes
//! while it is read is reported as unstable instead of being registered with a wrong hash.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const READ_BUFFER: usize = 1 << 20;

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
    hash_file_observed(path, &mut || {})
}

/// `hash_file`, calling `after_first_read` once the first buffer is read (tests use it to
/// change or delete the file mid-read, deterministically).
pub fn hash_file_observed(path: &Path, after_first_read: &mut dyn FnMut()) -> Result<Hashed, HashError> {
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
    let (sha256, bytes_read) = digest_observed(&file, after_first_read)?;
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
    Ok(Hashed { sha256, stat: before })
}

/// SHA-256 of everything readable from `reader`, and how many bytes that was.
pub fn digest(reader: impl Read) -> std::io::Result<(String, u64)> {
    digest_observed(reader, &mut || {})
}

fn digest_observed(mut reader: impl Read, after_first_read: &mut dyn FnMut()) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut total = 0u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        if total == 0 {
            after_first_read();
        }
        total += read as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
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
    fn a_file_appended_to_while_read_is_reported_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let result = hash_file_observed(&path, &mut || {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap()
                .write_all(b"more")
                .unwrap();
        });
        assert!(matches!(result, Err(HashError::Changed)), "{result:?}");
    }

    #[test]
    fn a_file_rewritten_in_place_while_read_is_reported_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let result = hash_file_observed(&path, &mut || {
            // Same size, new bytes: only the mtime tells.
            std::thread::sleep(std::time::Duration::from_millis(5));
            std::fs::write(&path, vec![8u8; 3 * READ_BUFFER]).unwrap();
        });
        assert!(matches!(result, Err(HashError::Changed)), "{result:?}");
    }

    #[test]
    fn a_file_replaced_by_rename_while_read_is_reported_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let result = hash_file_observed(&path, &mut || {
            let other = dir.path().join("other");
            std::fs::write(&other, vec![7u8; 3 * READ_BUFFER]).unwrap();
            std::fs::rename(&other, &path).unwrap();
        });
        assert!(matches!(result, Err(HashError::Changed)), "{result:?}");
    }

    #[test]
    fn a_file_deleted_while_read_is_reported_vanished() {
        let dir = tempfile::tempdir().unwrap();
        let path = big_file(dir.path());
        let result = hash_file_observed(&path, &mut || std::fs::remove_file(&path).unwrap());
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
