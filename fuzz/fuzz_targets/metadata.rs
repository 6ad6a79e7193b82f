//! Every metadata parser entry point: the first byte chooses the extractor (or the whole
//! dispatch from MIME sniffing), the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

const FORMATS: &[&str] = &["sniff", "image", "pdf", "office", "ifc", "dwg", "email"];

fuzz_target!(|data: &[u8]| {
    let Some((choice, bytes)) = data.split_first() else {
        return;
    };
    let format = FORMATS[*choice as usize % FORMATS.len()];
    let _ = fms_metadata::extract_as(format, bytes);
});
