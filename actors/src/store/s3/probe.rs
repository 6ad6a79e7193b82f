//! The integrity probe of `storage.integrity = "auto"`: two small objects under the reserved
//! prefix, each sent with a deliberately wrong hash, one as the signed payload hash and one
//! as `x-amz-checksum-sha256`. What the store does with each (rejects it, stores it, refuses
//! the header) says what it verifies; [`decide`] picks the checks from that.

use super::errors::{classify, Answer};
use super::sign::SignPayloadAs;
use super::{hex_to_base64, S3Store};
use crate::store::integrity::{decide, Integrity, ProbeAnswer, PROBE_PREFIX};
use crate::store::StoreError;
use aws_sdk_s3::primitives::ByteStream;
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

    async fn probe(&self, kind: ProbeKind) -> Result<ProbeAnswer, StoreError> {
        let name = match kind {
            ProbeKind::PayloadHash => "payload-hash",
            ProbeKind::ChecksumHeader => "checksum-header",
        };
        let key = format!("{PROBE_PREFIX}{name}-{:016x}", rand::random::<u64>());
        let wrong = hex::encode(Sha256::digest(b"not the probe's bytes"));
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_length(PROBE_BODY.len() as i64)
            .body(ByteStream::from_static(PROBE_BODY));
        let result = match kind {
            ProbeKind::PayloadHash => request.customize().interceptor(SignPayloadAs::new(&wrong)).send().await,
            ProbeKind::ChecksumHeader => {
                request
                    .checksum_sha256(hex_to_base64(&wrong))
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
            }
        };
        let error = match result {
            Ok(_) => {
                // Stored with a wrong hash: the store checks nothing of this kind. The probe
                // object goes again at once.
                self.delete(&key).await?;
                return Ok(ProbeAnswer::Accepted);
            }
            Err(error) => error,
        };
        let answer = Answer::of(&error);
        if answer.refuses_checksum_headers() {
            return Ok(ProbeAnswer::Refused);
        }
        if answer.is_digest_mismatch() {
            return Ok(ProbeAnswer::Rejected);
        }
        // Anything else (keys, bucket, network) is the store's problem, not an answer.
        Err(classify("PUT (integrity probe)", &key, error))
    }
}
