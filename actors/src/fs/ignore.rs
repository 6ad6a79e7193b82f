//! Ignore patterns, matched against each path component during the walk (so an ignored
//! folder is never entered), case-insensitively, because Windows and macOS clients write
//! `THUMBS.DB` and `Thumbs.db` alike to the same share.
//!
//! A pattern without `/` is matched against every component's name; a pattern with `/` is
//! matched against the whole path relative to the root. Names that are not UTF-8 are matched
//! in their lossy form (each invalid byte read as U+FFFD), so `*.tmp` still matches them.

use glob::{MatchOptions, Pattern, PatternError};
use std::ffi::OsStr;

/// What a NAS and its clients leave behind, ignored on every root.
pub const BUILTIN_PATTERNS: &[&str] = &[
    "@eaDir",
    "#recycle",
    "#snapshot",
    ".SynologyWorkingDirectory",
    "~$*",
    ".~lock.*#",
    "*.tmp",
    "*.crdownload",
    "*.part",
    ".DS_Store",
    "._*",
    "Thumbs.db",
    "desktop.ini",
];

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: false,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// A name pattern, matched the quickest way its form allows: every entry of every walk is
/// tested against all of them, and a rescan of a million files spent a large part of its
/// time in glob matching. The plain forms compare as `glob` does without case: ASCII letters
/// in either case, every other character exactly.
#[derive(Clone, Debug)]
enum NameTest {
    /// No wildcard: the whole name.
    Exact(String),
    /// `text*`
    Prefix(String),
    /// `*text`
    Suffix(String),
    Glob(Pattern),
}

const WILDCARDS: &[char] = &['*', '?', '[', ']'];

impl NameTest {
    fn new(text: &str, pattern: Pattern) -> NameTest {
        let plain = |part: &str| !part.contains(WILDCARDS);
        if plain(text) {
            NameTest::Exact(text.to_owned())
        } else if let Some(prefix) = text.strip_suffix('*').filter(|p| plain(p)) {
            NameTest::Prefix(prefix.to_owned())
        } else if let Some(suffix) = text.strip_prefix('*').filter(|s| plain(s)) {
            NameTest::Suffix(suffix.to_owned())
        } else {
            NameTest::Glob(pattern)
        }
    }

    fn matches(&self, name: &str) -> bool {
        let bytes = name.as_bytes();
        match self {
            NameTest::Exact(text) => bytes.eq_ignore_ascii_case(text.as_bytes()),
            NameTest::Prefix(text) => {
                bytes.len() >= text.len() && bytes[..text.len()].eq_ignore_ascii_case(text.as_bytes())
            }
            NameTest::Suffix(text) => {
                bytes.len() >= text.len() && bytes[bytes.len() - text.len()..].eq_ignore_ascii_case(text.as_bytes())
            }
            NameTest::Glob(pattern) => pattern.matches_with(name, OPTIONS),
        }
    }
}

#[derive(Clone, Debug)]
pub struct IgnoreMatcher {
    name_patterns: Vec<NameTest>,
    path_patterns: Vec<Pattern>,
    /// The configured patterns (`ignore.patterns`) as written, beside the built-in ones.
    extra: Vec<String>,
}

/// Two matchers are the same when they were made from the same configured patterns.
impl PartialEq for IgnoreMatcher {
    fn eq(&self, other: &IgnoreMatcher) -> bool {
        self.extra == other.extra
    }
}

impl IgnoreMatcher {
    /// The built-in patterns plus `extra`. Fails with the first pattern that is not a glob.
    pub fn new<S: AsRef<str>>(extra: &[S]) -> Result<IgnoreMatcher, (String, PatternError)> {
        let mut matcher = IgnoreMatcher {
            name_patterns: Vec::new(),
            path_patterns: Vec::new(),
            extra: extra.iter().map(|p| p.as_ref().to_owned()).collect(),
        };
        let all = BUILTIN_PATTERNS.iter().copied().chain(extra.iter().map(|p| p.as_ref()));
        for text in all {
            let trimmed = text.trim_start_matches('/');
            let pattern = Pattern::new(trimmed).map_err(|error| (text.to_owned(), error))?;
            if trimmed.contains('/') {
                matcher.path_patterns.push(pattern);
            } else {
                matcher.name_patterns.push(NameTest::new(trimmed, pattern));
            }
        }
        Ok(matcher)
    }

    /// The configured patterns, as written (the built-in ones not included).
    pub fn extra_patterns(&self) -> &[String] {
        &self.extra
    }

    /// Check a pattern without building a matcher (for configuration validation).
    pub fn check_pattern(text: &str) -> Result<(), PatternError> {
        Pattern::new(text.trim_start_matches('/')).map(|_| ())
    }

    /// True if the entry named `name`, at `relative_path` under the root, is ignored.
    /// Whether any component of `relative` (a path under the root) is ignored.
    pub fn is_ignored_path(&self, relative: &std::path::Path) -> bool {
        let mut prefix = std::path::PathBuf::new();
        for component in relative.components() {
            prefix.push(component);
            if self.is_ignored(component.as_os_str(), prefix.as_os_str()) {
                return true;
            }
        }
        false
    }

    pub fn is_ignored(&self, name: &OsStr, relative_path: &OsStr) -> bool {
        let name = name.to_string_lossy();
        if self.name_patterns.iter().any(|test| test.matches(&name)) {
            return true;
        }
        if self.path_patterns.is_empty() {
            return false;
        }
        let path = relative_path.to_string_lossy();
        self.path_patterns.iter().any(|p| p.matches_with(&path, OPTIONS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn ignored(matcher: &IgnoreMatcher, path: &[u8]) -> bool {
        let path = OsStr::from_bytes(path);
        let name = path.as_bytes().rsplit(|b| *b == b'/').next().unwrap();
        matcher.is_ignored(OsStr::from_bytes(name), path)
    }

    #[test]
    fn builtin_nas_junk_is_ignored() {
        let matcher = IgnoreMatcher::new::<&str>(&[]).unwrap();
        for junk in [
            &b"@eaDir"[..],
            b"#recycle",
            b"#snapshot",
            b".SynologyWorkingDirectory",
            b"~$Angebot.docx",
            b".~lock.Kalkulation.xlsx#",
            b"x.TMP",
            b"download.pdf.crdownload",
            b"big.iso.part",
            b".DS_Store",
            b"._Plan.pdf",
            b"THUMBS.DB",
            b"desktop.ini",
            b"bad\xffname.tmp",
        ] {
            assert!(
                ignored(&matcher, junk),
                "{:?} should be ignored",
                String::from_utf8_lossy(junk)
            );
        }
        for kept in [
            &b"Plan.pdf"[..],
            b"tmp",
            b"Angebot~.docx",
            b"partial.pdf",
            b"bad\xffname.pdf",
        ] {
            assert!(
                !ignored(&matcher, kept),
                "{:?} should be kept",
                String::from_utf8_lossy(kept)
            );
        }
    }

    #[test]
    fn user_patterns_by_name_and_by_path() {
        let matcher = IgnoreMatcher::new(&["*.bak", "Archiv/Alt/*"]).unwrap();
        assert!(ignored(&matcher, b"a/b/c.BAK"));
        assert!(ignored(&matcher, b"Archiv/Alt/x.pdf"));
        assert!(!ignored(&matcher, b"Neu/Archiv/Alt/x.pdf"));
        assert!(!ignored(&matcher, b"Archiv/Alt/sub/x.pdf"));
    }

    #[test]
    fn bad_pattern_is_reported_with_its_text() {
        let (text, _) = IgnoreMatcher::new(&["[unclosed"]).unwrap_err();
        assert_eq!(text, "[unclosed");
    }

    #[test]
    fn the_quick_forms_match_exactly_what_glob_matches() {
        let names = [
            "",
            "x",
            "x.tmp",
            "X.TMP",
            ".tmp",
            "tmp",
            "a.tmpx",
            "~$",
            "~$Brief.docx",
            "~$BRIEF",
            "@eaDir",
            "@EADIR",
            "@eaDirx",
            "xx@eaDir",
            "._",
            "._x",
            "_.x",
            "Ärger.TMP",
            "ärger.tmp",
            "ÄRGER.tmp",
            "Thumbs.db",
            "thumbs.DB",
            "Thumbs.db.bak",
            "é",
            "É.tmp",
            "a\u{fffd}b.tmp",
        ];
        let patterns = [
            "*.tmp",
            "~$*",
            "@eaDir",
            "._*",
            "Thumbs.db",
            "*.TMP",
            "Ärger*",
            "ä*",
            "*É.tmp",
            ".~lock.*#",
        ];
        for text in patterns {
            let pattern = Pattern::new(text).unwrap();
            let test = NameTest::new(text, pattern.clone());
            for name in names {
                assert_eq!(
                    test.matches(name),
                    pattern.matches_with(name, OPTIONS),
                    "pattern {text:?}, name {name:?}"
                );
            }
        }
        assert!(matches!(
            NameTest::new("*.tmp", Pattern::new("*.tmp").unwrap()),
            NameTest::Suffix(_)
        ));
        assert!(matches!(
            NameTest::new("~$*", Pattern::new("~$*").unwrap()),
            NameTest::Prefix(_)
        ));
        assert!(matches!(
            NameTest::new("@eaDir", Pattern::new("@eaDir").unwrap()),
            NameTest::Exact(_)
        ));
        assert!(matches!(
            NameTest::new(".~lock.*#", Pattern::new(".~lock.*#").unwrap()),
            NameTest::Glob(_)
        ));
    }
}
