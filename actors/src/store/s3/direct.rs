//! Single-part uploads signed with `aws-sigv4` and sent through the SDK's own HTTP connector
//! (the same TLS settings and connection pool type), without the SDK's request orchestrator.
//!
//! Why: in a first sync of 10,000 office files the orchestrator (its configuration layers,
//! interceptors, endpoint rules and identity resolution around each request) took about a
//! quarter of the process's CPU, some 120 µs for every PUT of a small file (perf; the
//! README's figures of client CPU). These PUTs are nearly all of the requests a sync makes;
//! everything else (HEAD, multipart, reads, listings, deletes, the integrity probe) still
//! goes through the SDK.
//!
//! What the store sees is what the SDK sent: the same SigV4 signature over the same headers,
//! the payload hash in `x-amz-content-sha256` (the registered SHA-256, or
//! `UNSIGNED-PAYLOAD`), `x-amz-checksum-sha256` when the store verifies it, and the SDK's
//! addressing (path style, or the bucket in the host name). Transient failures (no answer,
//! 5xx, throttling) are tried again as the SDK's standard retry mode does: up to three
//! attempts with jittered backoff, all within the caller's timeout.

use super::errors::Answer;
use super::request_url;
use super::sign::Payload;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::HttpConnector;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Attempts of one PUT, as the SDK's standard retry mode makes.
const ATTEMPTS: u32 = 3;
/// The first retry waits up to this long (full jitter), the next twice as long.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// An error body longer than this is not read further (its code and message come first).
const ERROR_BODY_LIMIT: usize = 64 << 10;

#[derive(Clone, Debug)]
pub(super) struct DirectPut {
    connector: Arc<Connector>,
    identity: Identity,
    region: String,
    endpoint: Option<String>,
    bucket: String,
    path_style: bool,
}

impl DirectPut {
    /// None where the SDK would address the bucket differently from [`request_url`]: a bucket
    /// name with dots in the host name (the SDK falls back to path style there).
    pub(super) fn new(
        connector: Connector,
        credentials: Credentials,
        region: &str,
        endpoint: Option<&str>,
        bucket: &str,
        path_style: bool,
    ) -> Option<DirectPut> {
        if !path_style && bucket.contains('.') {
            return None;
        }
        Some(DirectPut {
            connector: Arc::new(connector),
            identity: credentials.into(),
            region: region.to_owned(),
            endpoint: endpoint.map(str::to_owned),
            bucket: bucket.to_owned(),
            path_style,
        })
    }

    /// PUT `body` under `key`; on failure, what the store (or the transport) answered.
    pub(super) async fn put(
        &self,
        key: &str,
        body: Bytes,
        payload: &Payload,
        checksum_base64: Option<&str>,
    ) -> Result<(), Answer> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let answer = match self.attempt(key, body.clone(), payload, checksum_base64).await {
                Ok(()) => return Ok(()),
                Err(answer) => answer,
            };
            if attempt >= ATTEMPTS || !transient(&answer) {
                return Err(answer);
            }
            let ceiling = FIRST_BACKOFF * 2u32.pow(attempt - 1);
            tokio::time::sleep(ceiling.mul_f64(rand::random::<f64>())).await;
        }
    }

    async fn attempt(
        &self,
        key: &str,
        body: Bytes,
        payload: &Payload,
        checksum_base64: Option<&str>,
    ) -> Result<(), Answer> {
        let url = request_url(
            self.endpoint.as_deref(),
            &self.region,
            &self.bucket,
            self.path_style,
            key,
        );
        let mut builder = http::Request::builder()
            .method(http::Method::PUT)
            .uri(&url)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(
                http::header::USER_AGENT,
                concat!("filemetasync/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(checksum) = checksum_base64 {
            builder = builder.header("x-amz-checksum-sha256", checksum);
        }
        let mut request = builder
            .body(SdkBody::from(body))
            .map_err(|error| local_failure(&error))?;
        self.sign(&mut request, payload)?;
        let request = HttpRequest::try_from(request).map_err(|error| local_failure(&error))?;
        let response = match self.connector.call(request).await {
            Ok(response) => response,
            Err(error) => {
                return Err(Answer {
                    timed_out: error.is_timeout(),
                    transport: super::errors::source_chain(&error),
                    ..Answer::default()
                })
            }
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text = read_error_body(response.into_body()).await;
        Err(Answer {
            status: Some(status),
            code: element(&text, "Code"),
            message: element(&text, "Message"),
            ..Answer::default()
        })
    }

    /// SigV4 as the S3 SDK signs: single-encoded path, no path normalisation, the payload
    /// hash in `x-amz-content-sha256`.
    fn sign(&self, request: &mut http::Request<SdkBody>, payload: &Payload) -> Result<(), Answer> {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|error| local_failure(&error))?
            .into();
        let body = match payload {
            Payload::Sha256(sha256_hex) => SignableBody::Precomputed(sha256_hex.clone()),
            Payload::Unsigned => SignableBody::UnsignedPayload,
        };
        let uri = request.uri().to_string();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(request.method().as_str(), &uri, headers.into_iter(), body)
            .map_err(|error| local_failure(&error))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|error| local_failure(&error))?
            .into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// Worth another attempt: no answer, the store's own trouble, or a request to slow down.
fn transient(answer: &Answer) -> bool {
    match answer.status {
        None => true,
        Some(status) => {
            matches!(status, 429 | 500 | 502 | 503 | 504)
                || matches!(
                    answer.code.as_str(),
                    "SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout" | "InternalError"
                )
        }
    }
}

/// A request that could not even be built or signed (a bad endpoint or key): said as the
/// transport's failure, which `describe` turns into one line.
fn local_failure(error: &dyn std::error::Error) -> Answer {
    Answer {
        transport: super::errors::source_chain(error),
        ..Answer::default()
    }
}

async fn read_error_body(mut body: SdkBody) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The text of the first `<name>…</name>` of an S3 error document, unescaped.
fn element(text: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let Some(start) = text.find(&open).map(|at| at + open.len()) else {
        return String::new();
    };
    let end = text[start..].find(&close).map_or(text.len(), |at| start + at);
    text[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_and_message_of_an_s3_error_are_read() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>XAmzContentSHA256Mismatch</Code>\
                    <Message>The provided &apos;x-amz-content-sha256&apos; header does not match</Message></Error>";
        assert_eq!(element(body, "Code"), "XAmzContentSHA256Mismatch");
        assert_eq!(
            element(body, "Message"),
            "The provided 'x-amz-content-sha256' header does not match"
        );
        assert_eq!(element(body, "Resource"), "");
        assert_eq!(element("<Code>Cut", "Code"), "Cut");
    }

    #[test]
    fn only_outages_and_slowdowns_are_tried_again() {
        let answer = |status: Option<u16>, code: &str| Answer {
            status,
            code: code.into(),
            ..Answer::default()
        };
        assert!(transient(&answer(None, "")));
        assert!(transient(&answer(Some(503), "ServiceUnavailable")));
        assert!(transient(&answer(Some(400), "RequestTimeout")));
        assert!(!transient(&answer(Some(400), "XAmzContentSHA256Mismatch")));
        assert!(!transient(&answer(Some(403), "AccessDenied")));
        assert!(!transient(&answer(Some(404), "NoSuchBucket")));
    }

    #[test]
    fn a_dotted_bucket_in_the_host_name_is_left_to_the_sdk() {
        let connector = || {
            Connector::builder()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build()
        };
        let credentials = || Credentials::new("key", "secret", None, None, "test");
        assert!(DirectPut::new(connector(), credentials(), "eu", None, "office.backup", false).is_none());
        assert!(DirectPut::new(connector(), credentials(), "eu", None, "office.backup", true).is_some());
        assert!(DirectPut::new(connector(), credentials(), "eu", None, "office", false).is_some());
    }
}
