//! The object key of a content: `files/{sha256}{.ext}`.
//!
//! `.ext` is the last extension of the first path seen with that content, lowercased, kept
//! only if it is 1 to 16 characters of `[a-z0-9]`; otherwise there is none. The key depends
//! on nothing else, so no file name can steer a write elsewhere in the bucket or folder.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

const MAX_EXTENSION_LEN: usize = 16;

/// The sanitised extension of a file name, with its dot, or "".
pub fn extension_of(name: &OsStr) -> String {
    let bytes = name.as_bytes();
    let file_name = bytes.rsplit(|byte| *byte == b'/').next().unwrap_or(bytes);
    let Some(dot) = file_name.iter().rposition(|byte| *byte == b'.') else {
        return String::new();
    };
    // A leading dot names a hidden file, not an extension (".hidden" has none).
    if dot == 0 {
        return String::new();
    }
    let extension = &file_name[dot + 1..];
    let valid = !extension.is_empty()
        && extension.len() <= MAX_EXTENSION_LEN
        && extension.iter().all(|byte| byte.is_ascii_alphanumeric());
    if !valid {
        return String::new();
    }
    format!(".{}", String::from_utf8_lossy(extension).to_ascii_lowercase())
}

/// The storage key of a content first seen at `path`.
pub fn storage_key(sha256_hex: &str, path: &OsStr) -> String {
    format!("files/{sha256_hex}{}", extension_of(path))
}

/// True if `key` has the shape `storage_key` produces; the uploader refuses any other.
pub fn is_valid_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("files/") else {
        return false;
    };
    let (hash, extension) = rest.split_at(rest.len().min(64));
    let hash_ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let extension_ok = extension.is_empty()
        || (extension.starts_with('.')
            && extension.len() <= MAX_EXTENSION_LEN + 1
            && extension.len() > 1
            && extension[1..]
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    hash_ok && extension_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ext(name: &[u8]) -> String {
        extension_of(OsStr::from_bytes(name))
    }

    #[test]
    fn extension_table() {
        let table: &[(&[u8], &str)] = &[
            (b"Plan.PDF", ".pdf"),
            (b"a/b.c/archive.tar.gz", ".gz"),
            (b"dir.d/no_extension", ""),
            (b".hidden", ""),
            (b".hidden.cfg", ".cfg"),
            (b"trailing.", ""),
            (b"x.ab-c", ""),
            (b"x.\xff", ""),
            (b"x.12345678901234567", ""),
            (b"x.1234567890123456", ".1234567890123456"),
            (b"x.../../etc", ""),
        ];
        for (name, expected) in table {
            assert_eq!(ext(name), *expected, "extension of {:?}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn keys_have_the_contract_shape() {
        let key = storage_key(HASH, OsStr::new("Projekte/X/Foto.JPG"));
        assert_eq!(key, format!("files/{HASH}.jpg"));
        assert!(is_valid_key(&key));
        assert!(is_valid_key(&storage_key(HASH, OsStr::new("README"))));
        assert!(!is_valid_key(&format!("files/{HASH}/../x")));
        assert!(!is_valid_key("files/../../etc/passwd"));
    }
}
