//! A read that never waits for the disk: the whole of a small file, if the kernel has its
//! path and every byte cached, read on the calling (async) thread; else nothing, and the
//! caller reads it the blocking way. The uploader reads most files moments after the hasher
//! did, so the bytes are nearly always cached; the blocking pool's round trip (two thread
//! hand-overs per file) cost more than the copy.
//!
//! It needs Linux 5.12 or newer: `openat2` with `RESOLVE_CACHED` (the path lookup fails with
//! EAGAIN instead of reading a directory or inode from disk) and `preadv2` with `RWF_NOWAIT`
//! (the read fails with EAGAIN instead of waiting for a page). On older kernels both calls
//! fail with ENOSYS or EINVAL; the first such failure is remembered for the process, and
//! every later read takes the blocking way at once (as before this existed).

use std::path::Path;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once `openat2` has shown that this kernel lacks it or `RESOLVE_CACHED`.
#[cfg(target_os = "linux")]
static KERNEL_LACKS_IT: AtomicBool = AtomicBool::new(false);

/// Whether an `openat2` failure says the kernel cannot do this at all (before 5.6 it has no
/// `openat2`: ENOSYS; before 5.12 no `RESOLVE_CACHED`: EINVAL), rather than that this one
/// path is not cached (EAGAIN) or not there.
#[cfg(target_os = "linux")]
fn says_kernel_lacks_it(error: rustix::io::Errno) -> bool {
    error == rustix::io::Errno::NOSYS || error == rustix::io::Errno::INVAL
}

/// The file's bytes, if it could be read whole without waiting and is at most `limit` bytes.
/// `size` is what the file is expected to hold: one byte more is asked for, so that a file
/// that grew is returned longer and the caller sees the change. None on any failure (the
/// blocking read that follows reports it).
#[cfg(target_os = "linux")]
pub fn read_cached(path: &Path, size: u64, limit: u64) -> Option<Vec<u8>> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
    use std::os::fd::AsRawFd;
    if size > limit || KERNEL_LACKS_IT.load(Ordering::Relaxed) {
        return None;
    }
    let file = match openat2(
        CWD,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::CACHED,
    ) {
        Ok(file) => file,
        Err(error) => {
            if says_kernel_lacks_it(error) {
                KERNEL_LACKS_IT.store(true, Ordering::Relaxed);
            }
            return None;
        }
    };
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
        // Neither a missing file nor an uncached path turns the cached reads off.
        assert!(!KERNEL_LACKS_IT.load(Ordering::Relaxed));
    }

    #[test]
    fn only_a_kernel_without_the_call_or_the_flag_turns_cached_reads_off() {
        use rustix::io::Errno;
        assert!(says_kernel_lacks_it(Errno::NOSYS));
        assert!(says_kernel_lacks_it(Errno::INVAL));
        for per_path in [Errno::AGAIN, Errno::NOENT, Errno::ACCESS, Errno::LOOP, Errno::NOTDIR] {
            assert!(!says_kernel_lacks_it(per_path), "{per_path:?}");
        }
    }
}
