//! `Cluster` on PostgreSQL: node heartbeats and the dead-node sweep in the `nodes` table, and
//! wake-ups over `LISTEN/NOTIFY`.
//!
//! ```text
//!  commit / ingest that queues work ─▶ pg_notify('sluice_work', current_schema())  (sent on COMMIT)
//!  work_signals(): own connection ─▶ LISTEN sluice_work ─▶ payload == our schema ─▶ WorkSignal::Work
//!                  └─ lost (server restart, network) ─▶ WorkSignal::Lost, reconnect with backoff,
//!                     then WorkSignal::Work (signals sent while away are not replayed)
//! ```
//! The payload is the schema, so several sluice clusters in one database (one schema each) only
//! wake their own nodes. Notifications are sent in the writing transaction, so a node never wakes
//! up before the work is visible.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{describe, execute, query, PostgresStore};
use crate::cluster::{
    reconnect_backoff, Cluster, NodeRecord, StepDuplicate, SweepOutcome, WorkSignal, WorkSignals, REGISTRY_VERSION_SQL,
};
use crate::error::Result;

pub(super) const CHANNEL: &str = "sluice_work";
const NOTIFY_WORK: &str = "SELECT pg_notify('sluice_work', COALESCE(current_schema(), ''))";
/// How often the listener checks its otherwise silent connection is still there.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

mod sql {
    pub const HEARTBEAT: &str = "UPDATE nodes SET heartbeat_at = $2 WHERE id = $1";
    pub const REGISTER: &str = "INSERT INTO nodes (id, started_at, heartbeat_at) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at";
    pub const LIST: &str = "SELECT id, started_at, heartbeat_at FROM nodes ORDER BY id";
    /// Row locks make a second concurrent sweep wait, then find the rows gone.
    pub const DELETE_STALE: &str = "DELETE FROM nodes WHERE heartbeat_at < $1 RETURNING id";
    pub const RELEASE_OWNED_BY_ANY: &str =
        "UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ANY($1)";
    pub const RELEASE_ORPHANS: &str = "UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL
         WHERE lease_owner = $1 AND lease_expires_at < $3 AND NOT (id = ANY($2))";
    pub const RELEASE_OWNED: &str =
        "UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1";
    pub const FORGET: &str = "DELETE FROM nodes WHERE id = $1";
    pub const DUPLICATES: &str = "SELECT run_id, step_id, value, received_at FROM step_duplicates
         WHERE run_id = $1 ORDER BY received_at";
}

/// Wake every node of this schema once the calling transaction commits.
pub(super) async fn notify_work<C: GenericClient>(tx: &C) -> Result<()> {
    execute(tx, NOTIFY_WORK, &[]).await?;
    Ok(())
}

#[async_trait]
impl Cluster for PostgresStore {
    async fn heartbeat(&self, node_id: &str, started_at: i64, now: i64) -> Result<bool> {
        let client = self.client().await?;
        if execute(&client, sql::HEARTBEAT, &[&node_id, &now]).await? > 0 {
            return Ok(true);
        }
        execute(&client, sql::REGISTER, &[&node_id, &started_at, &now]).await?;
        Ok(false)
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let client = self.client().await?;
        query(&client, sql::LIST, &[])
            .await?
            .iter()
            .map(|r| Ok(NodeRecord { id: r.try_get(0)?, started_at: r.try_get(1)?, heartbeat_at: r.try_get(2)? }))
            .collect()
    }

    async fn sweep_dead_nodes(&self, stale_before: i64) -> Result<SweepOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut dead_nodes: Vec<String> = query(&tx, sql::DELETE_STALE, &[&stale_before])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        if dead_nodes.is_empty() {
            tx.rollback().await?;
            return Ok(SweepOutcome::default());
        }
        dead_nodes.sort();
        let released = execute(&tx, sql::RELEASE_OWNED_BY_ANY, &[&dead_nodes]).await?;
        if released > 0 {
            notify_work(&tx).await?;
        }
        tx.commit().await?;
        Ok(SweepOutcome { dead_nodes, released })
    }

    async fn release_orphaned_leases(
        &self,
        owner: &str,
        in_flight: &[String],
        leased_until_before: i64,
    ) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let released = execute(&tx, sql::RELEASE_ORPHANS, &[&owner, &in_flight, &leased_until_before]).await?;
        if released > 0 {
            notify_work(&tx).await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn leave(&self, node_id: &str) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let released = execute(&tx, sql::RELEASE_OWNED, &[&node_id]).await?;
        execute(&tx, sql::FORGET, &[&node_id]).await?;
        if released > 0 {
            notify_work(&tx).await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn step_duplicates(&self, run_id: &str) -> Result<Vec<StepDuplicate>> {
        let client = self.client().await?;
        let mut out = Vec::new();
        for r in query(&client, sql::DUPLICATES, &[&run_id]).await? {
            let value: String = r.try_get(2)?;
            out.push(StepDuplicate {
                run_id: r.try_get(0)?,
                step_id: r.try_get(1)?,
                value: serde_json::from_str(&value)?,
                received_at: r.try_get(3)?,
            });
        }
        Ok(out)
    }

    async fn registry_version(&self) -> Result<Vec<i64>> {
        let client = self.client().await?;
        let row = client.query_one(REGISTRY_VERSION_SQL, &[]).await?;
        (0..12).map(|i| row.try_get(i).map_err(Into::into)).collect()
    }

    fn work_signals(&self) -> Option<WorkSignals> {
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(listen(self.config.clone(), tx));
        Some(WorkSignals::new(rx, task))
    }
}

/// Keep one `LISTEN` connection open for as long as anyone holds the signals.
async fn listen(config: Arc<tokio_postgres::Config>, tx: mpsc::Sender<WorkSignal>) {
    // Told apart from the pooled connections in pg_stat_activity.
    let mut config = (*config).clone();
    let name = format!("{} listener", config.get_application_name().unwrap_or("sluice"));
    config.application_name(name);
    let mut failures = 0u32;
    let mut connected_once = false;
    loop {
        let reason = match listen_once(&config, &tx, &mut connected_once).await {
            Ok(()) => return,
            Err(reason) => reason,
        };
        if tx.is_closed() {
            return;
        }
        // Reported on the first failure of each outage; later attempts of the same one are quiet.
        if failures == 0 {
            let _ = tx.try_send(WorkSignal::Lost(reason));
        }
        tokio::time::sleep(reconnect_backoff(failures)).await;
        failures = failures.saturating_add(1);
        if connected_once {
            // Reset by a successful connect below (listen_once sets it again).
            connected_once = false;
            failures = failures.min(1);
        }
    }
}

/// One connection's life: `Ok` when the receiver went away, `Err` when the connection did.
async fn listen_once(
    config: &tokio_postgres::Config,
    tx: &mpsc::Sender<WorkSignal>,
    connected: &mut bool,
) -> std::result::Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| describe(&e))?;
    let (payloads_tx, mut payloads) = mpsc::unbounded_channel::<String>();
    // The connection is driven here; without it no query on `client` would progress.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if payloads_tx.send(n.payload().to_string()).is_err() {
                        return "listener stopped".to_string();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return describe(&e),
                None => return "the server closed the connection".to_string(),
            }
        }
    });
    let _abort_driver = AbortOnDrop(driver);
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(|e| describe(&e))?;
    let schema: String = client
        .query_one("SELECT COALESCE(current_schema(), '')", &[])
        .await
        .map_err(|e| describe(&e))?
        .try_get(0)
        .map_err(|e| describe(&e))?;
    *connected = true;
    // Anything queued while we were not listening has to be looked for.
    if tx.try_send(WorkSignal::Work).is_err() && tx.is_closed() {
        return Ok(());
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            payload = payloads.recv() => match payload {
                Some(payload) => {
                    if payload == schema && tx.try_send(WorkSignal::Work).is_err() && tx.is_closed() {
                        return Ok(());
                    }
                }
                None => return Err("the listener connection ended".to_string()),
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(describe(&e)),
                    Err(_) => return Err(format!("the listener connection did not answer within {PING_TIMEOUT:?}")),
                }
            }
            _ = tx.closed() => return Ok(()),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<String>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::backend;
    use crate::cluster::suite::cluster_suite;
    use crate::conformance::{ingest_one, Backend};
    use crate::{Cluster, PostgresStore, Store, WorkSignal};

    cluster_suite!(backend());

    async fn next(signals: &mut crate::WorkSignals) -> WorkSignal {
        tokio::time::timeout(Duration::from_secs(10), signals.recv()).await.expect("a signal within 10s").unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_work_wakes_the_listeners_of_the_same_schema_only() {
        let Some(pg) = backend() else { return };
        let Some(other) = backend() else { return };
        let (writer, listener, stranger) = (pg.open().await, pg.open().await, other.open().await);
        let mut signals = listener.work_signals().expect("PostgreSQL has a wake-up channel");
        let mut strangers = stranger.work_signals().unwrap();
        // The first signal says "connected: look for work".
        assert_eq!(next(&mut signals).await, WorkSignal::Work);
        assert_eq!(next(&mut strangers).await, WorkSignal::Work);

        writer.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
        assert_eq!(next(&mut signals).await, WorkSignal::Work);
        // A duplicate queues nothing, and another schema's listener hears nothing.
        writer.ingest(vec![ingest_one("e1", "r9", None, 1_000)]).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(500), signals.recv()).await.is_err());
        assert!(tokio::time::timeout(Duration::from_millis(100), strangers.recv()).await.is_err());

        // A sweep that releases leases wakes the others too.
        writer.heartbeat("dead", 0, 0).await.unwrap();
        writer.claim_due(1_000, "dead", i64::MAX, 1).await.unwrap();
        assert_eq!(writer.sweep_dead_nodes(10).await.unwrap().released, 1);
        assert_eq!(next(&mut signals).await, WorkSignal::Work);
        drop((signals, strangers, writer, listener, stranger));
        pg.clean_up().await;
        other.clean_up().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listener_whose_connection_is_killed_reports_it_and_comes_back() {
        let Some(pg) = backend() else { return };
        let writer = pg.open().await;
        // The listener's connections are named after the schema, to find them below.
        let separator = if pg.url.contains('?') { '&' } else { '?' };
        let named = format!("{}{separator}application_name={}", pg.url, pg.schema);
        let listener = PostgresStore::connect(&named, pg.options()).await.unwrap();
        let mut signals = listener.work_signals().unwrap();
        assert_eq!(next(&mut signals).await, WorkSignal::Work);
        // Terminate the listening backend, as a server restart would.
        let raw = pg.raw().await;
        let name = format!("{} listener", pg.schema);
        let killed: i64 = raw
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert!(killed >= 1, "no listening backend found");
        assert!(matches!(next(&mut signals).await, WorkSignal::Lost(_)));
        assert_eq!(next(&mut signals).await, WorkSignal::Work, "reconnected");
        writer.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
        assert_eq!(next(&mut signals).await, WorkSignal::Work);
        drop((signals, writer, listener));
        pg.clean_up().await;
    }
}
