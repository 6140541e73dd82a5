//! The deployment lifecycle: one synced version of an app (a URL, deploy id or app version).
//!
//! ```text
//!  Registered ──warm──▶ Warming ──probe ok──▶ Probed ──cutover──▶ Current ──next cutover──▶ Draining ──▶ Drained ──▶ Retired
//!      │                   │                    │                    │                       │
//!      └───────────────────┴────────────────────┴──── breach ────────┴──────▶ RolledBack      └── rollback ──▶ Current
//! ```
//! A plain sync outside `sluice deploy` goes straight from Registered to Current (auto-activation).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    Registered,
    Warming,
    Probed,
    Current,
    Draining,
    Drained,
    Retired,
    RolledBack,
}

impl DeploymentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeploymentStatus::Registered => "registered",
            DeploymentStatus::Warming => "warming",
            DeploymentStatus::Probed => "probed",
            DeploymentStatus::Current => "current",
            DeploymentStatus::Draining => "draining",
            DeploymentStatus::Drained => "drained",
            DeploymentStatus::Retired => "retired",
            DeploymentStatus::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<DeploymentStatus> {
        Some(match s {
            "registered" => DeploymentStatus::Registered,
            "warming" => DeploymentStatus::Warming,
            "probed" => DeploymentStatus::Probed,
            "current" => DeploymentStatus::Current,
            "draining" => DeploymentStatus::Draining,
            "drained" => DeploymentStatus::Drained,
            "retired" => DeploymentStatus::Retired,
            "rolled_back" => DeploymentStatus::RolledBack,
            _ => return None,
        })
    }

    /// Can runs pinned to a deployment in this state still be called there?
    pub fn serves_pinned_runs(&self) -> bool {
        matches!(
            self,
            DeploymentStatus::Registered
                | DeploymentStatus::Warming
                | DeploymentStatus::Probed
                | DeploymentStatus::Current
                | DeploymentStatus::Draining
        )
    }

    /// The one table of legal moves.
    pub fn can_become(self, next: DeploymentStatus) -> bool {
        use DeploymentStatus::*;
        if self == next {
            return true;
        }
        match (self, next) {
            (Registered, Warming | Probed | Current | RolledBack | Retired) => true,
            (Warming, Probed | Current | RolledBack | Retired) => true,
            (Probed, Current | RolledBack | Retired) => true,
            (Current, Draining | RolledBack) => true,
            // Rollback re-activates the prior deployment while it is still draining or drained.
            (Draining, Drained | Current | Retired) => true,
            (Drained, Retired | Current) => true,
            (RolledBack, Retired | Current) => true,
            (Retired, Current) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DeploymentStatus::*;
    use super::*;

    #[test]
    fn lifecycle_moves() {
        let all = [Registered, Warming, Probed, Current, Draining, Drained, Retired, RolledBack];
        for s in all {
            assert_eq!(DeploymentStatus::parse(s.as_str()), Some(s));
            assert!(s.can_become(s));
        }
        assert!(Registered.can_become(Warming));
        assert!(Probed.can_become(Current));
        assert!(Current.can_become(Draining));
        assert!(Draining.can_become(Current), "rollback re-activates the prior deployment");
        assert!(Current.can_become(RolledBack));
        assert!(!Drained.can_become(Warming));
        assert!(!Current.can_become(Registered));
        assert!(!Retired.can_become(Draining));
        assert!(Draining.serves_pinned_runs());
        assert!(!Retired.serves_pinned_runs());
        assert!(!RolledBack.serves_pinned_runs());
    }
}
