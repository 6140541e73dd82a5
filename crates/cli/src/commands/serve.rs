//! `sluice dev` and `sluice start`.

use std::sync::Arc;

use sluice_api::ApiConfig;
use sluice_engine::{Engine, EngineConfig, OffsetClock, SystemClock};
use sluice_store::{SqliteStore, Store};

use crate::envelope::report_error;
use crate::settings::{Mode, ServerArgs, Settings};

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

async fn serve(settings: Settings) -> Result<(), (&'static str, String)> {
    // One sluice per SQLite file: SQLite has a single writer, and on start this node releases
    // every lease it finds, which is only safe when no other node holds any.
    let lock_path = settings.db_path.with_extension("lock");
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ("SLUICE-2003", format!("{}: {e}", dir.display())))?;
    }
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| ("SLUICE-2003", format!("{}: {e}", lock_path.display())))?;
    lock.try_lock()
        .map_err(|_| ("SLUICE-2003", format!("{} is in use by another sluice process", settings.db_path.display())))?;

    let store = SqliteStore::open(&settings.db_path).map_err(|e| (e.code(), e.to_string()))?;
    let released = store.release_all_leases().await.map_err(|e| (e.code(), e.to_string()))?;
    if released > 0 {
        tracing::info!(released, "released leases held before the last shutdown; that work runs again");
    }
    let store: Arc<dyn Store> = Arc::new(store);
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
    let tasks = engine.spawn();
    eprintln!(
        "sluice {} listening on http://{addr} (state: {}, mode: {})",
        env!("CARGO_PKG_VERSION"),
        settings.db_path.display(),
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
        tracing::info!("shutting down: no new work is claimed; leased work resumes on the next start");
    };
    sluice_api::serve(listener, engine, api_config, shutdown).await.map_err(|e| ("SLUICE-5002", e.to_string()))?;
    for t in tasks {
        t.abort();
    }
    drop(lock);
    Ok(())
}
