//! Real files of the formats an office keeps, made by well-kept crates, with known metadata:
//! photos with EXIF (jpeg-encoder, little_exif), PNG (png), PDF (lopdf), Word, Excel and
//! PowerPoint packages (zip), IFC models (STEP text), DWG headers and e-mails. The metadata
//! tests compare what the extractors read with the values these were made with; the corpus
//! uses them so that the benchmark's tree holds real formats.

use std::io::Write;

/// The EXIF of a sample photo.
#[derive(Clone, Debug)]
pub struct Photo {
    pub width: u16,
    pub height: u16,
    pub make: &'static str,
    pub model: &'static str,
    /// EXIF form: "2024:03:15 09:30:00".
    pub taken: &'static str,
    /// Degrees, minutes, seconds; hemisphere N/S and E/W.
    pub latitude: ([u32; 3], char),
    pub longitude: ([u32; 3], char),
    pub orientation: u16,
    pub software: &'static str,
}

pub const SITE_PHOTO: Photo = Photo {
    width: 64,
    height: 48,
    make: "Canon",
    model: "Canon EOS R6",
    taken: "2024:03:15 09:30:12",
    latitude: ([48, 8, 24], 'N'),
    longitude: ([11, 34, 30], 'E'),
    orientation: 6,
    software: "Firmware 1.8.1",
};

fn pixels(width: u16, height: u16, seed: u32) -> Vec<u8> {
    (0..width as u32 * height as u32 * 3)
        .map(|i| ((i ^ seed.rotate_left(7)).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// A JPEG with the photo's EXIF.
pub fn jpeg(photo: &Photo, seed: u32) -> Vec<u8> {
    use little_exif::exif_tag::ExifTag;
    use little_exif::rational::uR64;
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 80)
        .encode(
            &pixels(photo.width, photo.height, seed),
            photo.width,
            photo.height,
            jpeg_encoder::ColorType::Rgb,
        )
        .expect("a JPEG of sample pixels");
    let rational = |values: [u32; 3]| {
        values
            .iter()
            .map(|value| uR64 {
                nominator: *value,
                denominator: 1,
            })
            .collect::<Vec<_>>()
    };
    let mut metadata = little_exif::metadata::Metadata::new();
    metadata.set_tag(ExifTag::Make(photo.make.into()));
    metadata.set_tag(ExifTag::Model(photo.model.into()));
    metadata.set_tag(ExifTag::Software(photo.software.into()));
    metadata.set_tag(ExifTag::Orientation(vec![photo.orientation]));
    metadata.set_tag(ExifTag::DateTimeOriginal(photo.taken.into()));
    metadata.set_tag(ExifTag::GPSLatitudeRef(photo.latitude.1.to_string()));
    metadata.set_tag(ExifTag::GPSLatitude(rational(photo.latitude.0)));
    metadata.set_tag(ExifTag::GPSLongitudeRef(photo.longitude.1.to_string()));
    metadata.set_tag(ExifTag::GPSLongitude(rational(photo.longitude.0)));
    metadata
        .write_to_vec(&mut bytes, little_exif::filetype::FileExtension::JPEG)
        .expect("EXIF written into the JPEG");
    bytes
}

/// A PNG without EXIF.
pub fn png(width: u16, height: u16, seed: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width.into(), height.into());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("a PNG header");
    writer
        .write_image_data(&pixels(width, height, seed))
        .expect("PNG pixels");
    writer.finish().expect("a PNG");
    bytes
}

/// A PDF's Info dictionary and its pages.
#[derive(Clone, Debug)]
pub struct Pdf {
    pub pages: u32,
    pub title: &'static str,
    pub author: &'static str,
    pub creator: &'static str,
    pub producer: &'static str,
    /// PDF form: "D:20240315093000+01'00'".
    pub created: &'static str,
    pub modified: &'static str,
}

pub const PLAN_PDF: Pdf = Pdf {
    pages: 3,
    title: "Grundriss EG Haus B",
    author: "Anna Architektin",
    creator: "AutoCAD 2024",
    producer: "PDF-XChange 9.5",
    created: "D:20240315093000+01'00'",
    modified: "D:20240402174500Z",
};

pub fn pdf(spec: &Pdf, seed: u32) -> Vec<u8> {
    use lopdf::{dictionary, Document, Object, Stream};
    let mut document = Document::with_version("1.7");
    let pages_id = document.new_object_id();
    let mut kids = Vec::new();
    for page in 0..spec.pages {
        let content = format!("BT /F1 12 Tf 72 720 Td (page {page} of sample {seed}) Tj ET");
        let content_id = document.add_object(Stream::new(dictionary! {}, content.into_bytes()));
        let page_id = document.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
        });
        kids.push(Object::from(page_id));
    }
    document.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => spec.pages as i64,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = document.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    let info_id = document.add_object(dictionary! {
        "Title" => Object::string_literal(spec.title),
        "Author" => Object::string_literal(spec.author),
        "Creator" => Object::string_literal(spec.creator),
        "Producer" => Object::string_literal(spec.producer),
        "CreationDate" => Object::string_literal(spec.created),
        "ModDate" => Object::string_literal(spec.modified),
    });
    document.trailer.set("Root", catalog_id);
    document.trailer.set("Info", info_id);
    let mut bytes = Vec::new();
    document.save_to(&mut bytes).expect("a PDF");
    bytes
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfficeKind {
    Docx,
    Xlsx,
    Pptx,
}

/// An Office package's document properties.
#[derive(Clone, Debug)]
pub struct Office {
    pub kind: OfficeKind,
    pub title: &'static str,
    pub creator: &'static str,
    pub last_modified_by: &'static str,
    /// W3CDTF, as Office writes it: "2024-03-15T09:30:00Z".
    pub created: &'static str,
    pub modified: &'static str,
    pub application: &'static str,
    /// Pages (Word, recorded in app.xml), sheets or slides (parts of the package).
    pub count: u32,
}

pub const COST_ESTIMATE: Office = Office {
    kind: OfficeKind::Xlsx,
    title: "Kostenschätzung KG 300",
    creator: "Bernd Bauleiter",
    last_modified_by: "Clara Controlling",
    created: "2024-01-10T08:00:00Z",
    modified: "2024-03-20T16:45:10Z",
    application: "Microsoft Excel",
    count: 4,
};

pub const TENDER_TEXT: Office = Office {
    kind: OfficeKind::Docx,
    title: "Leistungsverzeichnis Rohbau",
    creator: "Anna Architektin",
    last_modified_by: "Bernd Bauleiter",
    created: "2023-11-02T10:15:00Z",
    modified: "2024-02-28T12:00:00Z",
    application: "Microsoft Office Word",
    count: 12,
};

pub const CLIENT_SLIDES: Office = Office {
    kind: OfficeKind::Pptx,
    title: "Bauherrenpräsentation & Zeitplan",
    creator: "Clara Controlling",
    last_modified_by: "Anna Architektin",
    created: "2024-02-01T09:00:00Z",
    modified: "2024-02-05T18:30:00Z",
    application: "Microsoft Office PowerPoint",
    count: 7,
};

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The package, its parts in the order Office writes them (so that MIME sniffers that look
/// at the first parts recognise it).
pub fn office(spec: &Office, seed: u32) -> Vec<u8> {
    let (folder, main, content_type) = match spec.kind {
        OfficeKind::Docx => ("word", "word/document.xml", "wordprocessingml.document.main+xml"),
        OfficeKind::Xlsx => ("xl", "xl/workbook.xml", "spreadsheetml.sheet.main+xml"),
        OfficeKind::Pptx => ("ppt", "ppt/presentation.xml", "presentationml.presentation.main+xml"),
    };
    let core = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><dc:title>{}</dc:title><dc:creator>{}</dc:creator><cp:lastModifiedBy>{}</cp:lastModifiedBy><cp:revision>{seed}</cp:revision><dcterms:created xsi:type="dcterms:W3CDTF">{}</dcterms:created><dcterms:modified xsi:type="dcterms:W3CDTF">{}</dcterms:modified></cp:coreProperties>"#,
        xml_escape(spec.title),
        xml_escape(spec.creator),
        xml_escape(spec.last_modified_by),
        spec.created,
        spec.modified
    );
    let pages = match spec.kind {
        OfficeKind::Docx => format!("<Pages>{}</Pages>", spec.count),
        OfficeKind::Pptx => format!("<Slides>{}</Slides>", spec.count),
        OfficeKind::Xlsx => String::new(),
    };
    let app = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties"><Application>{}</Application>{pages}<AppVersion>16.0300</AppVersion></Properties>"#,
        xml_escape(spec.application)
    );
    let mut parts: Vec<(String, String)> = vec![
        (
            "[Content_Types].xml".into(),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Override PartName="/{main}" ContentType="application/vnd.openxmlformats-officedocument.{content_type}"/></Types>"#
            ),
        ),
        (
            "_rels/.rels".into(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"/>"#.into(),
        ),
        (main.into(), format!("<main folder=\"{folder}\" sample=\"{seed}\"/>")),
    ];
    let numbered = match spec.kind {
        OfficeKind::Xlsx => Some("xl/worksheets/sheet"),
        OfficeKind::Pptx => Some("ppt/slides/slide"),
        OfficeKind::Docx => None,
    };
    if let Some(prefix) = numbered {
        for n in 1..=spec.count {
            parts.push((format!("{prefix}{n}.xml"), format!("<part n=\"{n}\"/>")));
        }
    }
    parts.push(("docProps/core.xml".into(), core));
    parts.push(("docProps/app.xml".into(), app));
    zip_of(parts.iter().map(|(name, text)| (name.as_str(), text.as_bytes())))
}

fn zip_of<'a>(parts: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in parts {
        writer.start_file(name, options).expect("a zip entry");
        writer.write_all(bytes).expect("zip entry bytes");
    }
    writer.finish().expect("a zip").into_inner()
}

/// A Word package whose `docProps/core.xml` inflates to `inflated` bytes: a decompression bomb.
pub fn office_bomb(inflated: usize) -> Vec<u8> {
    let mut core = b"<cp:coreProperties><dc:title>".to_vec();
    core.resize(inflated, b' ');
    let parts: Vec<(&str, &[u8])> = vec![
        ("[Content_Types].xml", b"<Types/>"),
        ("_rels/.rels", b"<Relationships/>"),
        ("word/document.xml", b"<document/>"),
        ("docProps/core.xml", &core),
    ];
    zip_of(parts.into_iter())
}

/// An IFC model's header.
#[derive(Clone, Debug)]
pub struct Ifc {
    pub schema: &'static str,
    pub file_name: &'static str,
    pub time_stamp: &'static str,
    pub author: &'static str,
    pub organization: &'static str,
    pub preprocessor: &'static str,
    pub originating_system: &'static str,
}

pub const HOUSE_MODEL: Ifc = Ifc {
    schema: "IFC4",
    file_name: "Haus B - Architektur.ifc",
    time_stamp: "2024-03-15T09:30:00+01:00",
    author: "Anna Architektin",
    organization: "Planungsbüro Süd",
    preprocessor: "IfcOpenShell 0.7.0",
    originating_system: "Autodesk Revit 2024 (DEU)",
};

/// STEP strings: quotes doubled, non-ASCII as \X2\ UTF-16 hex, as IFC writers do.
fn step_string(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                out.push_str("\\X2\\");
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("{unit:04X}"));
                }
                out.push_str("\\X0\\");
            }
        }
    }
    out
}

pub fn ifc(spec: &Ifc, entities: usize) -> Vec<u8> {
    let mut text = format!(
        "ISO-10303-21;\nHEADER;\nFILE_DESCRIPTION(('ViewDefinition [CoordinationView_V2.0]'),'2;1');\nFILE_NAME('{}','{}',('{}'),('{}'),'{}','{}','');\nFILE_SCHEMA(('{}'));\nENDSEC;\nDATA;\n",
        step_string(spec.file_name),
        spec.time_stamp,
        step_string(spec.author),
        step_string(spec.organization),
        step_string(spec.preprocessor),
        step_string(spec.originating_system),
        spec.schema
    );
    for n in 1..=entities {
        text.push_str(&format!("#{n}=IFCCARTESIANPOINT(({n}.,0.,0.));\n"));
    }
    text.push_str("ENDSEC;\nEND-ISO-10303-21;\n");
    text.into_bytes()
}

/// The start of a DWG file of the release with this version code ("AC1032": AutoCAD 2018).
pub fn dwg(code: &str, size: usize, seed: u32) -> Vec<u8> {
    let mut bytes = code.as_bytes().to_vec();
    bytes.extend((bytes.len()..size).map(|i| ((i as u32 ^ seed).wrapping_mul(2_654_435_761) >> 24) as u8));
    bytes
}

/// An e-mail.
#[derive(Clone, Debug)]
pub struct Mail {
    pub subject: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    /// RFC 5322: "Fri, 15 Mar 2024 09:30:00 +0100".
    pub date: &'static str,
}

pub const SITE_MAIL: Mail = Mail {
    subject: "Baustelle Haus B: Betonage Decke über EG",
    from: "Bernd Bauleiter <bernd@example.org>",
    to: "anna@example.org",
    date: "Fri, 15 Mar 2024 09:30:00 +0100",
};

pub fn eml(spec: &Mail, seed: u32) -> Vec<u8> {
    format!(
        "Return-Path: <bernd@example.org>\r\nFrom: {}\r\nTo: {}\r\nSubject: =?UTF-8?B?{}?=\r\nDate: {}\r\nMessage-ID: <{seed}.sample@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDie Betonage ist für Montag geplant ({seed}).\r\n",
        spec.from,
        spec.to,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, spec.subject),
        spec.date
    )
    .into_bytes()
}

/// One sample of each format with its extension, seeded so that each seed gives other bytes.
pub fn one_of_each(seed: u32) -> Vec<(&'static str, Vec<u8>)> {
    FORMATS
        .iter()
        .map(|extension| (*extension, of_extension(extension, seed).expect("a sample format")))
        .collect()
}

/// The extensions samples are made for.
pub const FORMATS: &[&str] = &[
    ".jpg", ".png", ".pdf", ".docx", ".xlsx", ".pptx", ".ifc", ".dwg", ".eml",
];

/// A sample for a file name's extension (any case), when it is one of `FORMATS`.
pub fn of_extension(extension: &str, seed: u32) -> Option<Vec<u8>> {
    Some(match extension.to_ascii_lowercase().as_str() {
        ".jpg" => jpeg(&SITE_PHOTO, seed),
        ".png" => png(32, 24, seed),
        ".pdf" => pdf(&PLAN_PDF, seed),
        ".docx" => office(&TENDER_TEXT, seed),
        ".xlsx" => office(&COST_ESTIMATE, seed),
        ".pptx" => office(&CLIENT_SLIDES, seed),
        ".ifc" => ifc(&HOUSE_MODEL, 50 + (seed % 1000) as usize),
        ".dwg" => dwg("AC1032", 4096, seed),
        ".eml" => eml(&SITE_MAIL, seed),
        _ => return None,
    })
}
