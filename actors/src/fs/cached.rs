//! A read that never waits for the disk: the whole of a small file, if the kernel has its
//! path and every byte cached, read on the calling (async) thread; else nothing, and the
//! caller reads it the blocking way. The uploader reads most files moments after the hasher
//! did, so the bytes are nearly always cached; the blocking pool's round trip (two thread
//! hand-overs per file) cost more than the copy.
//!
//! It needs Linux 5.12 or newer: `openat2` with `RESOLVE_CACHED` (the path lookup fails with
//! EAGAIN instead of reading a directory or inode from disk) and `preadv2` with `RWF_NOWAIT`
//! (the read fails with EAGAIN instead of waiting for a page). On older kernels both calls
//! fail and every read takes the blocking way, as before.

use std::path::Path;

/// The file's bytes, if it could be read whole without waiting and is at most `limit` bytes.
/// `size` is what the file is expected to hold: one byte more is asked for, so that a file
/// that grew is returned longer and the caller sees the change. None on any failure (the
/// blocking read that follows reports it).
#[cfg(target_os = "linux")]
pub fn read_cached(path: &Path, size: u64, limit: u64) -> Option<Vec<u8>> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
    use std::os::fd::AsRawFd;
    if size > limit {
        return None;
    }
    let file = openat2(
        CWD,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::CACHED,
    )
    .ok()?;
    let wanted = size as usize + 1;
    let mut bytes: Vec<u8> = Vec::with_capacity(wanted);
    while bytes.len() < wanted {
        let spare = bytes.spare_capacity_mut();
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        // SAFETY: the one iovec points at the vector's spare capacity, which the kernel may
        // write; `set_len` below covers only the bytes it reports written.
        let read = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, bytes.len() as libc::off_t, libc::RWF_NOWAIT) };
        match read {
            0 => break,
            read if read > 0 => unsafe { bytes.set_len(bytes.len() + read as usize) },
            _ => return None,
        }
    }
    Some(bytes)
}

#[cfg(not(target_os = "linux"))]
pub fn read_cached(_path: &Path, _size: u64, _limit: u64) -> Option<Vec<u8>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_cached_file_whole_and_shows_a_longer_one_as_longer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        // Just written, so cached (the machines this runs on have Linux 5.12 or newer).
        let read = read_cached(&path, data.len() as u64, 1 << 20).expect("a cached file is read");
        assert_eq!(read, data);
        // Registered smaller than it is now: one byte more comes back, not a truncation.
        assert_eq!(read_cached(&path, 1000, 1 << 20).unwrap().len(), 1001);
        assert!(read_cached(&path, data.len() as u64, 1000).is_none(), "over the limit");
        assert!(read_cached(&dir.path().join("missing"), 10, 1 << 20).is_none());
    }
}
