//! `DeploymentStore` on PostgreSQL.

use async_trait::async_trait;
use sluice_protocol::deployment::DeploymentStatus;
use tokio_postgres::Row;

use super::{execute, query, query_opt, PostgresStore};
use crate::deployments::{DeploymentRecord, DeploymentStore};
use crate::error::{Result, StoreError};

const COLUMNS: &str =
    "id, app_id, url, identity, deploy_id, app_version, config_hash, functions, status, created_at, updated_at, activated_at";

fn from_row(r: &Row) -> Result<DeploymentRecord> {
    let functions: String = r.try_get(7)?;
    let status: String = r.try_get(8)?;
    Ok(DeploymentRecord {
        id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        url: r.try_get(2)?,
        identity: r.try_get(3)?,
        deploy_id: r.try_get(4)?,
        app_version: r.try_get(5)?,
        config_hash: r.try_get(6)?,
        functions: serde_json::from_str(&functions)?,
        status: DeploymentStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown deployment status {status:?}")))?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
        activated_at: r.try_get(11)?,
    })
}

#[async_trait]
impl DeploymentStore for PostgresStore {
    async fn put_deployment(&self, d: DeploymentRecord) -> Result<()> {
        let client = self.client().await?;
        let functions = serde_json::to_string(&d.functions)?;
        execute(
            &client,
            &format!(
                "INSERT INTO deployments ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (id) DO UPDATE SET url = excluded.url, identity = excluded.identity,
                   deploy_id = excluded.deploy_id, app_version = excluded.app_version,
                   config_hash = excluded.config_hash, functions = excluded.functions, status = excluded.status,
                   updated_at = excluded.updated_at, activated_at = excluded.activated_at"
            ),
            &[
                &d.id,
                &d.app_id,
                &d.url,
                &d.identity,
                &d.deploy_id,
                &d.app_version,
                &d.config_hash,
                &functions,
                &d.status.as_str(),
                &d.created_at,
                &d.updated_at,
                &d.activated_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_deployment(&self, id: &str) -> Result<Option<DeploymentRecord>> {
        let client = self.client().await?;
        query_opt(&client, &format!("SELECT {COLUMNS} FROM deployments WHERE id = $1"), &[&id])
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    async fn find_deployment(&self, app_id: &str, identity: &str) -> Result<Option<DeploymentRecord>> {
        let client = self.client().await?;
        query_opt(
            &client,
            &format!(
                "SELECT {COLUMNS} FROM deployments WHERE app_id = $1 AND identity = $2
                 ORDER BY created_at DESC, id DESC LIMIT 1"
            ),
            &[&app_id, &identity],
        )
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
    }

    async fn list_deployments(&self, app_id: Option<&str>) -> Result<Vec<DeploymentRecord>> {
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {COLUMNS} FROM deployments WHERE ($1::TEXT IS NULL OR app_id = $1) ORDER BY created_at, id"
            ),
            &[&app_id],
        )
        .await?
        .iter()
        .map(from_row)
        .collect()
    }

    async fn activate_deployment(
        &self,
        app_id: &str,
        id: &str,
        previous_status: DeploymentStatus,
        now: i64,
    ) -> Result<Option<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Serialise cutovers of one app across nodes.
        query(&tx, "SELECT id FROM deployments WHERE app_id = $1 FOR UPDATE", &[&app_id]).await?;
        let previous: Option<String> = query_opt(
            &tx,
            "SELECT id FROM deployments WHERE app_id = $1 AND status = 'current' AND id <> $2",
            &[&app_id, &id],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        execute(
            &tx,
            "UPDATE deployments SET status = $3, updated_at = $4 WHERE app_id = $1 AND status = 'current' AND id <> $2",
            &[&app_id, &id, &previous_status.as_str(), &now],
        )
        .await?;
        execute(
            &tx,
            "UPDATE deployments SET status = 'current', updated_at = $2, activated_at = $2 WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(previous)
    }

    async fn set_deployment_status(&self, id: &str, status: DeploymentStatus, now: i64) -> Result<()> {
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE deployments SET status = $2, updated_at = $3 WHERE id = $1",
            &[&id, &status.as_str(), &now],
        )
        .await?;
        Ok(())
    }

    async fn routing_policies(&self) -> Result<Vec<(String, String)>> {
        let client = self.client().await?;
        query(&client, "SELECT app_id, policy FROM app_routing ORDER BY app_id", &[])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn set_routing_policy(&self, app_id: &str, policy: &str, now: i64) -> Result<()> {
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO app_routing (app_id, policy, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (app_id) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
            &[&app_id, &policy, &now],
        )
        .await?;
        Ok(())
    }
}
