//! Signing a request with a payload hash we already know.
//!
//! The SDK either hashes the body for the signature (a second SHA-256 of bytes we hashed
//! when we registered them) or sends `UNSIGNED-PAYLOAD`. Neither is what we want: the
//! registered SHA-256 *is* the payload hash, and signed as `x-amz-content-sha256` it makes a
//! store that checks SigV4 payloads (AWS, Garage, Ceph, MinIO) reject any other bytes. The
//! SDK's signer honours a `PayloadSigningOverride` in the request's configuration; this
//! interceptor puts one there just before signing.

use aws_runtime::auth::PayloadSigningOverride;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Sign the request's payload as having this SHA-256 (lowercase hex).
#[derive(Debug)]
pub(super) struct SignPayloadAs {
    sha256_hex: String,
}

impl SignPayloadAs {
    pub(super) fn new(sha256_hex: &str) -> SignPayloadAs {
        SignPayloadAs {
            sha256_hex: sha256_hex.to_owned(),
        }
    }
}

impl Intercept for SignPayloadAs {
    fn name(&self) -> &'static str {
        "SignPayloadAs"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        config
            .interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.sha256_hex.clone()));
        Ok(())
    }
}
