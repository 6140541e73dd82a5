//! `DeploymentStore` on SQLite.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};
use sluice_protocol::deployment::DeploymentStatus;

use super::SqliteStore;
use crate::deployments::{DeploymentRecord, DeploymentStore};
use crate::error::{Result, StoreError};

const COLUMNS: &str =
    "id, app_id, url, identity, deploy_id, app_version, config_hash, functions, status, created_at, updated_at, activated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Result<DeploymentRecord>> {
    let functions: String = r.get(7)?;
    let status: String = r.get(8)?;
    let build = || -> Result<DeploymentRecord> {
        Ok(DeploymentRecord {
            id: r.get(0)?,
            app_id: r.get(1)?,
            url: r.get(2)?,
            identity: r.get(3)?,
            deploy_id: r.get(4)?,
            app_version: r.get(5)?,
            config_hash: r.get(6)?,
            functions: serde_json::from_str(&functions)?,
            status: DeploymentStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown deployment status {status:?}")))?,
            created_at: r.get(9)?,
            updated_at: r.get(10)?,
            activated_at: r.get(11)?,
        })
    };
    Ok(build())
}

#[async_trait]
impl DeploymentStore for SqliteStore {
    async fn put_deployment(&self, d: DeploymentRecord) -> Result<()> {
        self.with_conn(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO deployments ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (id) DO UPDATE SET url = excluded.url, identity = excluded.identity,
                       deploy_id = excluded.deploy_id, app_version = excluded.app_version,
                       config_hash = excluded.config_hash, functions = excluded.functions, status = excluded.status,
                       updated_at = excluded.updated_at, activated_at = excluded.activated_at"
                ),
                params![
                    d.id,
                    d.app_id,
                    d.url,
                    d.identity,
                    d.deploy_id,
                    d.app_version,
                    d.config_hash,
                    serde_json::to_string(&d.functions)?,
                    d.status.as_str(),
                    d.created_at,
                    d.updated_at,
                    d.activated_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_deployment(&self, id: &str) -> Result<Option<DeploymentRecord>> {
        let id = id.to_string();
        self.with_conn(move |conn| {
            conn.query_row(&format!("SELECT {COLUMNS} FROM deployments WHERE id = ?1"), params![id], from_row)
                .optional()?
                .transpose()
        })
        .await
    }

    async fn find_deployment(&self, app_id: &str, identity: &str) -> Result<Option<DeploymentRecord>> {
        let (app_id, identity) = (app_id.to_string(), identity.to_string());
        self.with_conn(move |conn| {
            conn.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM deployments WHERE app_id = ?1 AND identity = ?2
                     ORDER BY created_at DESC, id DESC LIMIT 1"
                ),
                params![app_id, identity],
                from_row,
            )
            .optional()?
            .transpose()
        })
        .await
    }

    async fn list_deployments(&self, app_id: Option<&str>) -> Result<Vec<DeploymentRecord>> {
        let app_id = app_id.map(str::to_string);
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM deployments WHERE (?1 IS NULL OR app_id = ?1) ORDER BY created_at, id"
            ))?;
            let rows = stmt.query_map(params![app_id], from_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
        .await
    }

    async fn activate_deployment(
        &self,
        app_id: &str,
        id: &str,
        previous_status: DeploymentStatus,
        now: i64,
    ) -> Result<Option<String>> {
        let (app_id, id) = (app_id.to_string(), id.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let previous: Option<String> = tx
                .query_row(
                    "SELECT id FROM deployments WHERE app_id = ?1 AND status = 'current' AND id <> ?2",
                    params![app_id, id],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "UPDATE deployments SET status = ?3, updated_at = ?4 WHERE app_id = ?1 AND status = 'current' AND id <> ?2",
                params![app_id, id, previous_status.as_str(), now],
            )?;
            tx.execute(
                "UPDATE deployments SET status = 'current', updated_at = ?2, activated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            tx.commit()?;
            Ok(previous)
        })
        .await
    }

    async fn set_deployment_status(&self, id: &str, status: DeploymentStatus, now: i64) -> Result<()> {
        let id = id.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE deployments SET status = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, status.as_str(), now],
            )?;
            Ok(())
        })
        .await
    }

    async fn routing_policies(&self) -> Result<Vec<(String, String)>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT app_id, policy FROM app_routing ORDER BY app_id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn set_routing_policy(&self, app_id: &str, policy: &str, now: i64) -> Result<()> {
        let (app_id, policy) = (app_id.to_string(), policy.to_string());
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO app_routing (app_id, policy, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (app_id) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
                params![app_id, policy, now],
            )?;
            Ok(())
        })
        .await
    }
}
