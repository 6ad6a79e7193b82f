//! The S3-compatible backend (AWS, Garage, MinIO, Supabase Storage, B2, R2, ...).
//!
//! Every upload carries the registered SHA-256 in the form the store verifies (see
//! [`super::integrity`]): as the signed payload hash (`x-amz-content-sha256`, the hash we
//! already know, so nothing is hashed twice), as `x-amz-checksum-sha256`, or, where the
//! store verifies neither, the object is read back and hashed before it counts as stored.
//! The SDK's own checksum calculation is set to "when required": its default CRC32 trailers
//! break several S3-compatible servers. Large files go in parts, each with its own SHA-256;
//! the whole-file hash is checked before the upload is completed, and the upload is aborted
//! if it does not match.

mod direct;
mod errors;
mod probe;
mod sign;

use super::integrity::{Integrity, IntegrityMode};
use super::{Content, StoreError};
use crate::upload_controls::RateLimiter;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use base64::Engine;
use direct::DirectPut;
use errors::{classify, classify_answer};
use sha2::{Digest, Sha256};
use sign::{signed, Payload, PayloadFromTask};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Connection settings, from the `[storage]` section. Compared on a reload: any difference
/// is a new store (the uploader and the scheduled jobs start again with it).
#[derive(Clone, PartialEq)]
pub struct S3Settings {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Files at least this large are uploaded in parts.
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// PEM CA certificate(s) that alone are trusted for an HTTPS endpoint (a private CA);
    /// `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// `storage.integrity`.
    pub integrity: IntegrityMode,
    /// `storage.timeout`: how long a request may go unanswered, plus a second for every
    /// [`SLOWEST_LINK`] bytes it sends.
    pub timeout: Duration,
}

/// Without the secrets.
impl std::fmt::Debug for S3Settings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("integrity", &self.integrity)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `storage.timeout` by default: a NAS on a slow uplink still hears back within a minute.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest uplink we wait for (bytes a second): a 16 MiB part may take 256 s more.
pub const SLOWEST_LINK: u64 = 64 * 1024;

#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
    multipart_threshold: u64,
    part_size: u64,
    mode: IntegrityMode,
    /// The checks in force; `auto` sets them from its probe (shared by every clone).
    integrity: Arc<RwLock<Integrity>>,
    timeout: Duration,
    /// What it was made from (compared on a reload).
    settings: Arc<S3Settings>,
    /// Single-part PUTs without the SDK's orchestrator (see [`direct`]); None where the SDK's
    /// addressing differs from ours.
    direct: Option<Arc<DirectPut>>,
}

/// The endpoint as the SDK must be given it: one with a path (Supabase's
/// `https://<project>.storage.supabase.co/storage/v1/s3`) needs a trailing slash, or the SDK
/// joins the path and the bucket without one (`/storage/v1/s3<bucket>/…`, aws-sdk-rust
/// issue 1387) and every request is a 404.
pub fn sdk_endpoint(endpoint: &str) -> String {
    let trimmed = endpoint.trim();
    let after_scheme = trimmed.split_once("://").map(|(_, rest)| rest).unwrap_or(trimmed);
    match after_scheme.split_once('/') {
        Some((_, path)) if !path.is_empty() && !path.ends_with('/') => format!("{trimmed}/"),
        _ => trimmed.to_owned(),
    }
}

/// Where requests for `key` go (for `config check` and logs): path style puts the bucket in
/// the path, virtual-host style in the host name.
pub fn request_url(endpoint: Option<&str>, region: &str, bucket: &str, path_style: bool, key: &str) -> String {
    let base = match endpoint {
        Some(endpoint) => sdk_endpoint(endpoint),
        None => format!("https://s3.{region}.amazonaws.com/"),
    };
    let base = base.trim_end_matches('/');
    if path_style {
        return format!("{base}/{bucket}/{key}");
    }
    match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}/{key}"),
        None => format!("{bucket}.{base}/{key}"),
    }
}

impl S3Store {
    pub fn new(settings: &S3Settings) -> S3Store {
        let tls = aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        );
        let mut builder = aws_smithy_http_client::Builder::new().tls_provider(tls.clone());
        let mut tls_context = None;
        if let Some(pem) = &settings.ca_pem {
            use aws_smithy_http_client::tls::{TlsContext, TrustStore};
            // Only these CAs; a file that does not parse trusts nothing (it was checked when
            // the configuration was loaded).
            let context = TlsContext::builder()
                .with_trust_store(TrustStore::empty().with_pem_certificate(pem.clone()))
                .build()
                .or_else(|_| TlsContext::builder().with_trust_store(TrustStore::empty()).build());
            if let Ok(context) = context {
                builder = builder.tls_context(context.clone());
                tls_context = Some(context);
            }
        }
        let http_client = builder.build_https();
        let connect_timeout = settings.timeout.min(Duration::from_secs(10));
        let mut connector = aws_smithy_http_client::Connector::builder()
            .connector_settings(
                aws_smithy_runtime_api::client::http::HttpConnectorSettings::builder()
                    .connect_timeout(connect_timeout)
                    .build(),
            )
            .tls_provider(tls);
        if let Some(context) = tls_context {
            connector = connector.tls_context(context);
        }
        let credentials = Credentials::new(
            &settings.access_key_id,
            &settings.secret_access_key,
            None,
            None,
            "filemetasync-config",
        );
        let direct = DirectPut::new(
            connector.build(),
            credentials.clone(),
            &settings.region,
            settings.endpoint.as_deref(),
            &settings.bucket,
            settings.path_style,
        )
        .map(Arc::new);
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(settings.path_style)
            .http_client(http_client)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(connect_timeout)
                    .build(),
            )
            .interceptor(PayloadFromTask)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(sdk_endpoint(endpoint));
        }
        S3Store {
            client: Client::from_conf(builder.build()),
            bucket: settings.bucket.clone(),
            endpoint: settings.endpoint.clone().unwrap_or_else(|| "AWS".into()),
            multipart_threshold: settings.multipart_threshold,
            part_size: settings.part_size.max(5 << 20),
            mode: settings.integrity,
            integrity: Arc::new(RwLock::new(Integrity::configured(settings.integrity))),
            timeout: settings.timeout,
            settings: Arc::new(settings.clone()),
            direct,
        }
    }

    /// What this store was made from.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// `request` within the timeout for one that sends `bytes`. A request past it is given
    /// up (dropping it closes its connection) and the store counts as unreachable.
    async fn bounded<T>(
        &self,
        operation: &str,
        key: &str,
        bytes: u64,
        request: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = self.timeout + Duration::from_secs(bytes / SLOWEST_LINK);
        match tokio::time::timeout(limit, request).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "{operation} {key}: no answer within {} s (storage.timeout): check the network to the store",
                limit.as_secs()
            ))),
        }
    }

    pub fn describe(&self) -> String {
        format!("s3 bucket {} at {}", self.bucket, self.endpoint)
    }

    /// Files of at least `multipart_threshold` bytes go in parts of `part_size`.
    pub fn part_layout(&self) -> crate::fs::PartLayout {
        crate::fs::PartLayout {
            threshold: self.multipart_threshold,
            part_size: self.part_size,
        }
    }

    /// The checks in force now.
    pub fn integrity(&self) -> Integrity {
        self.integrity.read().expect("integrity lock").clone()
    }

    /// Decide the checks: `auto` probes the store (see [`probe`]); the other modes are what
    /// they say. Called when an uploader starts, so a changed store is probed again.
    pub async fn prepare_integrity(&self) -> Result<Integrity, StoreError> {
        let integrity = match self.mode {
            IntegrityMode::Auto => self.probe_integrity().await?,
            mode => Integrity::configured(mode),
        };
        *self.integrity.write().expect("integrity lock") = integrity.clone();
        Ok(integrity)
    }

    pub async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.bounded("HEAD", key, 0, async {
            let result = self.client.head_object().bucket(&self.bucket).key(key).send().await;
            match result {
                Ok(output) => Ok(Some(output.content_length().unwrap_or(0).max(0) as u64)),
                Err(SdkError::ServiceError(error)) if error.raw().status().as_u16() == 404 => Ok(None),
                Err(error) => Err(classify("HEAD", key, error)),
            }
        })
        .await
    }

    pub async fn put_file(&self, content: &Content, source: &Path, limiter: &RateLimiter) -> Result<(), StoreError> {
        let integrity = self.integrity();
        if content.size >= self.multipart_threshold {
            // Boxed, as the SDK's path and the read-back below: their states are large, and
            // the small PUT's future, moved into its timeout, stays small.
            Box::pin(self.put_multipart(content, source, limiter, &integrity)).await?;
        } else {
            limiter.acquire(content.size).await;
            let body = small_file_body(source, content.size).await?;
            let checksum = integrity.checksum_header.then(|| hex_to_base64(&content.sha256));
            // The registered hash is the payload hash: the body is not hashed a second time
            // for the signature, and a store that checks SigV4 payloads rejects changed bytes.
            let payload = if integrity.signed_payload {
                Payload::Sha256(content.sha256.clone())
            } else {
                Payload::Unsigned
            };
            let sent = async {
                match &self.direct {
                    Some(direct) => direct
                        .put(&content.key, body, &payload, checksum.as_deref())
                        .await
                        .map_err(|answer| classify_answer("PUT", &content.key, &answer)),
                    None => {
                        let request = self
                            .client
                            .put_object()
                            .bucket(&self.bucket)
                            .key(&content.key)
                            .content_length(content.size as i64)
                            .set_checksum_sha256(checksum)
                            .body(ByteStream::from(body));
                        Box::pin(signed(payload, request.send()))
                            .await
                            .map(|_| ())
                            .map_err(|error| classify("PUT", &content.key, error))
                    }
                }
            };
            self.bounded("PUT", &content.key, content.size, sent).await?;
        }
        if integrity.read_back {
            Box::pin(self.check_read_back(content)).await?;
        }
        Ok(())
    }

    /// Read the stored object back and hash it; a wrong one is deleted, so that the retry
    /// that follows is not skipped as already stored.
    async fn check_read_back(&self, content: &Content) -> Result<(), StoreError> {
        let stored = self.read_digest(&content.key).await?;
        if stored.as_ref() == Some(&(content.sha256.clone(), content.size)) {
            return Ok(());
        }
        let found = match &stored {
            Some((sha256, size)) => format!("{size} bytes with SHA-256 {sha256}"),
            None => "no object".into(),
        };
        let deleted = match self.delete(&content.key).await {
            Ok(()) => "deleted it",
            Err(_) => "could not delete it",
        };
        Err(StoreError::Other(format!(
            "read back {}: the store holds {found}, not the {} bytes with SHA-256 {} that were sent; {deleted}, the upload is retried",
            content.key, content.size, content.sha256
        )))
    }

    async fn put_multipart(
        &self,
        content: &Content,
        source: &Path,
        limiter: &RateLimiter,
        integrity: &Integrity,
    ) -> Result<(), StoreError> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&content.key);
        if integrity.checksum_header {
            request = request.checksum_algorithm(ChecksumAlgorithm::Sha256);
        }
        let created = self
            .bounded("CreateMultipartUpload", &content.key, 0, async {
                request
                    .send()
                    .await
                    .map_err(|error| classify("CreateMultipartUpload", &content.key, error))
            })
            .await?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = self.upload_parts(content, source, &upload_id, limiter, integrity).await;
        if result.is_err() {
            // Best effort: a failed abort only leaves parts that the bucket's lifecycle clears.
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&content.key)
                .upload_id(&upload_id)
                .send();
            let _ = tokio::time::timeout(self.timeout, abort).await;
        }
        result
    }

    async fn upload_parts(
        &self,
        content: &Content,
        source: &Path,
        upload_id: &str,
        limiter: &RateLimiter,
        integrity: &Integrity,
    ) -> Result<(), StoreError> {
        let mut file = tokio::fs::File::open(source)
            .await
            .map_err(|error| StoreError::Other(format!("open {}: {error}", source.display())))?;
        // With the digests the hasher took of this content's parts (same part size, and a
        // store that checks them), each part is signed with its digest and nothing is hashed
        // here: the store refuses a part whose bytes differ from what was hashed. Otherwise
        // each part is hashed for its signature, and the whole file for its registered hash.
        let known = content.parts.as_deref().filter(|parts| {
            parts.part_size == self.part_size
                && parts.digests.len() as u64 == content.size.div_ceil(self.part_size).max(1)
                && (integrity.signed_payload || integrity.checksum_header)
        });
        let mut whole = known.is_none().then(Sha256::new);
        let mut parts = Vec::new();
        let mut total = 0u64;
        for part_number in 1.. {
            // Wait for this part's share of the bandwidth first, then read it: what is sent is
            // what the file holds when it is sent.
            limiter
                .acquire(self.part_size.min(content.size.saturating_sub(total)))
                .await;
            let chunk = read_chunk(&mut file, self.part_size as usize)
                .await
                .map_err(|error| StoreError::Other(format!("read {}: {error}", source.display())))?;
            if total + chunk.len() as u64 > content.size
                || (chunk.len() < self.part_size as usize && total + (chunk.len() as u64) < content.size)
            {
                // Shorter or longer than what was hashed: it changed during the upload.
                return Err(StoreError::ContentMismatch(format!(
                    "{} changed during the upload: part {part_number} ends at byte {} of {}",
                    source.display(),
                    total + chunk.len() as u64,
                    content.size
                )));
            }
            if chunk.is_empty() && part_number > 1 {
                break;
            }
            if let Some(whole) = whole.as_mut() {
                whole.update(&chunk);
            }
            total += chunk.len() as u64;
            let digest = known.and_then(|known| known.digests.get(part_number as usize - 1).copied());
            let part = self
                .upload_part(content, upload_id, part_number, chunk, integrity, digest)
                .await?;
            parts.push(part);
        }
        if let Some(whole) = whole {
            let sha256 = hex::encode(whole.finalize());
            if sha256 != content.sha256 || total != content.size {
                return Err(StoreError::ContentMismatch(format!(
                    "{} now has {total} bytes with SHA-256 {sha256}",
                    source.display()
                )));
            }
        } else if total != content.size {
            return Err(StoreError::ContentMismatch(format!(
                "{} now has {total} bytes, registered {}",
                source.display(),
                content.size
            )));
        }
        let complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&content.key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send();
        // Assembling the parts takes the store a while on large objects.
        self.bounded("CompleteMultipartUpload", &content.key, content.size / 16, async {
            complete
                .await
                .map_err(|error| classify("CompleteMultipartUpload", &content.key, error))
        })
        .await?;
        Ok(())
    }

    /// One part, signed with (or carrying) its SHA-256 as the store verifies it: `known`, the
    /// digest taken while hashing, or else its own.
    async fn upload_part(
        &self,
        content: &Content,
        upload_id: &str,
        part_number: i32,
        chunk: Vec<u8>,
        integrity: &Integrity,
        known: Option<[u8; 32]>,
    ) -> Result<CompletedPart, StoreError> {
        let length = chunk.len() as u64;
        let needs_digest = integrity.signed_payload || integrity.checksum_header;
        let digest: Option<[u8; 32]> = needs_digest.then(|| known.unwrap_or_else(|| Sha256::digest(&chunk).into()));
        let mut request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&content.key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(chunk.len() as i64);
        let part_base64 = digest
            .filter(|_| integrity.checksum_header)
            .map(|digest| base64::engine::general_purpose::STANDARD.encode(digest));
        if let Some(part_base64) = &part_base64 {
            request = request.checksum_sha256(part_base64);
        }
        let request = request.body(ByteStream::from(chunk));
        let payload = match digest.filter(|_| integrity.signed_payload) {
            Some(digest) => Payload::Sha256(hex::encode(digest)),
            None => Payload::Unsigned,
        };
        let uploaded = self
            .bounded("UploadPart", &content.key, length, async {
                signed(payload, request.send())
                    .await
                    .map_err(|error| classify("UploadPart", &content.key, error))
            })
            .await?;
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(uploaded.e_tag().map(str::to_owned))
            .set_checksum_sha256(part_base64)
            .build())
    }

    pub async fn read_digest(&self, key: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.read_into(key, &mut std::io::sink()).await
    }

    /// Stream the object into `sink`, hashing it on the way: its SHA-256 and size, or None
    /// when there is no such object.
    pub async fn read_into(
        &self,
        key: &str,
        sink: &mut impl std::io::Write,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let output = self
            .bounded("GET", key, 0, async {
                match self.client.get_object().bucket(&self.bucket).key(key).send().await {
                    Ok(output) => Ok(Some(output)),
                    Err(SdkError::ServiceError(error)) if error.raw().status().as_u16() == 404 => Ok(None),
                    Err(error) => Err(classify("GET", key, error)),
                }
            })
            .await?;
        let Some(output) = output else { return Ok(None) };
        let mut body = output.body;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        loop {
            // Each chunk within the timeout: a transfer that stops mid-way is given up.
            let next = self
                .bounded("GET", key, 0, async {
                    body.try_next()
                        .await
                        .map_err(|error| StoreError::Other(format!("GET {key}: the transfer broke off: {error}")))
                })
                .await?;
            let Some(chunk) = next else { break };
            hasher.update(&chunk);
            sink.write_all(&chunk)
                .map_err(|error| StoreError::Other(format!("GET {key}: cannot write what was read: {error}")))?;
            total += chunk.len() as u64;
        }
        Ok(Some((hex::encode(hasher.finalize()), total)))
    }
}

impl S3Store {
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.bounded("DELETE", key, 0, async {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|error| classify("DELETE", key, error))
        })
        .await?;
        Ok(())
    }

    pub async fn list_keys(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.list_prefix("files/").await
    }

    /// Every object whose key starts with `prefix` ("" for the whole bucket), with its size.
    pub async fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = self
            .bounded("LIST", prefix, 0, async { Ok(pages.next().await) })
            .await?
        {
            let page = page.map_err(|error| classify("LIST", prefix, error))?;
            for object in page.contents() {
                let size = object.size().unwrap_or(0).max(0) as u64;
                keys.push((object.key().unwrap_or_default().to_owned(), size));
            }
        }
        Ok(keys)
    }
}

/// Files up to this size are read on the uploader's thread when the kernel has every byte
/// (and the path) cached: a copy of at most about 100 µs, where the blocking pool's two
/// thread hand-overs cost more than the read itself.
const CACHED_READ_LIMIT: u64 = 1 << 20;

/// The whole file in memory: from the page cache without blocking where it can be (see
/// [`crate::fs::read_cached`]), else read in one blocking call (files below the multipart threshold
/// are small; streaming them through tokio's file reader costs a thread hop per chunk). A file
/// whose length is no longer the registered size is reported as changed.
async fn small_file_body(source: &Path, size: u64) -> Result<bytes::Bytes, StoreError> {
    let bytes = match crate::fs::read_cached(source, size, CACHED_READ_LIMIT) {
        Some(bytes) => bytes,
        None => {
            let path = source.to_path_buf();
            tokio::task::spawn_blocking(move || std::fs::read(&path))
                .await
                .map_err(|error| StoreError::Other(format!("read task failed: {error}")))?
                .map_err(|error| StoreError::Other(format!("read {}: {error}", source.display())))?
        }
    };
    if bytes.len() as u64 != size {
        return Err(StoreError::ContentMismatch(format!(
            "{} now has {} bytes, registered {size}",
            source.display(),
            bytes.len()
        )));
    }
    Ok(bytes::Bytes::from(bytes))
}

async fn read_chunk(file: &mut tokio::fs::File, size: usize) -> std::io::Result<Vec<u8>> {
    let mut chunk = vec![0u8; size];
    let mut filled = 0;
    while filled < size {
        let read = file.read(&mut chunk[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    chunk.truncate(filled);
    Ok(chunk)
}

fn hex_to_base64(sha256_hex: &str) -> String {
    let raw = hex::decode(sha256_hex).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(raw)
}
