//! DWG: the release, from the six-byte version code every DWG file starts with.

use super::{ContentMetadata, Source};

const RELEASES: &[(&[u8; 6], &str)] = &[
    (b"AC1.40", "Release 1.40"),
    (b"AC1.50", "Release 2.05"),
    (b"AC2.10", "Release 2.10"),
    (b"AC1001", "Release 2.22"),
    (b"AC1002", "Release 2.50"),
    (b"AC1003", "Release 2.60"),
    (b"AC1004", "Release 9"),
    (b"AC1006", "Release 10"),
    (b"AC1009", "Release 11/12"),
    (b"AC1012", "Release 13"),
    (b"AC1014", "Release 14"),
    (b"AC1015", "AutoCAD 2000"),
    (b"AC1018", "AutoCAD 2004"),
    (b"AC1021", "AutoCAD 2007"),
    (b"AC1024", "AutoCAD 2010"),
    (b"AC1027", "AutoCAD 2013"),
    (b"AC1032", "AutoCAD 2018"),
];

/// The version code and the release it names, when `head` starts like a DWG file.
pub(super) fn dwg_version(head: &[u8]) -> Option<(&'static str, &'static str)> {
    let code = head.get(..6)?;
    RELEASES
        .iter()
        .find(|(known, _)| known.as_slice() == code)
        .map(|(known, release)| {
            // Every code in the table is ASCII.
            (std::str::from_utf8(known.as_slice()).unwrap_or_default(), *release)
        })
}

pub(super) fn read_dwg(source: &Source<'_>, metadata: &mut ContentMetadata) -> Result<(), String> {
    let (code, release) = dwg_version(source.head).ok_or("DWG version code unknown")?;
    metadata.format_version = Some(code.to_string());
    metadata.detail("release", release);
    Ok(())
}
