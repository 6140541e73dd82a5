//! `sluice-deploy`: the Track A deploy gates of the runtime ADR as an explicit state machine.
//!
//! Gates, in the ADR's order: **warm → callback_probe → drain → cutover → bake**, and **rollback**
//! on any breach after cutover. The pipeline talks to the runtime only through [`RuntimeAdapter`],
//! so a stock Inngest server or Restate can plug in later; [`SluiceAdapter`] (HTTP client to
//! sluice's `/v1/deployments` API) is the first implementation.
//!
//! ## Why drain *waits* after the atomic switch
//! In sluice a staged deployment takes no traffic, and activation (the cutover call) is exactly
//! what stops new runs going to the old deployment: "old takes no new work" and "the current
//! deployment switches" are one atomic store update. So the pipeline executes
//! warm → callback_probe → cutover (atomic activate) → drain (wait for the old deployment's
//! in-flight calls to reach the threshold) → bake. The report still lists the gates in the ADR's
//! order with their real start/end times, and `executed_order` records the order they ran in.
//! The drain gate's failure action is unchanged: `held`, and nothing is shut down (the old worker
//! keeps serving the runs pinned to it). Old processes are stopped only after drain *and* bake,
//! because a bake breach rolls back onto the prior deployment, which must still be alive.

pub mod adapter;
pub mod config;
pub mod hooks;
pub mod machine;
pub mod otel;
pub mod pipeline;
pub mod report;

pub use adapter::{AdapterError, Deployment, ProbeStart, RuntimeAdapter, SluiceAdapter, Staged, Stats};
pub use config::GateConfig;
pub use machine::{Outcome, Phase};
pub use pipeline::{run_deploy, DeployRequest, Observer};
pub use report::{DeployReport, Gate, GateReport, GateStatus, Verdict};
