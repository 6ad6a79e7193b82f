//! Text formats: IFC models (ISO 10303-21 "STEP" text, whose HEADER section names the schema,
//! the file, its authors, their organisation and the program that wrote it), and plain text.

use super::{clean, ContentMetadata, Source};

const MAGIC: &[u8] = b"ISO-10303-21;";
/// Lists inside lists, at most (the header nests two deep).
const DEPTH_MAX: usize = 8;

pub(super) fn is_step(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(head.len());
    head[start..].starts_with(MAGIC)
}

/// No NUL in the first 8 KiB and valid UTF-8 (a character cut at the end of the head aside).
pub(super) fn looks_like_text(head: &[u8]) -> bool {
    let sample = &head[..head.len().min(8 << 10)];
    if sample.is_empty() || sample.contains(&0) {
        return false;
    }
    match std::str::from_utf8(sample) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none() && sample.len() - error.valid_up_to() < 4,
    }
}

/// A value of a STEP header record.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Text(String),
    List(Vec<Value>),
    Other,
}

impl Value {
    fn text(&self) -> Option<String> {
        match self {
            Value::Text(text) => clean(text),
            _ => None,
        }
    }

    fn texts(&self) -> Vec<String> {
        match self {
            Value::List(items) => items.iter().filter_map(Value::text).collect(),
            other => other.text().into_iter().collect(),
        }
    }
}

pub(super) fn read_step(source: &Source<'_>, metadata: &mut ContentMetadata) -> Result<(), String> {
    let text = String::from_utf8_lossy(source.head);
    let start = text
        .find("HEADER;")
        .ok_or("IFC header unreadable: no HEADER section in the first 256 KiB")?;
    let end = text[start..]
        .find("ENDSEC;")
        .ok_or("IFC header unreadable: the HEADER section does not end in the first 256 KiB")?;
    let header = &text[start + "HEADER;".len()..start + end];
    for (name, arguments) in records(header)? {
        match name.as_str() {
            "FILE_NAME" => {
                let field = |i: usize| arguments.get(i);
                if let Some(name) = field(0).and_then(Value::text) {
                    metadata.detail("file_name", name);
                }
                if let Some(stamp) = field(1).and_then(Value::text) {
                    metadata.created_at = chrono::DateTime::parse_from_rfc3339(&stamp)
                        .ok()
                        .map(|t| t.to_rfc3339());
                    metadata.detail("time_stamp", stamp);
                }
                let authors = field(2).map(Value::texts).unwrap_or_default();
                metadata.author = clean(&authors.join("; "));
                let organisations = field(3).map(Value::texts).unwrap_or_default();
                if let Some(organisation) = clean(&organisations.join("; ")) {
                    metadata.detail("organization", organisation);
                }
                if let Some(preprocessor) = field(4).and_then(Value::text) {
                    metadata.detail("preprocessor_version", preprocessor);
                }
                metadata.application = field(5).and_then(Value::text);
                if let Some(authorization) = field(6).and_then(Value::text) {
                    metadata.detail("authorization", authorization);
                }
            }
            "FILE_SCHEMA" => {
                let schemas = arguments.first().map(Value::texts).unwrap_or_default();
                metadata.format_version = clean(&schemas.join(", "));
            }
            "FILE_DESCRIPTION" => {
                let description = arguments.first().map(Value::texts).unwrap_or_default();
                if let Some(description) = clean(&description.join("; ")) {
                    metadata.detail("description", description);
                }
            }
            _ => {}
        }
    }
    if metadata.format_version.is_none() {
        return Err("IFC header unreadable: no FILE_SCHEMA".into());
    }
    Ok(())
}

/// The records `NAME(arguments);` of a header section.
fn records(header: &str) -> Result<Vec<(String, Vec<Value>)>, String> {
    let mut parser = Parser {
        bytes: header.as_bytes(),
        at: 0,
    };
    let mut found = Vec::new();
    loop {
        parser.skip_space();
        if parser.at >= parser.bytes.len() {
            return Ok(found);
        }
        let name = parser.name();
        if name.is_empty() {
            return Err(format!("IFC header unreadable: unexpected text at byte {}", parser.at));
        }
        parser.skip_space();
        let Value::List(arguments) = parser.list(0)? else {
            return Err(format!("IFC header unreadable: {name} has no arguments"));
        };
        parser.skip_space();
        if !parser.eat(b';') {
            return Err(format!("IFC header unreadable: {name} does not end with ';'"));
        }
        found.push((name, arguments));
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let matched = self.peek() == Some(byte);
        if matched {
            self.at += 1;
        }
        matched
    }

    /// Blanks and `/* comments */`.
    fn skip_space(&mut self) {
        loop {
            while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
                self.at += 1;
            }
            if self.bytes[self.at..].starts_with(b"/*") {
                match self.bytes[self.at + 2..].windows(2).position(|w| w == b"*/") {
                    Some(end) => self.at += 2 + end + 2,
                    None => self.at = self.bytes.len(),
                }
            } else {
                return;
            }
        }
    }

    fn name(&mut self) -> String {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            self.at += 1;
        }
        String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned()
    }

    fn list(&mut self, depth: usize) -> Result<Value, String> {
        if depth > DEPTH_MAX {
            return Err("IFC header unreadable: lists nested too deep".into());
        }
        if !self.eat(b'(') {
            return Err(format!("IFC header unreadable: '(' expected at byte {}", self.at));
        }
        let mut items = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None => return Err("IFC header unreadable: a list does not end".into()),
                Some(b')') => {
                    self.at += 1;
                    return Ok(Value::List(items));
                }
                Some(b',') => self.at += 1,
                Some(b'(') => items.push(self.list(depth + 1)?),
                Some(b'\'') => items.push(Value::Text(self.string()?)),
                Some(_) => {
                    // $, *, numbers, enumerations and typed values: skipped to the next ',' or ')'.
                    let start = self.at;
                    while self.peek().is_some_and(|b| b != b',' && b != b')' && b != b'(') {
                        self.at += 1;
                    }
                    if self.peek() == Some(b'(') {
                        self.list(depth + 1)?;
                    } else if self.at == start {
                        return Err(format!("IFC header unreadable: unexpected byte at {}", self.at));
                    }
                    items.push(Value::Other);
                }
            }
        }
    }

    /// A quoted string: `''` is a quote; `\X2\hhhh…\X0\` UTF-16, `\X\hh` ISO 8859-1, `\\` a backslash.
    fn string(&mut self) -> Result<String, String> {
        self.at += 1;
        let mut raw = Vec::new();
        loop {
            match self.peek() {
                None => return Err("IFC header unreadable: a string does not end".into()),
                Some(b'\'') if self.bytes.get(self.at + 1) == Some(&b'\'') => {
                    raw.push(b'\'');
                    self.at += 2;
                }
                Some(b'\'') => {
                    self.at += 1;
                    return Ok(decode_escapes(&String::from_utf8_lossy(&raw)));
                }
                Some(byte) => {
                    raw.push(byte);
                    self.at += 1;
                }
            }
        }
    }
}

fn decode_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find('\\') {
        out.push_str(&rest[..position]);
        rest = &rest[position..];
        if let Some(after) = rest.strip_prefix("\\X2\\") {
            let end = after.find("\\X0\\").unwrap_or(after.len());
            let units: Vec<u16> = after.as_bytes()[..end]
                .chunks(4)
                .filter_map(|chunk| u16::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok())
                .collect();
            out.push_str(&String::from_utf16_lossy(&units));
            rest = after.get(end + 4..).unwrap_or("");
        } else if let Some(after) = rest.strip_prefix("\\X\\") {
            match after.get(..2).and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                Some(byte) => {
                    out.push(char::from(byte));
                    rest = &after[2..];
                }
                None => {
                    out.push('\\');
                    rest = &rest[1..];
                }
            }
        } else if let Some(after) = rest.strip_prefix("\\\\") {
            out.push('\\');
            rest = after;
        } else {
            out.push('\\');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}
