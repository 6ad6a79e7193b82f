//! Content metadata: what a file is, read from its bytes during the hashing read.
//!
//! The hasher keeps the first [`HEAD_BYTES`] of every file it reads; [`extract`] decides the
//! format from those bytes (never from the name), and each format's extractor works on the
//! head, or on a bounded second look at the open file where the format keeps what we want
//! elsewhere (a ZIP's central directory at the end, a PDF's cross-reference table). Every
//! input an extractor sees is bounded ([`Bounds`]), so time and memory are bounded too; a
//! file an extractor cannot read gives `unreadable` with the reason, and a panic inside a
//! parser is caught and reported the same way. Nothing here fails a hash or a sync.

mod cad;
mod email;
mod image;
mod office;
mod pdf;
mod text;

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The version of the extractors: contents read by an older one can be read again.
pub const EXTRACTOR_VERSION: i32 = 1;

/// Bytes of the start of each file the hasher keeps for the extractors.
pub const HEAD_BYTES: usize = 256 << 10;

/// Limits on what any extractor may read or build.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Bytes a second look may read from the file (ZIP directory and parts, image headers).
    pub second_look: u64,
    /// The largest PDF read whole (PDF's objects are found through offsets anywhere).
    pub pdf_max: u64,
    /// The largest part of an Office file decompressed (a bomb stops here).
    pub xml_part_max: u64,
    /// Entries in a ZIP's directory.
    pub zip_entries_max: usize,
}

pub const BOUNDS: Bounds = Bounds {
    second_look: 8 << 20,
    pdf_max: 32 << 20,
    xml_part_max: 1 << 20,
    zip_entries_max: 20_000,
};

/// The longest text kept in a typed column or in `details`.
const TEXT_MAX: usize = 1_000;

/// Facts about one content. Typed fields become the columns of `content_metadata`; the rest
/// goes to `details`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContentMetadata {
    /// MIME type from the bytes.
    pub mime_type: Option<String>,
    /// When a photo was taken, in the camera's local time (`YYYY-MM-DDTHH:MM:SS`).
    pub captured_at: Option<String>,
    pub camera_make: Option<String>,
    pub camera_model: Option<String>,
    pub gps_latitude: Option<f64>,
    pub gps_longitude: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// EXIF orientation (1–8).
    pub orientation: Option<u16>,
    /// Pages of a PDF or a document, sheets of a workbook, slides of a presentation.
    pub page_count: Option<u32>,
    pub title: Option<String>,
    /// Author, creator, sender.
    pub author: Option<String>,
    pub last_modified_by: Option<String>,
    /// RFC 3339 with an offset.
    pub created_at: Option<String>,
    pub modified_at: Option<String>,
    /// The program that wrote the file.
    pub application: Option<String>,
    /// The format's own version: PDF 1.7, IFC4, AC1032 (AutoCAD 2018)…
    pub format_version: Option<String>,
    /// Everything else the extractor found, by name.
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Why the format's extractor could not read this content (the MIME type still holds).
    pub unreadable: Option<String>,
}

impl ContentMetadata {
    fn detail(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        let value = match value.into() {
            serde_json::Value::String(text) => match clean(&text) {
                Some(text) => serde_json::Value::String(text),
                None => return,
            },
            other => other,
        };
        self.details.insert(key.into(), value);
    }
}

/// A text fit for a PostgreSQL `text` column: no NUL, trimmed, bounded, not empty.
pub(crate) fn clean(text: &str) -> Option<String> {
    let text: String = text.chars().filter(|c| *c != '\0').take(TEXT_MAX).collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Positioned reads of the content: the open file, or bytes in memory.
pub trait ReadAt {
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buffer, offset)
    }
}

impl ReadAt for &[u8] {
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let bytes = start
            .checked_add(buffer.len())
            .and_then(|end| (*self).get(start..end))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buffer.copy_from_slice(bytes);
        Ok(())
    }
}

/// What the extractors may look at: the head the hasher kept and the content itself.
pub struct Source<'a> {
    pub head: &'a [u8],
    pub size: u64,
    pub file: &'a dyn ReadAt,
}

impl Source<'_> {
    /// The whole head when it is the whole file, otherwise `limit` bytes read from the file
    /// (at most its size): the bounded second look.
    fn first_bytes(&self, limit: u64) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        if self.head.len() as u64 >= self.size.min(limit) {
            return Ok(std::borrow::Cow::Borrowed(&self.head[..self.size.min(limit) as usize]));
        }
        let mut bytes = vec![0u8; self.size.min(limit) as usize];
        self.file.read_exact_at(&mut bytes, 0)?;
        Ok(std::borrow::Cow::Owned(bytes))
    }
}

/// Read what the bytes say. Never fails: a problem is the `unreadable` reason.
pub fn extract(source: &Source<'_>) -> ContentMetadata {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| extract_inner(source))) {
        Ok(metadata) => metadata,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            ContentMetadata {
                mime_type: mime_of(source.head).map(|(mime, _)| mime),
                unreadable: clean(&format!("the parser failed: {message}")),
                ..ContentMetadata::default()
            }
        }
    }
}

/// The format families we read more of than the MIME type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Image,
    Pdf,
    Office,
    Step,
    Dwg,
    Email,
    Other,
}

fn mime_of(head: &[u8]) -> Option<(String, Family)> {
    if cad::dwg_version(head).is_some() {
        return Some(("image/vnd.dwg".into(), Family::Dwg));
    }
    if text::is_step(head) {
        return Some(("application/x-step".into(), Family::Step));
    }
    if let Some(kind) = infer::get(head) {
        let mime = kind.mime_type();
        let family = match mime {
            "image/jpeg" | "image/png" | "image/tiff" | "image/heif" | "image/avif" | "image/webp" | "image/gif"
            | "image/bmp" => Family::Image,
            "application/pdf" => Family::Pdf,
            // infer tells Office files by the order of their first parts; a package written
            // in another order is a ZIP to it, and the office reader looks inside.
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            | "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            | "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            | "application/zip" => Family::Office,
            _ => Family::Other,
        };
        return Some((mime.to_string(), family));
    }
    if email::looks_like_message(head) {
        return Some(("message/rfc822".into(), Family::Email));
    }
    if text::looks_like_text(head) {
        return Some(("text/plain".into(), Family::Other));
    }
    None
}

fn extract_inner(source: &Source<'_>) -> ContentMetadata {
    let mut metadata = ContentMetadata::default();
    if source.size == 0 {
        metadata.unreadable = Some("empty file".into());
        return metadata;
    }
    let Some((mime, family)) = mime_of(source.head) else {
        metadata.mime_type = Some("application/octet-stream".into());
        return metadata;
    };
    metadata.mime_type = Some(mime);
    let result = match family {
        Family::Image => image::read(source, &mut metadata),
        Family::Pdf => pdf::read(source, &mut metadata),
        Family::Office => office::read(source, &mut metadata),
        Family::Step => text::read_step(source, &mut metadata),
        Family::Dwg => cad::read_dwg(source, &mut metadata),
        Family::Email => email::read(source, &mut metadata),
        Family::Other => Ok(()),
    };
    if let Err(reason) = result {
        metadata.unreadable = clean(&reason);
    }
    metadata
}

/// `extract` over bytes in memory (tests and fuzzing).
pub fn extract_bytes(bytes: &[u8]) -> ContentMetadata {
    extract(&Source {
        head: &bytes[..bytes.len().min(HEAD_BYTES)],
        size: bytes.len() as u64,
        file: &bytes,
    })
}

/// One format's extractor on `bytes`, whatever they look like: the fuzzing entry points
/// (`fuzz/`), which reach each parser without the MIME sniffing in front of it.
#[doc(hidden)]
pub fn extract_as(format: &str, bytes: &[u8]) -> ContentMetadata {
    let source = Source {
        head: &bytes[..bytes.len().min(HEAD_BYTES)],
        size: bytes.len() as u64,
        file: &bytes,
    };
    // No catch_unwind here: a panic is what the fuzzer is looking for (`extract` catches it).
    let mut metadata = ContentMetadata::default();
    let result = match format {
        "image" => image::read(&source, &mut metadata),
        "pdf" => pdf::read(&source, &mut metadata),
        "office" => office::read(&source, &mut metadata),
        "ifc" => text::read_step(&source, &mut metadata),
        "dwg" => cad::read_dwg(&source, &mut metadata),
        "email" => email::read(&source, &mut metadata),
        _ => return extract_inner(&source),
    };
    if let Err(reason) = result {
        metadata.unreadable = clean(&reason);
    }
    metadata
}

#[cfg(test)]
mod tests;
