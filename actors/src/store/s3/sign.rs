//! Signing a request with a payload hash we already know.
//!
//! The SDK either hashes the body for the signature (a second SHA-256 of bytes we hashed
//! when we registered them) or sends `UNSIGNED-PAYLOAD`. Neither is what we want: the
//! registered SHA-256 *is* the payload hash, and signed as `x-amz-content-sha256` it makes a
//! store that checks SigV4 payloads (AWS, Garage, Ceph, MinIO) reject any other bytes. The
//! SDK's signer honours a `PayloadSigningOverride` in the request's configuration;
//! [`PayloadFromTask`], one interceptor of the client, puts one there just before signing,
//! taken from the task that sends the request ([`signed`]).
//!
//! A per-request interceptor (`customize().interceptor(..)`) did the same, but it made the
//! SDK build and merge a configuration layer for every request: about 3% of the process's
//! CPU in a first sync of small files.

use aws_runtime::auth::PayloadSigningOverride;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::future::Future;

/// How a request's payload is signed.
#[derive(Clone, Debug)]
pub(super) enum Payload {
    /// As having this SHA-256 (lowercase hex).
    Sha256(String),
    /// `UNSIGNED-PAYLOAD` (a store that verifies a checksum header instead, or nothing).
    Unsigned,
}

tokio::task_local! {
    static PAYLOAD: Payload;
}

/// Send `request` with its payload signed as `payload` says. Requests sent outside such a
/// scope are signed as the SDK would by default.
pub(super) async fn signed<F: Future>(payload: Payload, request: F) -> F::Output {
    PAYLOAD.scope(payload, request).await
}

/// The client's interceptor that applies [`signed`]'s payload (the SDK runs it in the task
/// that awaits the request).
#[derive(Debug)]
pub(super) struct PayloadFromTask;

impl Intercept for PayloadFromTask {
    fn name(&self) -> &'static str {
        "PayloadFromTask"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let payload = PAYLOAD.try_with(|payload| match payload {
            Payload::Sha256(sha256_hex) => PayloadSigningOverride::Precomputed(sha256_hex.clone()),
            Payload::Unsigned => PayloadSigningOverride::unsigned_payload(),
        });
        if let Ok(payload) = payload {
            config.interceptor_state().store_put(payload);
        }
        Ok(())
    }
}
