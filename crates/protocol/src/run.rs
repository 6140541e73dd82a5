//! The run lifecycle, as an explicit state machine.
//!
//! ```text
//!   Queued ──start──▶ Running ──complete──▶ Completed
//!     │                │  ▲  ──fail──────▶ Failed
//!     │                │  │  ──cancel────▶ Cancelled
//!     │           park │  │ unpark
//!     │                ▼  │
//!     │         PausedUnreachable ──cancel/fail──▶ Cancelled / Failed
//!     └──cancel──▶ Cancelled
//! ```
//! Terminal states never change again: a late SDK answer for a finished run is discarded.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunStatus {
    /// Created, first call not yet made.
    Queued,
    /// Making progress: a call in flight, a step queued, or sleeping.
    Running,
    /// Parked because its app stopped answering past the unreachable budget; resumes on its own.
    PausedUnreachable,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTransition {
    Start,
    Park,
    Unpark,
    Complete,
    Fail,
    Cancel,
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Queued => "Queued",
            RunStatus::Running => "Running",
            RunStatus::PausedUnreachable => "PausedUnreachable",
            RunStatus::Completed => "Completed",
            RunStatus::Failed => "Failed",
            RunStatus::Cancelled => "Cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "Queued" => RunStatus::Queued,
            "Running" => RunStatus::Running,
            "PausedUnreachable" => RunStatus::PausedUnreachable,
            "Completed" => RunStatus::Completed,
            "Failed" => RunStatus::Failed,
            "Cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled)
    }

    /// The one table of legal transitions. `None` means the transition is illegal from here.
    pub fn apply(self, t: RunTransition) -> Option<RunStatus> {
        use RunStatus::*;
        use RunTransition::*;
        match (self, t) {
            (Queued, Start) | (Running, Start) => Some(Running),
            (Queued | Running, Park) | (PausedUnreachable, Park) => Some(PausedUnreachable),
            (PausedUnreachable, Unpark) => Some(Running),
            (Queued | Running, Complete) => Some(Completed),
            (Queued | Running | PausedUnreachable, Fail) => Some(Failed),
            (Queued | Running | PausedUnreachable, Cancel) => Some(Cancelled),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RunStatus::*;
    use super::RunTransition::*;
    use super::*;

    #[test]
    fn every_transition_is_covered() {
        let all = [Queued, Running, PausedUnreachable, Completed, Failed, Cancelled];
        let ts = [Start, Park, Unpark, Complete, Fail, Cancel];
        let expected = |s: RunStatus, t: RunTransition| -> Option<RunStatus> {
            match (s, t) {
                (Queued, Start) => Some(Running),
                (Queued, Park) => Some(PausedUnreachable),
                (Queued, Complete) => Some(Completed),
                (Queued, Fail) => Some(Failed),
                (Queued, Cancel) => Some(Cancelled),
                (Running, Start) => Some(Running),
                (Running, Park) => Some(PausedUnreachable),
                (Running, Complete) => Some(Completed),
                (Running, Fail) => Some(Failed),
                (Running, Cancel) => Some(Cancelled),
                (PausedUnreachable, Park) => Some(PausedUnreachable),
                (PausedUnreachable, Unpark) => Some(Running),
                (PausedUnreachable, Fail) => Some(Failed),
                (PausedUnreachable, Cancel) => Some(Cancelled),
                _ => None,
            }
        };
        for s in all {
            for t in ts {
                assert_eq!(s.apply(t), expected(s, t), "{s:?} --{t:?}-->");
            }
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        assert!(Completed.is_terminal() && Failed.is_terminal() && Cancelled.is_terminal());
        assert!(!PausedUnreachable.is_terminal());
    }
}
