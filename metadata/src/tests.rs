//! Each extractor on real files made by crates (fms-corpus's samples), with the values they
//! were made with; and on truncated, empty, random and malformed files: never a panic, a
//! clear reason.

use super::*;
use fms_corpus::samples;

fn text(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("<none>")
}

#[test]
fn a_photo_gives_its_exif() {
    let m = extract_bytes(&samples::jpeg(&samples::SITE_PHOTO, 1));
    assert_eq!(m.unreadable, None);
    assert_eq!(text(&m.mime_type), "image/jpeg");
    assert_eq!(text(&m.captured_at), "2024-03-15T09:30:12");
    assert_eq!(text(&m.camera_make), "Canon");
    assert_eq!(text(&m.camera_model), "Canon EOS R6");
    assert_eq!(text(&m.application), "Firmware 1.8.1");
    assert_eq!(m.orientation, Some(6));
    assert_eq!((m.width, m.height), (Some(64), Some(48)));
    let latitude = 48.0 + 8.0 / 60.0 + 24.0 / 3600.0;
    let longitude = 11.0 + 34.0 / 60.0 + 30.0 / 3600.0;
    assert!(
        (m.gps_latitude.unwrap() - latitude).abs() < 1e-9,
        "{:?}",
        m.gps_latitude
    );
    assert!(
        (m.gps_longitude.unwrap() - longitude).abs() < 1e-9,
        "{:?}",
        m.gps_longitude
    );
}

#[test]
fn a_png_gives_its_size() {
    let m = extract_bytes(&samples::png(32, 24, 1));
    assert_eq!(
        (text(&m.mime_type), m.width, m.height),
        ("image/png", Some(32), Some(24))
    );
    assert_eq!(m.unreadable, None);
}

#[test]
fn a_pdf_gives_pages_title_author_dates_and_program() {
    let m = extract_bytes(&samples::pdf(&samples::PLAN_PDF, 1));
    assert_eq!(m.unreadable, None);
    assert_eq!(text(&m.mime_type), "application/pdf");
    assert_eq!(m.page_count, Some(3));
    assert_eq!(text(&m.title), "Grundriss EG Haus B");
    assert_eq!(text(&m.author), "Anna Architektin");
    assert_eq!(text(&m.application), "AutoCAD 2024");
    assert_eq!(m.details["producer"], "PDF-XChange 9.5");
    assert_eq!(text(&m.created_at), "2024-03-15T09:30:00+01:00");
    assert_eq!(text(&m.modified_at), "2024-04-02T17:45:00+00:00");
    assert_eq!(text(&m.format_version), "PDF 1.7");
}

#[test]
fn office_files_give_their_properties_and_counts() {
    for (spec, mime) in [
        (
            &samples::TENDER_TEXT,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (
            &samples::COST_ESTIMATE,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        (
            &samples::CLIENT_SLIDES,
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        ),
    ] {
        let m = extract_bytes(&samples::office(spec, 1));
        assert_eq!(m.unreadable, None, "{spec:?}");
        assert_eq!(text(&m.mime_type), mime);
        assert_eq!(text(&m.title), spec.title);
        assert_eq!(text(&m.author), spec.creator);
        assert_eq!(text(&m.last_modified_by), spec.last_modified_by);
        assert_eq!(text(&m.application), spec.application);
        assert_eq!(m.page_count, Some(spec.count), "{spec:?}");
        let rfc3339 = |w3c: &str| chrono::DateTime::parse_from_rfc3339(w3c).unwrap().to_rfc3339();
        assert_eq!(text(&m.created_at), rfc3339(spec.created));
        assert_eq!(text(&m.modified_at), rfc3339(spec.modified));
    }
}

#[test]
fn an_ifc_model_gives_its_header() {
    let m = extract_bytes(&samples::ifc(&samples::HOUSE_MODEL, 10));
    assert_eq!(m.unreadable, None);
    assert_eq!(text(&m.mime_type), "application/x-step");
    assert_eq!(text(&m.format_version), "IFC4");
    assert_eq!(text(&m.author), "Anna Architektin");
    assert_eq!(text(&m.application), "Autodesk Revit 2024 (DEU)");
    assert_eq!(m.details["organization"], "Planungsbüro Süd");
    assert_eq!(m.details["file_name"], "Haus B - Architektur.ifc");
    assert_eq!(m.details["preprocessor_version"], "IfcOpenShell 0.7.0");
    assert_eq!(text(&m.created_at), "2024-03-15T09:30:00+01:00");
}

#[test]
fn a_dwg_gives_its_release() {
    let m = extract_bytes(&samples::dwg("AC1032", 2048, 1));
    assert_eq!(text(&m.mime_type), "image/vnd.dwg");
    assert_eq!(text(&m.format_version), "AC1032");
    assert_eq!(m.details["release"], "AutoCAD 2018");
}

#[test]
fn an_email_gives_subject_sender_and_date() {
    let m = extract_bytes(&samples::eml(&samples::SITE_MAIL, 1));
    assert_eq!(m.unreadable, None);
    assert_eq!(text(&m.mime_type), "message/rfc822");
    assert_eq!(text(&m.title), "Baustelle Haus B: Betonage Decke über EG");
    assert_eq!(text(&m.author), "Bernd Bauleiter <bernd@example.org>");
    assert_eq!(text(&m.created_at), "2024-03-15T09:30:00+01:00");
    assert_eq!(m.details["to"], serde_json::json!(["anna@example.org"]));
}

#[test]
fn plain_text_and_unknown_bytes_get_a_mime_type_only() {
    let m = extract_bytes(b"Hello, plain text\n");
    assert_eq!((text(&m.mime_type), &m.unreadable), ("text/plain", &None));
    let m = extract_bytes(&[0u8, 1, 2, 3, 255, 254, 0, 7]);
    assert_eq!((text(&m.mime_type), &m.unreadable), ("application/octet-stream", &None));
    let m = extract_bytes(b"");
    assert_eq!((m.mime_type.as_deref(), text(&m.unreadable)), (None, "empty file"));
}

#[test]
fn a_decompression_bomb_in_an_office_file_stops_at_the_bound() {
    let bomb = samples::office_bomb(64 << 20);
    assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
    let started = std::time::Instant::now();
    let m = extract_bytes(&bomb);
    assert_eq!(
        text(&m.mime_type),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    assert_eq!(
        text(&m.unreadable),
        "Office file not read: docProps/core.xml decompresses to more than 1024 KiB"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Every sample cut at many lengths, and with bytes flipped: a result each time, never a
/// panic, and the MIME type of what is left where the start survives.
#[test]
fn truncated_and_damaged_samples_are_marked_unreadable_never_a_panic() {
    for (extension, bytes) in samples::one_of_each(3) {
        let cuts = [1, 4, 8, 16, 64, 200, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1];
        for cut in cuts.into_iter().filter(|cut| *cut < bytes.len()) {
            let m = extract_bytes(&bytes[..cut]);
            assert!(
                m.mime_type.is_some() || m.unreadable.is_some(),
                "{extension} cut at {cut}: {m:?}"
            );
        }
        let mut damaged = bytes.clone();
        for i in (0..damaged.len()).step_by(7) {
            damaged[i] ^= 0x5A;
        }
        let _ = extract_bytes(&damaged);
    }
    // The cut ones the extractors can tell: a PDF without its end, an Office file without its
    // directory, an IFC header that never ends.
    let pdf = samples::pdf(&samples::PLAN_PDF, 3);
    let m = extract_bytes(&pdf[..pdf.len() / 2]);
    assert!(text(&m.unreadable).starts_with("PDF unreadable: "), "{m:?}");
    let docx = samples::office(&samples::TENDER_TEXT, 3);
    let m = extract_bytes(&docx[..docx.len() / 2]);
    assert!(text(&m.unreadable).starts_with("Office file unreadable: "), "{m:?}");
    let ifc = samples::ifc(&samples::HOUSE_MODEL, 0);
    let m = extract_bytes(&ifc[..120]);
    assert!(text(&m.unreadable).starts_with("IFC header unreadable: "), "{m:?}");
}

#[test]
fn random_bytes_behind_each_format_s_magic_never_panic() {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let magics: [&[u8]; 9] = [
        b"\xFF\xD8\xFF\xE1",
        b"\x89PNG\r\n\x1a\n",
        b"%PDF-1.7\n",
        b"PK\x03\x04",
        b"ISO-10303-21;\nHEADER;\n",
        b"AC1032",
        b"From: a@b\r\nDate: x\r\n",
        b"II*\x00",
        b"MM\x00*",
    ];
    for _ in 0..200 {
        for magic in magics {
            let mut bytes = magic.to_vec();
            let mut tail = vec![0u8; (rng.next_u32() % 4096) as usize];
            rng.fill_bytes(&mut tail);
            bytes.extend(tail);
            let _ = extract_bytes(&bytes);
        }
    }
}

#[test]
fn the_pdf_date_forms() {
    use super::pdf::pdf_date;
    assert_eq!(
        pdf_date("D:20240315093000+01'00'").unwrap(),
        "2024-03-15T09:30:00+01:00"
    );
    assert_eq!(pdf_date("D:20240315093000Z").unwrap(), "2024-03-15T09:30:00+00:00");
    assert_eq!(pdf_date("D:2024").unwrap(), "2024-01-01T00:00:00+00:00");
    assert_eq!(pdf_date("D:20241399"), None);
    assert_eq!(pdf_date("yesterday"), None);
}
