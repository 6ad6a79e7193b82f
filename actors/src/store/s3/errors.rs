//! The SDK's errors turned into one line a person can act on: the operation, the key, the
//! HTTP status, the S3 error code and message when the store sent one, and a hint for the
//! usual causes. Never the SDK's debug structures.

use crate::store::StoreError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// What an error says, pulled out of the SDK's layers.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Answer {
    /// None: no HTTP answer at all (refused, reset, timed out, TLS).
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
    /// Why no answer came, as the transport says it.
    pub transport: String,
    pub timed_out: bool,
}

impl Answer {
    pub(super) fn of<E>(error: &SdkError<E, HttpResponse>) -> Answer
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut answer = Answer {
            status: error.raw_response().map(|response| response.status().as_u16()),
            ..Answer::default()
        };
        match error {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                answer.code = inner.code().unwrap_or_default().to_owned();
                answer.message = inner.message().unwrap_or_default().to_owned();
            }
            SdkError::TimeoutError(_) => answer.timed_out = true,
            SdkError::DispatchFailure(failure) => {
                answer.timed_out = failure.is_timeout();
                if let Some(connector) = failure.as_connector_error() {
                    answer.transport = source_chain(connector);
                }
            }
            SdkError::ResponseError(_) => answer.message = "the store's answer could not be read".into(),
            other => answer.transport = source_chain(other),
        }
        answer
    }

    /// The store refused the request for a checksum header it does not support (B2).
    pub(super) fn refuses_checksum_headers(&self) -> bool {
        let text = format!("{} {}", self.code, self.message).to_ascii_lowercase();
        matches!(self.status, Some(400) | Some(501))
            && (text.contains("unsupported header") || text.contains("notimplemented"))
    }

    /// The store compared the bytes with a hash we sent and they differed.
    pub(super) fn is_digest_mismatch(&self) -> bool {
        if matches!(
            self.code.as_str(),
            "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" | "XAmzContentChecksumMismatch"
        ) {
            return true;
        }
        let text = format!("{} {}", self.code, self.message).to_ascii_lowercase();
        self.status == Some(400)
            && !self.refuses_checksum_headers()
            && (text.contains("checksum") || text.contains("sha256") || text.contains("digest"))
            && (text.contains("match") || text.contains("invalid") || text.contains("bad"))
    }

    fn unreachable(&self) -> bool {
        self.status.is_none() || matches!(self.status, Some(502..=504)) || self.code == "ServiceUnavailable"
    }

    /// What to check, for the usual causes.
    fn hint(&self) -> Option<&'static str> {
        let text = format!("{} {} {}", self.code, self.message, self.transport);
        if text.contains("invalid peer certificate") || text.contains("UnknownIssuer") {
            return Some("the endpoint's TLS certificate is not trusted: set storage.ca_file to the CA that signs it, and use the host name it lists");
        }
        if self.refuses_checksum_headers() {
            return Some("the store refuses checksum headers: set storage.integrity = \"auto\", which finds what the store verifies");
        }
        match (self.status, self.code.as_str()) {
            (Some(404), "NoSuchBucket") => Some("check storage.bucket: the store has no bucket of that name"),
            (Some(404), "NoSuchKey" | "NoSuchUpload") => None,
            (Some(404), _) => Some("check storage.endpoint and storage.bucket: a 404 on every request means the URL is wrong (a path such as /storage/v1/s3 belongs in storage.endpoint)"),
            (Some(403), "RequestTimeTooSkewed") => Some("the NAS's clock is off: set its time by NTP"),
            (Some(403), _) | (Some(401), _) => Some("check storage.access_key_id and storage.secret_access_key, the key's rights on the bucket, and the NAS's clock"),
            (Some(301) | Some(307), _) => Some("check storage.region: the bucket lives in another region"),
            (Some(500..=599), _) => Some("the store has a problem of its own; retried with backoff"),
            (None, _) if self.timed_out => Some("no answer in time: check the network to the store, or raise the timeout"),
            (None, _) => Some("cannot reach the store: check storage.endpoint and the network"),
            _ => None,
        }
    }
}

/// One line: `PUT files/ab…: HTTP 404 NoSuchBucket: The bucket does not exist (check …)`.
pub(super) fn describe(operation: &str, key: &str, answer: &Answer) -> String {
    let mut line = format!("{operation} {key}: ");
    match answer.status {
        Some(status) => line.push_str(&format!("HTTP {status}")),
        None if answer.timed_out => line.push_str("no answer in time"),
        None => line.push_str("no answer"),
    }
    if !answer.code.is_empty() {
        line.push_str(&format!(" {}", answer.code));
    }
    for detail in [&answer.message, &answer.transport] {
        if !detail.is_empty() {
            line.push_str(&format!(": {detail}"));
        }
    }
    if let Some(hint) = answer.hint() {
        line.push_str(&format!(" ({hint})"));
    }
    line.replace(['\n', '\r'], " ")
}

/// Split an SDK error by what the caller does next, with its one-line description.
pub(super) fn classify<E>(operation: &str, key: &str, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    classify_answer(operation, key, &Answer::of(&error))
}

/// [`classify`] for an answer already pulled out (or one the SDK never saw).
pub(super) fn classify_answer(operation: &str, key: &str, answer: &Answer) -> StoreError {
    let text = describe(operation, key, answer);
    if answer.is_digest_mismatch() {
        StoreError::ContentMismatch(text)
    } else if answer.unreachable() {
        // No answer at all, or the store says it cannot serve now: the store is down, not
        // this content; the uploader waits for it instead of spending the item's attempts.
        StoreError::Unavailable(text)
    } else {
        StoreError::Other(text)
    }
}

/// The messages of an error and its sources, without repeats or the SDK's generic layers.
pub(super) fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&dyn std::error::Error> = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        let generic = matches!(
            text.as_str(),
            "dispatch failure" | "io error" | "other" | "timeout" | "client error (Connect)" | "unhandled error"
        );
        if !generic && !text.is_empty() && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Option<u16>, code: &str, message: &str) -> Answer {
        Answer {
            status,
            code: code.into(),
            message: message.into(),
            ..Answer::default()
        }
    }

    #[test]
    fn each_usual_cause_gets_its_hint_on_one_line() {
        let table = [
            (
                answer(Some(404), "", ""),
                "PUT files/x: HTTP 404 (check storage.endpoint and storage.bucket",
            ),
            (
                answer(Some(404), "NoSuchBucket", "The specified bucket does not exist"),
                "HTTP 404 NoSuchBucket: The specified bucket does not exist (check storage.bucket",
            ),
            (
                answer(Some(403), "SignatureDoesNotMatch", "bad\nsignature"),
                "HTTP 403 SignatureDoesNotMatch: bad signature (check storage.access_key_id",
            ),
            (answer(Some(403), "RequestTimeTooSkewed", ""), "(the NAS's clock is off"),
            (
                answer(
                    Some(400),
                    "InvalidArgument",
                    "Unsupported header 'x-amz-checksum-sha256' received for this API call.",
                ),
                "(the store refuses checksum headers: set storage.integrity = \"auto\"",
            ),
            (
                answer(Some(503), "ServiceUnavailable", "busy"),
                "(the store has a problem of its own",
            ),
            (
                Answer {
                    transport: "Connection refused (os error 111)".into(),
                    ..Answer::default()
                },
                "PUT files/x: no answer: Connection refused (os error 111) (cannot reach the store",
            ),
        ];
        for (answer, expected) in table {
            let line = describe("PUT", "files/x", &answer);
            assert!(line.contains(expected), "{line:?} lacks {expected:?}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn mismatches_refusals_and_outages_are_told_apart() {
        assert!(answer(Some(400), "BadDigest", "").is_digest_mismatch());
        assert!(answer(Some(400), "XAmzContentSHA256Mismatch", "").is_digest_mismatch());
        assert!(answer(Some(400), "InvalidRequest", "Checksum value does not match").is_digest_mismatch());
        let refused = answer(
            Some(400),
            "InvalidArgument",
            "Unsupported header 'x-amz-checksum-sha256' received",
        );
        assert!(refused.refuses_checksum_headers() && !refused.is_digest_mismatch());
        assert!(!answer(Some(403), "AccessDenied", "").is_digest_mismatch());
        assert!(answer(None, "", "").unreachable());
        assert!(!answer(Some(404), "", "").unreachable());
    }
}
