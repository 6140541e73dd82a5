use thiserror::Error;

use sluice_expr::ExprError;
use sluice_protocol::ProtocolError;
use sluice_store::StoreError;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("function {function}: {source}")]
    Expression {
        function: String,
        #[source]
        source: ExprError,
    },
    #[error("cannot reach the app at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("sync of {url} failed: {reason}")]
    SyncFailed { url: String, reason: String },
    #[error("run {0} not found")]
    RunNotFound(String),
    #[error("run {0} has already ended")]
    RunEnded(String),
    #[error("deployment {0} not found")]
    DeploymentNotFound(String),
    #[error("deployment {id} cannot become {to} from {from}")]
    IllegalDeploymentMove { id: String, from: String, to: String },
}

impl EngineError {
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Protocol(e) => e.code(),
            EngineError::Store(e) => e.code(),
            EngineError::Expression { source, .. } => source.code(),
            EngineError::Unreachable { .. } => "SLUICE-3001",
            EngineError::SyncFailed { .. } => "SLUICE-3002",
            EngineError::RunNotFound(_) => "SLUICE-3101",
            EngineError::RunEnded(_) => "SLUICE-3102",
            EngineError::DeploymentNotFound(_) => "SLUICE-3103",
            EngineError::IllegalDeploymentMove { .. } => "SLUICE-3104",
        }
    }
}

/// Codes recorded on runs that sluice itself ends (in the run's `error`).
pub mod run_codes {
    pub const FUNCTION_REMOVED: &str = "SLUICE-3201";
    pub const OPCODE_UNSUPPORTED: &str = "SLUICE-3202";
    pub const INVALID_SDK_RESPONSE: &str = "SLUICE-1201";
    pub const STALLED: &str = "SLUICE-3203";
    pub const CANCELLED: &str = "SLUICE-3204";
}
