//! The integrity probe of `storage.integrity = "auto"`: two small objects under the reserved
//! prefix, each sent with a deliberately wrong hash, one as the signed payload hash and one
//! as `x-amz-checksum-sha256`. What the store does with each (rejects it, stores it, refuses
//! the header) says what it verifies; [`decide`] picks the checks from that.

use super::errors::{classify, Answer};
use super::sign::{signed, Payload};
use super::{hex_to_base64, S3Store};
use crate::store::integrity::{decide, Integrity, ProbeAnswer, PROBE_PREFIX};
use crate::store::StoreError;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use sha2::{Digest, Sha256};

const PROBE_BODY: &[u8] = b"filemetasync integrity probe: these bytes do not match the hash sent with them\n";

#[derive(Clone, Copy, Debug)]
enum ProbeKind {
    PayloadHash,
    ChecksumHeader,
}

impl S3Store {
    pub(super) async fn probe_integrity(&self) -> Result<Integrity, StoreError> {
        let payload = self.probe(ProbeKind::PayloadHash).await?;
        let checksum = self.probe(ProbeKind::ChecksumHeader).await?;
        Ok(decide(payload, checksum))
    }

    /// One probe; its object is deleted whatever the answer (some stores keep the bytes of a
    /// PUT they answered with an error).
    async fn probe(&self, kind: ProbeKind) -> Result<ProbeAnswer, StoreError> {
        let name = match kind {
            ProbeKind::PayloadHash => "payload-hash",
            ProbeKind::ChecksumHeader => "checksum-header",
        };
        let key = format!("{PROBE_PREFIX}{name}-{:016x}", rand::random::<u64>());
        let answer = self.probe_at(kind, &key).await;
        let deleted = self.delete(&key).await;
        let answer = answer?;
        deleted?;
        Ok(answer)
    }

    async fn probe_at(&self, kind: ProbeKind, key: &str) -> Result<ProbeAnswer, StoreError> {
        let wrong = hex::encode(Sha256::digest(b"not the probe's bytes"));
        let sent = self.bounded("PUT (integrity probe)", key, 0, async {
            Ok(self.put_probe(kind, key, &wrong).await)
        });
        let error = match sent.await? {
            // Stored with a wrong hash: the store checks nothing of this kind.
            Ok(()) => return Ok(ProbeAnswer::Accepted),
            Err(error) => error,
        };
        let answer = Answer::of(&error);
        if answer.refuses_checksum_headers() {
            return Ok(ProbeAnswer::Refused);
        }
        if answer.is_digest_mismatch() {
            return Ok(ProbeAnswer::Rejected);
        }
        if matches!(answer.status, Some(500..=599)) {
            // Some stores answer a hash mismatch with a server error (s3s-fs 0.14: 500
            // InternalError). The same PUT with the right hash tells a rejection from a store
            // in trouble.
            let right = hex::encode(Sha256::digest(PROBE_BODY));
            let control = self.bounded("PUT (integrity probe)", key, 0, async {
                Ok(self.put_probe(kind, key, &right).await)
            });
            if control.await?.is_ok() {
                return Ok(ProbeAnswer::Rejected);
            }
        }
        // Anything else (keys, bucket, network) is the store's problem, not an answer.
        Err(classify("PUT (integrity probe)", key, error))
    }

    /// The probe's bytes under `key`, with `sha256_hex` sent as the hash of this kind.
    async fn put_probe(
        &self,
        kind: ProbeKind,
        key: &str,
        sha256_hex: &str,
    ) -> Result<(), SdkError<PutObjectError, HttpResponse>> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(PROBE_BODY.len() as i64)
            .body(ByteStream::from_static(PROBE_BODY));
        let result = match kind {
            ProbeKind::PayloadHash => signed(Payload::Sha256(sha256_hex.to_owned()), request.send()).await,
            ProbeKind::ChecksumHeader => {
                let request = request.checksum_sha256(hex_to_base64(sha256_hex));
                signed(Payload::Unsigned, request.send()).await
            }
        };
        result.map(|_| ())
    }
}
