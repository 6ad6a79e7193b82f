//! PDF: page count, title, author, dates, producer (lopdf's metadata reader, which reads the
//! trailer, the cross-reference data, the Info dictionary and the page tree only). lopdf
//! needs the file in memory, so PDFs up to `BOUNDS.pdf_max` are read whole, one at a time
//! in the whole process, which bounds the memory this costs.

use super::{clean, ContentMetadata, Source, BOUNDS};
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub(super) fn read(source: &Source<'_>, metadata: &mut ContentMetadata) -> Result<(), String> {
    if source.size > BOUNDS.pdf_max {
        return Err(format!(
            "PDF not read: larger than the {} MiB bound",
            BOUNDS.pdf_max >> 20
        ));
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let bytes = source
        .first_bytes(BOUNDS.pdf_max)
        .map_err(|error| format!("PDF: cannot read the file: {error}"))?;
    let info = lopdf::Document::load_metadata_mem(&bytes).map_err(|error| format!("PDF unreadable: {error}"))?;
    metadata.page_count = Some(info.page_count);
    metadata.format_version = clean(&format!("PDF {}", info.version));
    metadata.title = info.title.as_deref().and_then(clean);
    metadata.author = info.author.as_deref().and_then(clean);
    metadata.application = info
        .creator
        .as_deref()
        .and_then(clean)
        .or_else(|| info.producer.as_deref().and_then(clean));
    metadata.created_at = info.creation_date.as_deref().and_then(pdf_date);
    metadata.modified_at = info.modification_date.as_deref().and_then(pdf_date);
    for (key, value) in [
        ("producer", &info.producer),
        ("creator", &info.creator),
        ("subject", &info.subject),
        ("keywords", &info.keywords),
    ] {
        if let Some(value) = value {
            metadata.detail(key, value.as_str());
        }
    }
    Ok(())
}

/// A PDF date (`D:YYYYMMDDHHmmSSOHH'mm'`, every part after the year optional) as RFC 3339;
/// no zone means UTC, as the specification says of an unknown offset.
pub(super) fn pdf_date(text: &str) -> Option<String> {
    let text = text.trim().strip_prefix("D:").unwrap_or(text.trim());
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.len() < 4 {
        return None;
    }
    let part = |from: usize, len: usize, default: u32| -> Option<u32> {
        match digits.get(from..from + len) {
            Some(value) => value.parse().ok(),
            None if digits.len() <= from => Some(default),
            None => None,
        }
    };
    let date = chrono::NaiveDate::from_ymd_opt(part(0, 4, 0)? as i32, part(4, 2, 1)?, part(6, 2, 1)?)?;
    let time = date.and_hms_opt(part(8, 2, 0)?, part(10, 2, 0)?, part(12, 2, 0)?)?;
    let rest = &text[digits.len()..];
    let offset_seconds = match rest.chars().next() {
        Some(sign @ ('+' | '-')) => {
            let numbers: Vec<i32> = rest[1..]
                .split(|c: char| !c.is_ascii_digit())
                .filter(|part| !part.is_empty())
                .take(2)
                .filter_map(|part| part.parse().ok())
                .collect();
            let seconds = numbers.first().copied().unwrap_or(0) * 3600 + numbers.get(1).copied().unwrap_or(0) * 60;
            if sign == '-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => 0,
    };
    let offset = chrono::FixedOffset::east_opt(offset_seconds)?;
    let time = time.and_local_timezone(offset).single()?;
    Some(time.to_rfc3339())
}
