//! Office Open XML (docx, xlsx, pptx): the document properties in `docProps/core.xml` and
//! `docProps/app.xml` (zip, quick-xml), and the sheets or slides the package holds. The ZIP
//! directory sits at the end of the file: it is read through a reader that may read at most
//! `BOUNDS.second_look` bytes in all, and each part is decompressed to at most
//! `BOUNDS.xml_part_max` bytes, so a decompression bomb stops there.

use super::{clean, ContentMetadata, ReadAt, Source, BOUNDS};
use quick_xml::events::Event;
use std::io::{Read, Seek, SeekFrom};

pub(super) fn read(source: &Source<'_>, metadata: &mut ContentMetadata) -> Result<(), String> {
    let reader = Budgeted {
        file: source.file,
        size: source.size,
        position: 0,
        left: BOUNDS.second_look,
    };
    // Buffered, so the directory's many small reads are a few positioned reads of the file.
    let reader = std::io::BufReader::with_capacity(64 << 10, reader);
    let mut archive = zip::ZipArchive::new(reader).map_err(|error| format!("Office file unreadable: {error}"))?;
    if archive.len() > BOUNDS.zip_entries_max {
        return Err(format!(
            "Office file not read: {} parts, more than the {} bound",
            archive.len(),
            BOUNDS.zip_entries_max
        ));
    }
    let names: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .map(|name| name.into_owned())
        .collect();
    let count = |prefix: &str| {
        names
            .iter()
            .filter(|name| name.starts_with(prefix) && name.ends_with(".xml") && !name[prefix.len()..].contains('/'))
            .count() as u32
    };
    let has = |name: &str| names.iter().any(|entry| entry == name);
    let mime = if has("word/document.xml") {
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    } else if has("xl/workbook.xml") {
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    } else if has("ppt/presentation.xml") {
        "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    } else {
        // A plain ZIP archive.
        metadata.detail("entries", names.len());
        return Ok(());
    };
    metadata.mime_type = Some(mime.to_string());
    if mime.ends_with("spreadsheetml.sheet") {
        metadata.page_count = Some(count("xl/worksheets/sheet"));
    } else if mime.ends_with("presentationml.presentation") {
        metadata.page_count = Some(count("ppt/slides/slide"));
    }
    if has("docProps/core.xml") {
        let core = part(&mut archive, "docProps/core.xml")?;
        for (element, text) in elements(&core)? {
            match element.as_str() {
                "title" => metadata.title = clean(&text),
                "creator" => metadata.author = clean(&text),
                "lastModifiedBy" => metadata.last_modified_by = clean(&text),
                "created" => metadata.created_at = w3c_time(&text),
                "modified" => metadata.modified_at = w3c_time(&text),
                "subject" | "description" | "keywords" | "revision" | "category" => metadata.detail(&element, text),
                _ => {}
            }
        }
    }
    if has("docProps/app.xml") {
        let app = part(&mut archive, "docProps/app.xml")?;
        for (element, text) in elements(&app)? {
            match element.as_str() {
                "Application" => metadata.application = clean(&text),
                "AppVersion" => metadata.format_version = clean(&text),
                // Word records its page count; workbooks and presentations are counted above.
                "Pages" if metadata.page_count.is_none() => metadata.page_count = text.trim().parse().ok(),
                "Words" | "Company" | "Template" | "Slides" => metadata.detail(&element.to_lowercase(), text),
                _ => {}
            }
        }
    }
    Ok(())
}

/// One part of the package, decompressed up to the bound.
fn part<R: Read + Seek>(archive: &mut zip::ZipArchive<R>, name: &str) -> Result<Vec<u8>, String> {
    let entry = archive
        .by_name(name)
        .map_err(|error| format!("Office file unreadable: {name}: {error}"))?;
    let mut bytes = Vec::new();
    entry
        .take(BOUNDS.xml_part_max + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("Office file unreadable: {name}: {error}"))?;
    if bytes.len() as u64 > BOUNDS.xml_part_max {
        return Err(format!(
            "Office file not read: {name} decompresses to more than {} KiB",
            BOUNDS.xml_part_max >> 10
        ));
    }
    Ok(bytes)
}

/// Each leaf element's local name and text, in document order.
fn elements(xml: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    let mut raw = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => {
                current = Some(String::from_utf8_lossy(start.local_name().as_ref()).into_owned());
                raw.clear();
            }
            Ok(Event::Text(text)) => raw.push_str(&text.decode().unwrap_or_default()),
            Ok(Event::GeneralRef(entity)) => {
                raw.push('&');
                raw.push_str(&entity.decode().unwrap_or_default());
                raw.push(';');
            }
            Ok(Event::CData(data)) => raw.push_str(&String::from_utf8_lossy(&data)),
            Ok(Event::End(_)) => {
                if let Some(name) = current.take() {
                    let text = quick_xml::escape::unescape(&raw)
                        .map(|t| t.into_owned())
                        .unwrap_or(raw.clone());
                    found.push((name, text));
                }
                raw.clear();
            }
            Ok(Event::Eof) => return Ok(found),
            Ok(_) => {}
            Err(error) => return Err(format!("Office properties unreadable: {error}")),
        }
    }
}

/// `dcterms:W3CDTF` (what Office writes: `2024-03-15T09:30:00Z`) as RFC 3339.
fn w3c_time(text: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|time| time.to_rfc3339())
}

/// Read + Seek over a content with a budget: every byte read counts, and a reader that
/// would pass the budget gets an error instead.
struct Budgeted<'a> {
    file: &'a dyn ReadAt,
    size: u64,
    position: u64,
    left: u64,
}

impl Read for Budgeted<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let available = self.size.saturating_sub(self.position);
        let wanted = (buffer.len() as u64).min(available);
        if wanted == 0 {
            return Ok(0);
        }
        if wanted > self.left {
            return Err(std::io::Error::other(format!(
                "reads more than the {} MiB bound",
                BOUNDS.second_look >> 20
            )));
        }
        self.file.read_exact_at(&mut buffer[..wanted as usize], self.position)?;
        self.position += wanted;
        self.left -= wanted;
        Ok(wanted as usize)
    }
}

impl Seek for Budgeted<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.size.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| std::io::Error::other("seek out of the file"))?;
        Ok(self.position)
    }
}
