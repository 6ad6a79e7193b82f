//! E-mail messages (.eml, RFC 5322): subject, sender, recipients, date (mail-parser, on the
//! header block in the head). Outlook's .msg (an OLE compound file) has no well-kept Rust
//! reader; it gets its MIME type only.

use super::{clean, ContentMetadata, Source};

/// Header names a message starts with, as mail programs and servers write them.
const FIRST_HEADERS: &[&str] = &[
    "return-path:",
    "received:",
    "from:",
    "to:",
    "subject:",
    "date:",
    "message-id:",
    "mime-version:",
    "delivered-to:",
    "x-",
];

/// The first line is a header of a message, and a `From:` header and a `Date:` or
/// `Subject:` header follow before the first blank line.
pub(super) fn looks_like_message(head: &[u8]) -> bool {
    let sample = &head[..head.len().min(64 << 10)];
    let Ok(text) = std::str::from_utf8(&sample[..sample.len().min(valid_prefix(sample))]) else {
        return false;
    };
    let headers = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\n\n")
        .next()
        .unwrap_or("");
    let lower = headers.to_ascii_lowercase();
    let first = lower.lines().next().unwrap_or("");
    let has = |name: &str| lower.lines().any(|line| line.starts_with(name));
    FIRST_HEADERS.iter().any(|name| first.starts_with(name)) && has("from:") && (has("date:") || has("subject:"))
}

fn valid_prefix(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(error) => error.valid_up_to(),
    }
}

pub(super) fn read(source: &Source<'_>, metadata: &mut ContentMetadata) -> Result<(), String> {
    let message = mail_parser::MessageParser::new()
        .parse_headers(source.head)
        .ok_or("message headers unreadable")?;
    metadata.title = message.subject().and_then(clean);
    let address = |addr: &mail_parser::Addr<'_>| match (addr.name(), addr.address()) {
        (Some(name), Some(address)) => format!("{name} <{address}>"),
        (None, Some(address)) => address.to_string(),
        (Some(name), None) => name.to_string(),
        (None, None) => String::new(),
    };
    metadata.author = message
        .from()
        .and_then(|from| from.first())
        .and_then(|a| clean(&address(a)));
    if let Some(to) = message.to() {
        let recipients: Vec<String> = to.iter().filter_map(|a| clean(&address(a))).take(50).collect();
        if !recipients.is_empty() {
            metadata.detail("to", recipients);
        }
    }
    if let Some(date) = message.date() {
        metadata.created_at = chrono::DateTime::parse_from_rfc3339(&date.to_rfc3339())
            .ok()
            .map(|t| t.to_rfc3339());
    }
    if let Some(id) = message.message_id() {
        metadata.detail("message_id", id);
    }
    if metadata.author.is_none() && metadata.title.is_none() {
        return Err("message headers unreadable: no sender and no subject".into());
    }
    Ok(())
}
