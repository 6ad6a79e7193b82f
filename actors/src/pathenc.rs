//! Lossless text form of relative paths, for the catalog's `files.path`.
//!
//! A path whose bytes are valid UTF-8 is stored verbatim (`path_encoding = 'utf8'`).
//! Any other path is stored with `path_encoding = 'percent'`: every byte that is not part of
//! a valid UTF-8 sequence, and every `%`, is written as `%XX` (upper-case hex); all other
//! characters stay as they are. Decoding a percent path gives back the exact bytes.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// How a path is written in `files.path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathEncoding {
    Utf8,
    Percent,
}

impl PathEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            PathEncoding::Utf8 => "utf8",
            PathEncoding::Percent => "percent",
        }
    }

    pub fn parse(text: &str) -> Option<PathEncoding> {
        match text {
            "utf8" => Some(PathEncoding::Utf8),
            "percent" => Some(PathEncoding::Percent),
            _ => None,
        }
    }
}

/// The catalog text of a relative path, and how it is encoded.
pub fn encode(path: &OsStr) -> (String, PathEncoding) {
    let bytes = path.as_bytes();
    if let Ok(text) = std::str::from_utf8(bytes) {
        return (text.to_owned(), PathEncoding::Utf8);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch == '%' {
                out.push_str("%25");
            } else {
                out.push(ch);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    (out, PathEncoding::Percent)
}

/// The bytes of a catalog path. Fails on a malformed percent escape.
pub fn decode(text: &str, encoding: PathEncoding) -> Result<OsString, String> {
    if encoding == PathEncoding::Utf8 {
        return Ok(OsString::from(text));
    }
    let input = text.as_bytes();
    let mut out = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        if input[index] != b'%' {
            out.push(input[index]);
            index += 1;
            continue;
        }
        let hex = input
            .get(index + 1..index + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            .ok_or_else(|| format!("malformed percent escape at byte {index} of {text:?}"))?;
        out.push(hex);
        index += 3;
    }
    Ok(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(bytes: &[u8]) -> (String, PathEncoding) {
        let (text, encoding) = encode(OsStr::from_bytes(bytes));
        let back = decode(&text, encoding).unwrap();
        assert_eq!(back.as_bytes(), bytes, "roundtrip of {bytes:?} via {text:?}");
        (text, encoding)
    }

    #[test]
    fn utf8_paths_are_verbatim() {
        assert_eq!(
            roundtrip("Ä/100%/plan.pdf".as_bytes()),
            ("Ä/100%/plan.pdf".into(), PathEncoding::Utf8)
        );
    }

    #[test]
    fn invalid_bytes_and_percent_are_escaped() {
        let (text, encoding) = roundtrip(b"caf\xe9/50%\xff.txt");
        assert_eq!(encoding, PathEncoding::Percent);
        assert_eq!(text, "caf%E9/50%25%FF.txt");
    }

    #[test]
    fn valid_multibyte_text_survives_next_to_invalid_bytes() {
        let mut bytes = "Übersicht".as_bytes().to_vec();
        bytes.push(0x80);
        let (text, _) = roundtrip(&bytes);
        assert_eq!(text, "Übersicht%80");
    }

    #[test]
    fn malformed_escape_is_an_error() {
        assert!(decode("a%G1", PathEncoding::Percent).is_err());
        assert!(decode("a%2", PathEncoding::Percent).is_err());
    }
}
