//! End-to-end harness: real `sluice` processes, real SDK worker processes (npm `inngest`, PyPI
//! `inngest`) over real HTTP, state in a real SQLite file, crashes by real SIGKILL.
//! Waiting is always "poll until true, with a deadline", never a bare sleep.
//!
//! `SLUICE_TEST_BACKEND=postgres` runs the same tests on PostgreSQL: each `Sluice` gets a fresh
//! schema (dropped with it) in `SLUICE_TEST_PG_URL` (default postgres://postgres@127.0.0.1:5432/test).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const DEADLINE: Duration = Duration::from_secs(45);

/// Whether sluice processes store their state in PostgreSQL (`SLUICE_TEST_BACKEND=postgres`).
pub fn postgres_backend() -> bool {
    std::env::var("SLUICE_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

pub fn pg_url() -> String {
    std::env::var("SLUICE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema name no other test (of this or another process) uses.
pub fn fresh_schema() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("sluice_e2e_{}_{nanos}_{n}", std::process::id())
}

/// Drop a PostgreSQL schema (from sync code too: on its own thread and runtime).
pub fn drop_schema(schema: &str) {
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.batch_execute(&sql).await
        })
    })
    .join();
    if let Ok(Err(e)) = result {
        eprintln!("could not drop schema {schema}: {e}");
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

/// Poll `f` until it returns `Some`, or panic with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct Sluice {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    mode: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Signing key for API calls (production mode).
    pub signing_key: Option<String>,
    pub event_key: String,
    /// PostgreSQL backend: the schema this sluice uses, and whether it is dropped with it.
    pub schema: Option<(String, bool)>,
}

pub struct SluiceOptions {
    pub mode: &'static str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub signing_key: Option<String>,
    pub event_key: String,
    /// PostgreSQL backend: share this schema (several nodes of one cluster) instead of a fresh one.
    pub db_schema: Option<String>,
}

impl Default for SluiceOptions {
    fn default() -> Self {
        SluiceOptions {
            mode: "dev",
            args: vec!["--retry-interval".into(), "300ms".into(), "--poll-interval".into(), "500ms".into()],
            env: vec![],
            signing_key: None,
            event_key: "test-key".into(),
            db_schema: None,
        }
    }
}

impl Sluice {
    pub async fn dev() -> Sluice {
        Sluice::start(SluiceOptions::default()).await
    }

    pub async fn dev_with(extra: &[&str]) -> Sluice {
        let mut o = SluiceOptions::default();
        o.args.extend(extra.iter().map(|s| s.to_string()));
        Sluice::start(o).await
    }

    pub async fn start(o: SluiceOptions) -> Sluice {
        let mut s = Sluice {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            mode: o.mode,
            args: o.args,
            env: o.env,
            signing_key: o.signing_key,
            event_key: o.event_key,
            schema: postgres_backend().then(|| match o.db_schema {
                Some(shared) => (shared, false),
                None => (fresh_schema(), true),
            }),
        };
        s.spawn();
        s.wait_healthy().await;
        s
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("sluice.db")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("sluice.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg(self.mode).arg("--port").arg(self.port.to_string()).arg("--db");
        match &self.schema {
            // A node restarted after a kill is a new node: the dead one's leases are released by
            // the sweep once its heartbeat is older than the node timeout, kept short here.
            Some((schema, _)) => cmd
                .arg(pg_url())
                .env("SLUICE_DB_SCHEMA", schema)
                .env("SLUICE_HEARTBEAT_INTERVAL", "250ms")
                .env("SLUICE_NODE_TIMEOUT", "2s"),
            None => cmd.arg(self.db_path()),
        };
        cmd.args(&self.args)
            .env("SLUICE_LOG", "info,sluice_engine=debug")
            .env_remove("SLUICE_SIGNING_KEY")
            .env_remove("SLUICE_CONFIG")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn sluice"));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn wait_healthy(&self) {
        let url = format!("{}/health", self.url());
        eventually("sluice /health", DEADLINE, || {
            let url = url.clone();
            async move {
                let r = http().get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_healthy().await;
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = http().request(method, format!("{}{}", self.url(), path));
        if let Some(k) = &self.signing_key {
            r = r.bearer_auth(sluice_protocol::signing::hashed_signing_key(k));
        }
        r
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST raw bytes to the event API with a given key.
    pub async fn post_events_raw(
        &self,
        key: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut r =
            http().post(format!("{}/e/{key}", self.url())).header("content-type", "application/json").body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Send one event; returns its id.
    pub async fn send(&self, name: &str, data: Value) -> String {
        let (status, body) =
            self.post_events_raw(&self.event_key.clone(), json!({"name": name, "data": data}).to_string(), &[]).await;
        assert_eq!(status, 200, "send {name}: {body}");
        body["ids"][0].as_str().unwrap().to_string()
    }

    /// Ask sluice to sync an SDK URL (and keep re-syncing it while it is unreachable).
    pub async fn sync(&self, url: &str) -> Value {
        let r = self.req(reqwest::Method::POST, "/v1/apps/sync").json(&json!({ "url": url })).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "sync {url}: {body}\n{}", self.log());
        body["data"].clone()
    }

    pub async fn get_run(&self, run_id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/runs/{run_id}")).await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    pub async fn steps(&self, run_id: &str) -> Vec<Value> {
        let (_, body) = self.get(&format!("/v1/runs/{run_id}/steps")).await;
        body["data"].as_array().cloned().unwrap_or_default()
    }

    pub async fn runs_for_event(&self, event_id: &str) -> Vec<Value> {
        let (_, body) = self.get(&format!("/v1/events/{event_id}/runs")).await;
        body["data"].as_array().cloned().unwrap_or_default()
    }

    pub async fn runs_of(&self, function_id: &str) -> Vec<Value> {
        let (_, body) = self.get(&format!("/v1/runs?function_id={function_id}&limit=1000")).await;
        body["data"].as_array().cloned().unwrap_or_default()
    }

    /// The single run an event triggered.
    pub async fn run_of_event(&self, event_id: &str) -> String {
        let runs = eventually("a run for the event", DEADLINE, || async {
            let runs = self.runs_for_event(event_id).await;
            (!runs.is_empty()).then_some(runs)
        })
        .await;
        assert_eq!(runs.len(), 1, "expected one run: {runs:?}");
        runs[0]["run_id"].as_str().unwrap().to_string()
    }

    pub async fn wait_status(&self, run_id: &str, status: &str) -> Value {
        self.wait_status_for(run_id, status, DEADLINE).await
    }

    pub async fn wait_status_for(&self, run_id: &str, status: &str, deadline: Duration) -> Value {
        let start = Instant::now();
        loop {
            let run = self.get_run(run_id).await;
            if run["status"] == status {
                return run;
            }
            if start.elapsed() > deadline {
                panic!(
                    "run {run_id} never became {status} within {deadline:?}; last: {run}\n--- sluice log ---\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Send an event and wait for its one run to end with `status`; returns the run.
    pub async fn run_to(&self, name: &str, data: Value, status: &str) -> Value {
        let event_id = self.send(name, data).await;
        let run_id = self.run_of_event(&event_id).await;
        self.wait_status(&run_id, status).await
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.kill9();
        if let Some((schema, true)) = &self.schema {
            drop_schema(schema);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WorkerKind {
    TypeScript,
    Python,
}

pub struct Worker {
    child: Option<Child>,
    pub kind: WorkerKind,
    pub port: u16,
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Worker {
    /// A TypeScript worker (npm `inngest`) in dev mode pointed at `sluice`.
    pub async fn ts(sluice: &Sluice, env: &[(&str, &str)]) -> Worker {
        let mut all = vec![("INNGEST_DEV".to_string(), sluice.url())];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Worker::start(WorkerKind::TypeScript, all).await
    }

    /// A Python worker (PyPI `inngest`, Flask) in dev mode pointed at `sluice`.
    pub async fn py(sluice: &Sluice, env: &[(&str, &str)]) -> Worker {
        let mut all = vec![("INNGEST_DEV".to_string(), sluice.url())];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Worker::start(WorkerKind::Python, all).await
    }

    pub async fn start(kind: WorkerKind, env: Vec<(String, String)>) -> Worker {
        let mut w = Worker { child: None, kind, port: free_port(), dir: tempfile::tempdir().unwrap(), env };
        w.spawn();
        w.wait_ready().await;
        w
    }

    fn spawn(&mut self) {
        let root = repo_root();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("worker.log")).unwrap();
        let mut cmd = match self.kind {
            WorkerKind::TypeScript => {
                let dir = root.join("fixtures/ts-worker");
                assert!(
                    dir.join("node_modules/inngest").exists(),
                    "fixtures/ts-worker/node_modules is missing: run `npm ci --prefix fixtures/ts-worker` (.ci/run does)"
                );
                let mut c = Command::new("node");
                c.arg(dir.join("worker.mjs"));
                c
            }
            WorkerKind::Python => {
                let python = std::env::var("SLUICE_TEST_PYTHON")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| root.join("fixtures/py-worker/.venv/bin/python"));
                assert!(
                    python.exists(),
                    "{} is missing: run `bash fixtures/py-worker/setup.sh` (.ci/run does)",
                    python.display()
                );
                let mut c = Command::new(python);
                c.arg(root.join("fixtures/py-worker/worker.py"));
                c
            }
        };
        cmd.env("PORT", self.port.to_string())
            .env("SIDE_EFFECTS", self.effects_path())
            .env_remove("INNGEST_SIGNING_KEY")
            .env_remove("INNGEST_EVENT_KEY")
            .env_remove("INNGEST_BASE_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn worker"));
    }

    async fn wait_ready(&self) {
        let url = self.url();
        eventually("the worker to listen", DEADLINE, || {
            let url = url.clone();
            async move { http().get(&url).send().await.ok().map(|_| ()) }
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/inngest", self.port)
    }

    pub fn effects_path(&self) -> PathBuf {
        self.dir.path().join("effects.jsonl")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port (after a kill).
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready().await;
    }

    /// Every side effect the worker's step bodies recorded (one JSON object per line).
    pub fn effects(&self) -> Vec<Value> {
        std::fs::read_to_string(self.effects_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many times step `step` of function `fn_id` ran for run `run_id`.
    pub fn count(&self, run_id: &str, fn_id: &str, step: &str) -> usize {
        self.effects().iter().filter(|e| e["run"] == run_id && e["fn"] == fn_id && e["step"] == step).count()
    }

    pub async fn wait_effect(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(what, DEADLINE, || {
            let found = self.effects().into_iter().find(|e| pred(e));
            async move { found }
        })
        .await
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A sluice in dev mode with one TypeScript worker synced to it.
pub async fn dev_with_ts_worker() -> (Sluice, Worker) {
    let sluice = Sluice::dev().await;
    let worker = Worker::ts(&sluice, &[]).await;
    sluice.sync(&worker.url()).await;
    (sluice, worker)
}
