//! The gate state machine: which phase follows which outcome. The pipeline ([`crate::pipeline`])
//! only executes phases; every transition is decided here, in one table.
//!
//! ```text
//!  Warm ─pass─▶ CallbackProbe ─pass|degraded─▶ Cutover ─pass─▶ Drain ─pass|held─▶ Bake ─pass─▶ Done
//!   │fail            │fail                        │fail                             │fail
//!   ▼                ▼                            ▼                                 ▼
//!  Blocked        Blocked                      Rollback ◀───────────────────────────┘
//!                                                 │pass → RolledBack, fail → Failed
//! ```
//! Drain runs after the atomic activation on sluice (see the crate docs); a held drain does not
//! roll back (the ADR's action for it is "hold shutdown"), it is carried into the verdict.

use crate::report::{Gate, GateStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Gate(Gate),
    /// The release never took traffic.
    Blocked,
    /// All gates ran (the verdict then comes from their statuses).
    Done,
    RolledBack,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(GateStatus),
    /// Cutover could not happen because there is no prior deployment to compare with: nothing to do.
    NoPrevious,
}

impl Phase {
    pub const START: Phase = Phase::Gate(Gate::Warm);

    pub fn is_terminal(&self) -> bool {
        !matches!(self, Phase::Gate(_))
    }

    /// The one table of moves.
    pub fn next(self, outcome: Outcome) -> Phase {
        use GateStatus::*;
        let Phase::Gate(gate) = self else { return self };
        let status = match outcome {
            Outcome::Status(s) => s,
            Outcome::NoPrevious => Skipped,
        };
        match (gate, status) {
            (_, Running) => self,
            (Gate::Warm, Pass | Degraded) => Phase::Gate(Gate::CallbackProbe),
            (Gate::Warm, _) => Phase::Blocked,
            (Gate::CallbackProbe, Pass | Degraded) => Phase::Gate(Gate::Cutover),
            (Gate::CallbackProbe, _) => Phase::Blocked,
            (Gate::Cutover, Pass | Degraded) => Phase::Gate(Gate::Drain),
            (Gate::Cutover, _) => Phase::Gate(Gate::Rollback),
            // Held: nothing is shut down, but the new deployment is current: bake still watches it.
            (Gate::Drain, Pass | Held | Skipped | Degraded) => Phase::Gate(Gate::Bake),
            (Gate::Drain, Fail) => Phase::Gate(Gate::Rollback),
            (Gate::Bake, Pass | Degraded | Skipped) => Phase::Done,
            (Gate::Bake, _) => Phase::Gate(Gate::Rollback),
            (Gate::Rollback, Pass) => Phase::RolledBack,
            (Gate::Rollback, _) => Phase::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GateStatus::*;

    fn walk(outcomes: &[GateStatus]) -> (Vec<Gate>, Phase) {
        let mut phase = Phase::START;
        let mut seen = vec![];
        for o in outcomes {
            let Phase::Gate(g) = phase else { break };
            seen.push(g);
            phase = phase.next(Outcome::Status(*o));
        }
        (seen, phase)
    }

    #[test]
    fn clean_deploy_runs_every_gate_once() {
        let (seen, end) = walk(&[Pass, Pass, Pass, Pass, Pass]);
        assert_eq!(seen, vec![Gate::Warm, Gate::CallbackProbe, Gate::Cutover, Gate::Drain, Gate::Bake]);
        assert_eq!(end, Phase::Done);
    }

    #[test]
    fn breaches_before_cutover_block_the_release() {
        assert_eq!(walk(&[Fail]).1, Phase::Blocked);
        assert_eq!(walk(&[Pass, Fail]).1, Phase::Blocked);
        assert_eq!(walk(&[Pass, Skipped]).1, Phase::Blocked, "a probe that did not run does not release");
    }

    #[test]
    fn a_degraded_probe_still_releases() {
        assert_eq!(walk(&[Pass, Degraded]).1, Phase::Gate(Gate::Cutover));
    }

    #[test]
    fn breaches_after_cutover_roll_back() {
        let (seen, end) = walk(&[Pass, Pass, Pass, Pass, Fail, Pass]);
        assert_eq!(seen.last(), Some(&Gate::Rollback));
        assert_eq!(end, Phase::RolledBack);
        assert_eq!(walk(&[Pass, Pass, Fail, Pass]).1, Phase::RolledBack);
        assert_eq!(walk(&[Pass, Pass, Fail, Fail]).1, Phase::Failed);
        assert_eq!(walk(&[Pass, Pass, Pass, Fail, Pass]).1, Phase::RolledBack);
    }

    #[test]
    fn a_held_drain_shuts_nothing_down_and_still_bakes() {
        let (seen, end) = walk(&[Pass, Pass, Pass, Held, Pass]);
        assert_eq!(seen, vec![Gate::Warm, Gate::CallbackProbe, Gate::Cutover, Gate::Drain, Gate::Bake]);
        assert_eq!(end, Phase::Done);
        assert_eq!(Phase::Gate(Gate::Drain).next(Outcome::NoPrevious), Phase::Gate(Gate::Bake));
    }

    #[test]
    fn running_stays_and_terminal_phases_are_sticky() {
        assert_eq!(Phase::Gate(Gate::Bake).next(Outcome::Status(Running)), Phase::Gate(Gate::Bake));
        for p in [Phase::Blocked, Phase::Done, Phase::RolledBack, Phase::Failed] {
            assert!(p.is_terminal());
            assert_eq!(p.next(Outcome::Status(Pass)), p);
        }
    }
}
