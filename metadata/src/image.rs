//! Images: pixel dimensions (imagesize) and EXIF (kamadak-exif): capture time, camera,
//! GPS position, orientation. Read from the head; a file whose EXIF or header lies beyond
//! it gets one bounded second look.

use super::{clean, ContentMetadata, Source, BOUNDS};
use exif::{In, Tag, Value};
use std::io::Cursor;

pub(super) fn read(source: &Source<'_>, metadata: &mut ContentMetadata) -> Result<(), String> {
    let whole_head = source.head.len() as u64 >= source.size;
    let mut bytes = std::borrow::Cow::Borrowed(source.head);
    let exif = match read_exif(&bytes) {
        Err(exif::Error::Io(_)) | Err(exif::Error::InvalidFormat(_)) if !whole_head => {
            bytes = source
                .first_bytes(BOUNDS.second_look)
                .map_err(|error| format!("image: cannot read the file: {error}"))?;
            read_exif(&bytes)
        }
        other => other,
    };
    if let Ok(size) = imagesize::blob_size(&bytes) {
        metadata.width = u32::try_from(size.width).ok();
        metadata.height = u32::try_from(size.height).ok();
    }
    match exif {
        Ok(exif) => {
            exif_facts(&exif, metadata);
            Ok(())
        }
        Err(exif::Error::NotFound(_)) | Err(exif::Error::BlankValue(_)) => Ok(()),
        Err(exif::Error::PartialResult(partial)) => {
            let (exif, errors) = partial.into_inner();
            exif_facts(&exif, metadata);
            Err(format!("EXIF partly unreadable: {}", first_error(&errors)))
        }
        Err(error) => Err(format!("EXIF unreadable: {error}")),
    }
}

fn first_error(errors: &[exif::Error]) -> String {
    errors.first().map(|error| error.to_string()).unwrap_or_default()
}

fn read_exif(bytes: &[u8]) -> Result<exif::Exif, exif::Error> {
    exif::Reader::new()
        .continue_on_error(true)
        .read_from_container(&mut Cursor::new(bytes))
}

fn ascii(exif: &exif::Exif, tag: Tag) -> Option<String> {
    match &exif.get_field(tag, In::PRIMARY)?.value {
        Value::Ascii(parts) => parts.first().and_then(|part| clean(&String::from_utf8_lossy(part))),
        _ => None,
    }
}

fn uint(exif: &exif::Exif, tag: Tag) -> Option<u32> {
    exif.get_field(tag, In::PRIMARY)?.value.get_uint(0)
}

fn rational(exif: &exif::Exif, tag: Tag) -> Option<f64> {
    match &exif.get_field(tag, In::PRIMARY)?.value {
        Value::Rational(values) => values.first().map(|value| value.to_f64()).filter(|v| v.is_finite()),
        _ => None,
    }
}

/// EXIF's "YYYY:MM:DD HH:MM:SS" as an ISO local time, when it is a real date.
fn local_time(exif: &exif::Exif, tag: Tag) -> Option<String> {
    let Value::Ascii(parts) = &exif.get_field(tag, In::PRIMARY)?.value else {
        return None;
    };
    let time = exif::DateTime::from_ascii(parts.first()?).ok()?;
    let date = chrono::NaiveDate::from_ymd_opt(time.year.into(), time.month.into(), time.day.into())?;
    let time = date.and_hms_opt(time.hour.into(), time.minute.into(), time.second.into())?;
    Some(time.format("%Y-%m-%dT%H:%M:%S").to_string())
}

/// Degrees, minutes, seconds and a hemisphere as a signed decimal degree.
fn coordinate(exif: &exif::Exif, tag: Tag, reference: Tag, negative: u8, limit: f64) -> Option<f64> {
    let Value::Rational(parts) = &exif.get_field(tag, In::PRIMARY)?.value else {
        return None;
    };
    let [degrees, minutes, seconds] = parts.get(..3)? else {
        return None;
    };
    let value = degrees.to_f64() + minutes.to_f64() / 60.0 + seconds.to_f64() / 3600.0;
    let sign = match &exif.get_field(reference, In::PRIMARY)?.value {
        Value::Ascii(parts) if parts.first().and_then(|p| p.first()) == Some(&negative) => -1.0,
        _ => 1.0,
    };
    let value = sign * value;
    (value.is_finite() && value.abs() <= limit).then_some(value)
}

fn exif_facts(exif: &exif::Exif, metadata: &mut ContentMetadata) {
    metadata.captured_at = local_time(exif, Tag::DateTimeOriginal).or_else(|| local_time(exif, Tag::DateTimeDigitized));
    metadata.camera_make = ascii(exif, Tag::Make);
    metadata.camera_model = ascii(exif, Tag::Model);
    metadata.application = ascii(exif, Tag::Software);
    metadata.orientation = uint(exif, Tag::Orientation)
        .and_then(|value| u16::try_from(value).ok())
        .filter(|value| (1..=8).contains(value));
    metadata.gps_latitude = coordinate(exif, Tag::GPSLatitude, Tag::GPSLatitudeRef, b'S', 90.0);
    metadata.gps_longitude = coordinate(exif, Tag::GPSLongitude, Tag::GPSLongitudeRef, b'W', 180.0);
    if metadata.gps_latitude.is_none() || metadata.gps_longitude.is_none() {
        metadata.gps_latitude = None;
        metadata.gps_longitude = None;
    }
    if metadata.width.is_none() {
        metadata.width = uint(exif, Tag::PixelXDimension);
        metadata.height = uint(exif, Tag::PixelYDimension);
    }
    if let Some(offset) = ascii(exif, Tag::OffsetTimeOriginal) {
        metadata.detail("capture_offset", offset);
    }
    if let Some(lens) = ascii(exif, Tag::LensModel) {
        metadata.detail("lens", lens);
    }
    if let Some(iso) = uint(exif, Tag::PhotographicSensitivity) {
        metadata.detail("iso", iso);
    }
    for (key, tag) in [
        ("exposure_time", Tag::ExposureTime),
        ("f_number", Tag::FNumber),
        ("focal_length_mm", Tag::FocalLength),
        ("gps_altitude_m", Tag::GPSAltitude),
    ] {
        if let Some(value) = rational(exif, tag) {
            metadata.detail(key, value);
        }
    }
    if let Some(description) = ascii(exif, Tag::ImageDescription) {
        metadata.title = Some(description);
    }
    if let Some(artist) = ascii(exif, Tag::Artist) {
        metadata.author = Some(artist);
    }
}
