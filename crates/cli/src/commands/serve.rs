//! `sluice dev` and `sluice start`.

use std::sync::Arc;

use sluice_api::ApiConfig;
use sluice_engine::{Engine, EngineConfig, OffsetClock, SystemClock};
use sluice_store::{PostgresStore, SqliteStore, Store};

use crate::envelope::report_error;
use crate::settings::{Database, Mode, ServerArgs, Settings};

pub async fn run(args: ServerArgs, mode: Mode) -> i32 {
    let command = if mode == Mode::Dev { "dev" } else { "start" };
    init_logging();
    let settings = match Settings::resolve(args, mode) {
        Ok(s) => s,
        Err(e) => return report_error(command, false, "SLUICE-5002", &e.0),
    };
    match serve(settings).await {
        Ok(()) => 0,
        Err((code, message)) => report_error(command, false, code, &message),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Open the store. SQLite: one sluice per file, held by a lock file, and every lease found is a
/// leftover of this node's last run, so all are released. PostgreSQL: several nodes share the
/// database, so no lock and no blanket release (a dead node's leases are released by the others'
/// sweep once its heartbeat is stale).
async fn open_store(db: &Database) -> Result<(Arc<dyn Store>, Option<std::fs::File>), (&'static str, String)> {
    match db {
        Database::Sqlite(path) => {
            let lock_path = path.with_extension("lock");
            if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| ("SLUICE-2003", format!("{}: {e}", dir.display())))?;
            }
            let lock = std::fs::File::create(&lock_path)
                .map_err(|e| ("SLUICE-2003", format!("{}: {e}", lock_path.display())))?;
            lock.try_lock()
                .map_err(|_| ("SLUICE-2003", format!("{} is in use by another sluice process", path.display())))?;
            let store = SqliteStore::open(path).map_err(|e| (e.code(), e.to_string()))?;
            let released = store.release_all_leases().await.map_err(|e| (e.code(), e.to_string()))?;
            if released > 0 {
                tracing::info!(released, "released leases held before the last shutdown; that work runs again");
            }
            sluice_api::doctor::install(crate::commands::doctor::api_source(store.clone()));
            Ok((Arc::new(store), Some(lock)))
        }
        Database::Postgres { url, options } => {
            let store = PostgresStore::connect(url, options.clone()).await.map_err(|e| (e.code(), e.to_string()))?;
            sluice_api::doctor::install(crate::commands::doctor::api_source(store.clone()));
            Ok((Arc::new(store), None))
        }
    }
}

async fn serve(settings: Settings) -> Result<(), (&'static str, String)> {
    let (store, lock) = open_store(&settings.db).await?;
    let test_clock = settings.test_clock.then(OffsetClock::default);
    let clock: sluice_engine::SharedClock = match &test_clock {
        Some(c) => Arc::new(c.clone()),
        None => Arc::new(SystemClock),
    };
    let engine_config = EngineConfig {
        call_timeout: settings.call_timeout,
        unreachable_budget: settings.unreachable_budget,
        failover_grace: settings.failover_grace,
        retry_interval: settings.retry_interval,
        max_inflight: settings.max_inflight,
        signing_keys: settings.signing_keys.clone(),
        server_kind: if settings.mode == Mode::Dev { "dev" } else { "cloud" },
        max_event_bytes: settings.max_event_bytes,
        resync_interval: settings.poll_interval,
        heartbeat_interval: settings.heartbeat_interval,
        node_timeout: settings.node_timeout,
        ..EngineConfig::default()
    };
    let engine = Engine::new(store, engine_config, clock).await.map_err(|e| (e.code(), e.to_string()))?;
    for url in &settings.sdk_urls {
        engine.watch_url(url);
    }
    let listener = tokio::net::TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .map_err(|e| ("SLUICE-5002", format!("cannot listen on {}:{}: {e}", settings.host, settings.port)))?;
    let addr = listener.local_addr().map_err(|e| ("SLUICE-5002", e.to_string()))?;
    // Registered before the first claim, so a crash right after start is swept by the others too.
    sluice_engine::cluster::join(&engine).await.map_err(|e| (e.code(), e.to_string()))?;
    let tasks = engine.spawn();
    eprintln!(
        "sluice {} listening on http://{addr} (state: {}, node: {}, mode: {})",
        env!("CARGO_PKG_VERSION"),
        settings.db.describe(),
        engine.config.node_id,
        if settings.mode == Mode::Dev { "dev" } else { "production" }
    );
    let api_config = ApiConfig {
        event_keys: settings.event_keys.clone(),
        signing_keys: settings.signing_keys.clone(),
        max_request_bytes: settings.max_request_bytes,
        test_clock,
    };
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: no new work is claimed; releasing leased work for other nodes");
    };
    sluice_api::serve(listener, engine.clone(), api_config, shutdown)
        .await
        .map_err(|e| ("SLUICE-5002", e.to_string()))?;
    for t in tasks {
        t.abort();
    }
    // Hand this node's leased work to the other nodes (or the next start) right away.
    match tokio::time::timeout(std::time::Duration::from_secs(5), sluice_engine::cluster::leave(&engine)).await {
        Ok(Ok(released)) => tracing::info!(released, "left the cluster; leased work released"),
        Ok(Err(e)) => tracing::warn!(code = e.code(), error = %e, "could not release this node's leases; they expire"),
        Err(_) => tracing::warn!("releasing this node's leases timed out; they expire"),
    }
    drop(lock);
    Ok(())
}
