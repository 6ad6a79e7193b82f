//! Property tests of the pieces that take arbitrary input: the lossless path encoding and the
//! ignore matcher. Names come from every byte value but NUL, like a Linux filesystem allows.

use fms_actors::fs::IgnoreMatcher;
use fms_actors::pathenc::{decode, encode, PathEncoding};
use proptest::prelude::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One path component: 1 to 255 bytes, anything but NUL and '/'.
fn component() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no NUL or /", |b| *b != 0 && *b != b'/'),
        1..=255,
    )
}

fn relative_path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(component(), 1..12).prop_map(|parts| parts.join(&b'/'))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_path_survives_encoding(bytes in relative_path()) {
        let path = OsStr::from_bytes(&bytes);
        let (text, encoding) = encode(path);
        let back = decode(&text, encoding).unwrap();
        prop_assert_eq!(back.as_bytes(), &bytes[..]);
        // UTF-8 paths are stored as they are; only the others are percent-encoded.
        match std::str::from_utf8(&bytes) {
            Ok(utf8) => {
                prop_assert_eq!(encoding, PathEncoding::Utf8);
                prop_assert_eq!(text.as_str(), utf8);
            }
            Err(_) => prop_assert_eq!(encoding, PathEncoding::Percent),
        }
    }

    #[test]
    fn decoding_arbitrary_text_never_panics(text in ".*", percent in any::<bool>()) {
        let encoding = if percent { PathEncoding::Percent } else { PathEncoding::Utf8 };
        let _ = decode(&text, encoding);
    }

    #[test]
    fn anything_under_an_ignored_folder_is_ignored(
        before in prop::collection::vec(component(), 0..4),
        folder in prop::sample::select(vec!["@eaDir", "#recycle", "#snapshot", ".SynologyWorkingDirectory", "@EADIR", "#Recycle"]),
        after in prop::collection::vec(component(), 0..4),
        name in component(),
    ) {
        let matcher = IgnoreMatcher::new::<&str>(&[]).unwrap();
        let mut parts: Vec<Vec<u8>> = before;
        parts.push(folder.as_bytes().to_vec());
        parts.extend(after);
        parts.push(name);
        let path = parts.join(&b'/');
        prop_assert!(matcher.is_ignored_path(Path::new(OsStr::from_bytes(&path))));
    }

    #[test]
    fn office_lock_and_temporary_files_are_ignored_in_any_case(stem in "[A-Za-z0-9 ._-]{1,40}", upper in any::<bool>()) {
        let matcher = IgnoreMatcher::new::<&str>(&[]).unwrap();
        for name in [format!("~${stem}"), format!("{stem}.tmp"), format!("{stem}.crdownload"), format!(".~lock.{stem}#")] {
            let name = if upper { name.to_uppercase() } else { name };
            prop_assert!(matcher.is_ignored(OsStr::new(&name), OsStr::new(&name)), "{} is ignored", name);
        }
    }

    #[test]
    fn the_matcher_takes_any_bytes(path in relative_path(), patterns in prop::collection::vec("[*?a-z.]{1,8}", 0..4)) {
        // Patterns that are not valid globs are refused, never a panic; valid ones never panic
        // on any name.
        if let Ok(matcher) = IgnoreMatcher::new(&patterns) {
            let _ = matcher.is_ignored_path(Path::new(OsStr::from_bytes(&path)));
        }
    }
}
