//! `Cluster` on SQLite: one process per file (the CLI holds a lock file), so the nodes table has
//! one live row and there is nobody to wake up; the bookkeeping is the same as on PostgreSQL so
//! the engine runs one code path.

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::SqliteStore;
use crate::cluster::{Cluster, NodeRecord, StepDuplicate, SweepOutcome, WorkSignals, REGISTRY_VERSION_SQL};
use crate::error::Result;

fn heartbeat(conn: &Connection, node_id: &str, started_at: i64, now: i64) -> Result<bool> {
    let known = conn.execute("UPDATE nodes SET heartbeat_at = ?2 WHERE id = ?1", params![node_id, now])? > 0;
    if !known {
        conn.execute(
            "INSERT INTO nodes (id, started_at, heartbeat_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            params![node_id, started_at, now],
        )?;
    }
    Ok(known)
}

#[async_trait]
impl Cluster for SqliteStore {
    async fn heartbeat(&self, node_id: &str, started_at: i64, now: i64) -> Result<bool> {
        let node_id = node_id.to_string();
        self.with_conn(move |conn| heartbeat(conn, &node_id, started_at, now)).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT id, started_at, heartbeat_at FROM nodes ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| Ok(NodeRecord { id: r.get(0)?, started_at: r.get(1)?, heartbeat_at: r.get(2)? }))?;
            rows.collect::<std::result::Result<Vec<_>, _>>().map_err(Into::into)
        })
        .await
    }

    async fn sweep_dead_nodes(&self, stale_before: i64) -> Result<SweepOutcome> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let dead_nodes: Vec<String> = {
                let mut stmt = tx.prepare("DELETE FROM nodes WHERE heartbeat_at < ?1 RETURNING id")?;
                let rows = stmt.query_map(params![stale_before], |r| r.get(0))?;
                rows.collect::<std::result::Result<_, _>>()?
            };
            let mut released = 0;
            for node in &dead_nodes {
                released += tx.execute(
                    "UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?1",
                    params![node],
                )? as u64;
            }
            tx.commit()?;
            let mut dead_nodes = dead_nodes;
            dead_nodes.sort();
            Ok(SweepOutcome { dead_nodes, released })
        })
        .await
    }

    async fn release_orphaned_leases(
        &self,
        owner: &str,
        in_flight: &[String],
        leased_until_before: i64,
    ) -> Result<u64> {
        let owner = owner.to_string();
        let keep = serde_json::to_string(in_flight)?;
        self.with_conn(move |conn| {
            let n = conn.execute(
                "UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL
                 WHERE lease_owner = ?1 AND lease_expires_at < ?3
                   AND id NOT IN (SELECT value FROM json_each(?2))",
                params![owner, keep, leased_until_before],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn leave(&self, node_id: &str) -> Result<u64> {
        let node_id = node_id.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?1",
                params![node_id],
            )?;
            tx.execute("DELETE FROM nodes WHERE id = ?1", params![node_id])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn step_duplicates(&self, run_id: &str) -> Result<Vec<StepDuplicate>> {
        let run_id = run_id.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT run_id, step_id, value, received_at FROM step_duplicates WHERE run_id = ?1
                 ORDER BY received_at, rowid",
            )?;
            let rows = stmt.query_map(params![run_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (run_id, step_id, value, received_at) = row?;
                out.push(StepDuplicate { run_id, step_id, value: serde_json::from_str(&value)?, received_at });
            }
            Ok(out)
        })
        .await
    }

    async fn registry_version(&self) -> Result<Vec<i64>> {
        self.with_conn(|conn| {
            Ok(conn.query_row(REGISTRY_VERSION_SQL, [], |r| (0..12).map(|i| r.get::<_, i64>(i)).collect())?)
        })
        .await
    }

    fn work_signals(&self) -> Option<WorkSignals> {
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::suite::cluster_suite;
    use crate::conformance::Backend;
    use crate::SqliteStore;
    use async_trait::async_trait;

    struct SqliteFile {
        dir: tempfile::TempDir,
    }

    #[async_trait]
    impl Backend for SqliteFile {
        type Store = SqliteStore;
        async fn open(&self) -> SqliteStore {
            SqliteStore::open(&self.dir.path().join("state.db")).unwrap()
        }
    }

    fn backend() -> Option<SqliteFile> {
        Some(SqliteFile { dir: tempfile::tempdir().unwrap() })
    }

    cluster_suite!(backend());
}
