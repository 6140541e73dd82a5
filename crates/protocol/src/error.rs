use thiserror::Error;

/// Errors raised while decoding or validating protocol messages.
/// Every variant carries a stable `SLUICE-xxxx` code (see docs/errors.md).
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ProtocolError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("event is missing a name")]
    EventWithoutName,
    #[error("event is {size} bytes, over the {limit} byte limit")]
    EventTooLarge { size: usize, limit: usize },
    #[error("invalid function config for {function}: {reason}")]
    InvalidFunction { function: String, reason: String },
    #[error("invalid cron expression {cron:?} in {function}: {reason}")]
    InvalidCron { function: String, cron: String, reason: String },
    #[error("invalid duration {0:?}")]
    InvalidDuration(String),
    #[error("SDK response is not valid protocol: {0}")]
    InvalidSdkResponse(String),
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
}

impl ProtocolError {
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::MalformedJson(_) => "SLUICE-1001",
            ProtocolError::EventWithoutName => "SLUICE-1002",
            ProtocolError::EventTooLarge { .. } => "SLUICE-1003",
            ProtocolError::InvalidFunction { .. } => "SLUICE-1101",
            ProtocolError::InvalidCron { .. } => "SLUICE-1102",
            ProtocolError::InvalidDuration(_) => "SLUICE-1103",
            ProtocolError::InvalidSdkResponse(_) => "SLUICE-1201",
            ProtocolError::InvalidSignature(_) => "SLUICE-1301",
        }
    }
}
