//! How each upload is made sure to hold the registered bytes, by what the store verifies.
//!
//! Stores differ: AWS, Ceph RGW, MinIO and Garage check a signed `x-amz-content-sha256`;
//! some check `x-amz-checksum-sha256`; Backblaze B2 refuses the checksum headers; Supabase
//! Storage stores whatever arrives. With `auto` the uploader learns which by a probe (a
//! small object under [`PROBE_PREFIX`] sent with a deliberately wrong hash) and uses the
//! strongest check the store honours; where it honours none, every object is read back and
//! hashed before its content counts as stored.

use serde::Serialize;

/// Objects the probe writes live here, outside `files/`, and are deleted at once.
pub const PROBE_PREFIX: &str = "_filemetasync/probe/";

/// `storage.integrity`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntegrityMode {
    /// Probe the store; use what it verifies, else read back.
    #[default]
    Auto,
    /// Trust the store to check the signed payload hash (no probe, nothing read back).
    Server,
    /// Trust the store to check `x-amz-checksum-sha256`, the payload unsigned (for a store
    /// that verifies that header but not payload hashes; and to measure it).
    Checksum,
    /// Read every object back and hash it (no probe).
    ReadBack,
}

impl IntegrityMode {
    pub fn parse(text: &str) -> Option<IntegrityMode> {
        match text {
            "auto" => Some(IntegrityMode::Auto),
            "server" => Some(IntegrityMode::Server),
            "checksum" => Some(IntegrityMode::Checksum),
            "read-back" => Some(IntegrityMode::ReadBack),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IntegrityMode::Auto => "auto",
            IntegrityMode::Server => "server",
            IntegrityMode::Checksum => "checksum",
            IntegrityMode::ReadBack => "read-back",
        }
    }
}

/// The checks in force for one store: what goes with each upload, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Integrity {
    /// `server` (the store rejects bytes that differ from the hash sent), `read-back`, or
    /// `local` (the local-folder store hashes while it copies).
    pub mode: &'static str,
    /// Each PUT and part is signed with its SHA-256 as `x-amz-content-sha256`.
    pub signed_payload: bool,
    /// Each PUT and part carries `x-amz-checksum-sha256`.
    pub checksum_header: bool,
    /// Each object is read back and hashed before its content counts as stored.
    pub read_back: bool,
    /// Why, in a sentence, for the log, `status` and `config check`.
    pub reason: String,
}

impl Integrity {
    /// The checks a mode stands for before (or without) a probe. `auto` is safe before its
    /// probe: signed payloads and a read-back.
    pub fn configured(mode: IntegrityMode) -> Integrity {
        match mode {
            IntegrityMode::Auto => Integrity {
                mode: "read-back",
                signed_payload: true,
                checksum_header: false,
                read_back: true,
                reason: "not probed yet: every object is read back".into(),
            },
            IntegrityMode::Server => Integrity::server(
                true,
                false,
                "storage.integrity = \"server\": the store is trusted to check the signed payload hash".into(),
            ),
            IntegrityMode::Checksum => Integrity::server(
                false,
                true,
                "storage.integrity = \"checksum\": the store is trusted to check x-amz-checksum-sha256".into(),
            ),
            IntegrityMode::ReadBack => Integrity::read_back("storage.integrity = \"read-back\"".into()),
        }
    }

    pub fn server(signed_payload: bool, checksum_header: bool, reason: String) -> Integrity {
        Integrity {
            mode: "server",
            signed_payload,
            checksum_header,
            read_back: false,
            reason,
        }
    }

    pub fn read_back(reason: String) -> Integrity {
        Integrity {
            mode: "read-back",
            signed_payload: false,
            checksum_header: false,
            read_back: true,
            reason,
        }
    }

    pub fn local() -> Integrity {
        Integrity {
            mode: "local",
            signed_payload: false,
            checksum_header: false,
            read_back: false,
            reason: "the local-folder store hashes every byte while it copies".into(),
        }
    }

    /// What goes with each upload, e.g. "signed payload SHA-256, read back".
    pub fn checks(&self) -> String {
        let mut checks = Vec::new();
        if self.signed_payload {
            checks.push("signed payload SHA-256");
        }
        if self.checksum_header {
            checks.push("x-amz-checksum-sha256");
        }
        if self.read_back {
            checks.push("read back and hashed");
        }
        if checks.is_empty() {
            checks.push("hashed while copied");
        }
        checks.join(", ")
    }
}

/// What the store did with a probe sent with a wrong hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// Rejected as not matching: the store verifies this hash.
    Rejected,
    /// Stored anyway: the store verifies nothing of this kind.
    Accepted,
    /// Refused the header itself (B2's "Unsupported header").
    Refused,
}

/// The checks `auto` picks from the two probes' answers: a signed payload where the store
/// verifies it (no extra header, nothing hashed twice on our side), else the checksum header
/// where it verifies that, else a read-back.
pub fn decide(payload: ProbeAnswer, checksum: ProbeAnswer) -> Integrity {
    match (payload, checksum) {
        (ProbeAnswer::Rejected, ProbeAnswer::Refused) => Integrity::server(
            true,
            false,
            "the store verifies signed payload hashes and refuses checksum headers: each upload is signed with its SHA-256".into(),
        ),
        (ProbeAnswer::Rejected, _) => Integrity::server(
            true,
            false,
            "the store rejected a probe whose signed payload hash was wrong: each upload is signed with its SHA-256".into(),
        ),
        (_, ProbeAnswer::Rejected) => Integrity::server(
            false,
            true,
            "the store ignores payload hashes but rejected a probe with a wrong x-amz-checksum-sha256: each upload carries it".into(),
        ),
        _ => Integrity::read_back(
            "the store accepted probes with a wrong payload hash and a wrong checksum, so it verifies nothing: each object is read back and hashed before it counts as stored".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeAnswer::*;

    #[test]
    fn auto_uses_the_strongest_check_the_store_honours() {
        let table = [
            ((Rejected, Rejected), ("server", true, false, false)),
            ((Rejected, Refused), ("server", true, false, false)),
            ((Rejected, Accepted), ("server", true, false, false)),
            ((Accepted, Rejected), ("server", false, true, false)),
            ((Refused, Rejected), ("server", false, true, false)),
            ((Accepted, Accepted), ("read-back", false, false, true)),
            ((Accepted, Refused), ("read-back", false, false, true)),
        ];
        for ((payload, checksum), (mode, signed, header, read_back)) in table {
            let integrity = decide(payload, checksum);
            assert_eq!(
                (
                    integrity.mode,
                    integrity.signed_payload,
                    integrity.checksum_header,
                    integrity.read_back
                ),
                (mode, signed, header, read_back),
                "{payload:?} {checksum:?}"
            );
            assert!(!integrity.reason.is_empty());
        }
    }

    #[test]
    fn modes_parse_and_print_as_configured() {
        for mode in [
            IntegrityMode::Auto,
            IntegrityMode::Server,
            IntegrityMode::Checksum,
            IntegrityMode::ReadBack,
        ] {
            assert_eq!(IntegrityMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(IntegrityMode::parse("none"), None);
        assert!(
            Integrity::configured(IntegrityMode::Auto).read_back,
            "safe before the probe"
        );
    }
}
