//! Deployments: each synced version of an app, its function set, and which one is current.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_protocol::deployment::DeploymentStatus;
use sluice_protocol::function::FunctionConfig;

use crate::error::Result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub app_id: String,
    pub url: String,
    /// What makes two syncs the same deployment: normalised URL, deploy id and app version.
    pub identity: String,
    pub deploy_id: Option<String>,
    pub app_version: Option<String>,
    pub config_hash: String,
    pub functions: Vec<FunctionConfig>,
    pub status: DeploymentStatus,
    pub created_at: i64,
    pub updated_at: i64,
    pub activated_at: Option<i64>,
}

#[async_trait]
pub trait DeploymentStore: Send + Sync {
    /// Insert or replace a deployment (same id).
    async fn put_deployment(&self, d: DeploymentRecord) -> Result<()>;
    async fn get_deployment(&self, id: &str) -> Result<Option<DeploymentRecord>>;
    /// The deployment of `app_id` with this identity, if it was synced before.
    async fn find_deployment(&self, app_id: &str, identity: &str) -> Result<Option<DeploymentRecord>>;
    /// All deployments, oldest first (`app_id` = None for every app).
    async fn list_deployments(&self, app_id: Option<&str>) -> Result<Vec<DeploymentRecord>>;
    /// Make `id` the app's current deployment in one transaction: the previous current one (if
    /// any) becomes `previous_status` (draining, or rolled_back). Returns the previous id.
    async fn activate_deployment(
        &self,
        app_id: &str,
        id: &str,
        previous_status: DeploymentStatus,
        now: i64,
    ) -> Result<Option<String>>;
    async fn set_deployment_status(&self, id: &str, status: DeploymentStatus, now: i64) -> Result<()>;
    /// Per-app routing policies (`pinned` / `auto-upgrade`), as (app id, policy).
    async fn routing_policies(&self) -> Result<Vec<(String, String)>>;
    async fn set_routing_policy(&self, app_id: &str, policy: &str, now: i64) -> Result<()>;
}
