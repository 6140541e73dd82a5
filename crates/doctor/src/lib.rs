//! The integrity doctor: finds what keeps runs from finishing and repairs it safely.
//!
//! ```text
//!   Diagnostics::diagnostic_snapshot ─┐
//!   Redis claim keys (configured) ────┼─▶ checks::diagnose ─▶ Report { findings: code, evidence, repair }
//!   chain expectations (configured) ──┘                              │
//!                                      --fix: preview ◀──────────────┤
//!                                      --apply: repair::Executor ────┴─▶ Store / sluice API / Redis
//!                                                                         └─▶ audit log (doctor_audit)
//! ```
//! Findings (stable codes): `STALE_RUN`, `ORPHANED_CLAIM`, `CHAIN_BROKEN`, `FINALIZATION_FAILED`,
//! `PAUSED_UNREACHABLE`, `UNREACHABLE_DEPLOYMENT`, `DUPLICATE_STEP`. Every repair is computed from a
//! fresh diagnosis, guarded by a compare-and-set on the state it was computed from, and keyed, so
//! applying it twice changes nothing the second time.

pub mod checks;
pub mod claims;
pub mod config;
pub mod model;
pub mod repair;
pub mod sweep;

pub use checks::{diagnose, Liveness};
pub use config::DoctorConfig;
pub use model::{Action, Code, Finding, Repair, Report};
pub use repair::{Executor, RepairResult};

/// Doctor errors, each with a stable code (docs/errors.md, SLUICE-6xxx).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error(transparent)]
    Store(#[from] sluice_store::StoreError),
    #[error("doctor configuration: {0}")]
    Config(String),
    #[error("claim source {source_name}: {message}")]
    ClaimSource { source_name: String, message: String },
    #[error("sweep: --older-than {given} is younger than the {floor} floor")]
    SweepTooYoung { given: String, floor: String },
    #[error("sweep: {found} runs match, more than --max {max}")]
    SweepTooBroad { found: usize, max: usize },
    #[error("sweep: the backup failed, nothing was changed: {0}")]
    BackupFailed(String),
    #[error("sweep: {0}")]
    InvalidSweepScope(String),
    #[error("audit entry {0} not found")]
    AuditNotFound(String),
    #[error("audit entry {0} cannot be undone")]
    NotReversible(String),
    #[error("{0}")]
    Engine(String),
}

impl DoctorError {
    pub fn code(&self) -> &'static str {
        match self {
            DoctorError::Store(e) => e.code(),
            DoctorError::Config(_) => "SLUICE-6001",
            DoctorError::ClaimSource { .. } => "SLUICE-6002",
            DoctorError::SweepTooYoung { .. } => "SLUICE-6101",
            DoctorError::SweepTooBroad { .. } => "SLUICE-6102",
            DoctorError::BackupFailed(_) => "SLUICE-6103",
            DoctorError::InvalidSweepScope(_) => "SLUICE-6104",
            DoctorError::AuditNotFound(_) => "SLUICE-6201",
            DoctorError::NotReversible(_) => "SLUICE-6202",
            DoctorError::Engine(_) => "SLUICE-6003",
        }
    }
}

pub type Result<T> = std::result::Result<T, DoctorError>;

/// A deterministic ULID: the same `(millis, key)` always gives the same id, so a repair that emits
/// an event stores it once however often it is applied.
pub fn deterministic_ulid(millis: i64, key: &str) -> ulid::Ulid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let mut random: u128 = 0;
    for b in &digest[..10] {
        random = (random << 8) | u128::from(*b);
    }
    ulid::Ulid::from_parts(millis.max(0) as u64, random)
}
