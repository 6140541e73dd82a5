//! The in-memory view of synced apps and their functions, with triggers compiled once per sync.
//! The store is the source of truth; this is rebuilt from it at start and updated on every sync.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_expr::{ExprCache, Expression, Vars};
use sluice_protocol::deployment::DeploymentStatus;
use sluice_protocol::event::trigger_name_matches;
use sluice_protocol::function::FunctionConfig;
use sluice_store::{AppRecord, DeploymentRecord, FunctionRecord, RunRecord};

use crate::error::EngineError;

#[derive(Debug)]
pub struct CompiledTrigger {
    pub event: String,
    pub expression: Option<Arc<Expression>>,
}

#[derive(Debug)]
pub struct RegisteredFunction {
    pub record: FunctionRecord,
    pub triggers: Vec<CompiledTrigger>,
}

impl RegisteredFunction {
    pub fn config(&self) -> &FunctionConfig {
        &self.record.config
    }
}

/// One deployment's function set, for calls of runs pinned to it.
#[derive(Debug)]
pub struct DeploymentView {
    pub record: DeploymentRecord,
    pub functions: HashMap<String, FunctionConfig>,
}

/// How runs in flight are routed when a new deployment becomes current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingPolicy {
    /// A run stays on the deployment it started on while that deployment is alive.
    Pinned,
    /// Every call goes to the current deployment.
    AutoUpgrade,
}

#[derive(Default)]
struct Inner {
    deployments: HashMap<String, Arc<DeploymentView>>,
    /// App id → its current deployment id.
    current: HashMap<String, String>,
    policies: HashMap<String, RoutingPolicy>,
    apps: HashMap<String, AppRecord>,
    functions: HashMap<String, Arc<RegisteredFunction>>,
    /// Exact event name → function ids.
    by_event: HashMap<String, Vec<String>>,
    /// Wildcard triggers (`prefix*`) → function ids.
    wildcards: Vec<(String, String)>,
}

#[derive(Default, Clone)]
pub struct Registry {
    inner: Arc<RwLock<Inner>>,
    exprs: ExprCache,
}

impl Registry {
    /// The shared compiled-expression cache (trigger, cancel, key expressions).
    pub fn exprs(&self) -> &ExprCache {
        &self.exprs
    }

    /// Compile a function's triggers. A hostile or broken expression rejects the whole sync.
    pub fn compile(&self, record: FunctionRecord) -> Result<RegisteredFunction, EngineError> {
        let mut triggers = Vec::new();
        for t in &record.config.triggers {
            let Some(event) = &t.event else { continue };
            let expression = match t.expression.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(src) => Some(
                    self.exprs
                        .get(src)
                        .map_err(|source| EngineError::Expression { function: record.id.clone(), source })?,
                ),
                None => None,
            };
            triggers.push(CompiledTrigger { event: event.clone(), expression });
        }
        Ok(RegisteredFunction { record, triggers })
    }

    /// Replace an app and its functions.
    pub fn install_app(&self, app: AppRecord, functions: Vec<RegisteredFunction>) {
        let mut inner = self.inner.write().unwrap();
        inner.functions.retain(|_, f| f.record.app_id != app.id);
        for f in functions {
            inner.functions.insert(f.record.id.clone(), Arc::new(f));
        }
        inner.apps.insert(app.id.clone(), app);
        reindex(&mut inner);
    }

    pub fn put_deployment(&self, record: DeploymentRecord) {
        let functions = record.functions.iter().map(|f| (f.id.clone(), f.clone())).collect();
        let mut inner = self.inner.write().unwrap();
        if record.status == DeploymentStatus::Current {
            inner.current.insert(record.app_id.clone(), record.id.clone());
        } else if inner.current.get(&record.app_id) == Some(&record.id) {
            inner.current.remove(&record.app_id);
        }
        inner.deployments.insert(record.id.clone(), Arc::new(DeploymentView { record, functions }));
    }

    pub fn deployment(&self, id: &str) -> Option<Arc<DeploymentView>> {
        self.inner.read().unwrap().deployments.get(id).cloned()
    }

    pub fn current_deployment(&self, app_id: &str) -> Option<String> {
        self.inner.read().unwrap().current.get(app_id).cloned()
    }

    pub fn set_policy(&self, app_id: &str, policy: RoutingPolicy) {
        self.inner.write().unwrap().policies.insert(app_id.to_string(), policy);
    }

    pub fn policy(&self, app_id: &str) -> RoutingPolicy {
        self.inner.read().unwrap().policies.get(app_id).copied().unwrap_or(RoutingPolicy::Pinned)
    }

    /// The function config a run's next call uses: its pinned deployment's while that deployment
    /// serves pinned runs (and the app's policy is `pinned`), else the current one.
    pub fn function_for_run(&self, run: &RunRecord) -> Option<FunctionConfig> {
        if self.policy(&run.app_id) == RoutingPolicy::Pinned {
            if let Some(dep) = run.state.deployment_id.as_deref().and_then(|d| self.deployment(d)) {
                if dep.record.status.serves_pinned_runs() {
                    if let Some(f) = dep.functions.get(&run.function_id) {
                        return Some(f.clone());
                    }
                }
            }
        }
        self.function(&run.function_id).map(|f| f.config().clone())
    }

    pub fn set_app(&self, app: AppRecord) {
        self.inner.write().unwrap().apps.insert(app.id.clone(), app);
    }

    pub fn app(&self, id: &str) -> Option<AppRecord> {
        self.inner.read().unwrap().apps.get(id).cloned()
    }

    pub fn apps(&self) -> Vec<AppRecord> {
        let mut apps: Vec<_> = self.inner.read().unwrap().apps.values().cloned().collect();
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        apps
    }

    pub fn function(&self, id: &str) -> Option<Arc<RegisteredFunction>> {
        self.inner.read().unwrap().functions.get(id).cloned()
    }

    pub fn functions(&self) -> Vec<Arc<RegisteredFunction>> {
        let mut fns: Vec<_> = self.inner.read().unwrap().functions.values().cloned().collect();
        fns.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        fns
    }

    /// Functions an event triggers: name match (exact or wildcard), then the trigger expression.
    /// `event_json` is the event as the SDK sees it (the `event` variable).
    pub fn matching(&self, event_name: &str, event_json: &Value) -> Vec<Arc<RegisteredFunction>> {
        let inner = self.inner.read().unwrap();
        let mut candidates: Vec<&String> =
            inner.by_event.get(event_name).map(|v| v.iter().collect()).unwrap_or_default();
        for (prefix, id) in &inner.wildcards {
            if event_name.starts_with(prefix.as_str()) {
                candidates.push(id);
            }
        }
        candidates.sort();
        candidates.dedup();
        let vars = Vars { event: Some(event_json), ..Default::default() };
        candidates
            .into_iter()
            .filter_map(|id| inner.functions.get(id))
            .filter(|f| {
                f.triggers.iter().any(|t| {
                    trigger_name_matches(&t.event, event_name) && t.expression.as_ref().is_none_or(|e| e.matches(&vars))
                })
            })
            .cloned()
            .collect()
    }
}

fn reindex(inner: &mut Inner) {
    let mut by_event: HashMap<String, Vec<String>> = HashMap::new();
    let mut wildcards = Vec::new();
    for f in inner.functions.values() {
        for t in &f.triggers {
            match t.event.strip_suffix('*') {
                Some(prefix) => wildcards.push((prefix.to_string(), f.record.id.clone())),
                None => by_event.entry(t.event.clone()).or_default().push(f.record.id.clone()),
            }
        }
    }
    inner.by_event = by_event;
    inner.wildcards = wildcards;
}

/// Hash of an app's function set: changes exactly when a re-sync changes configuration.
pub fn config_hash(functions: &[FunctionConfig]) -> String {
    let mut sorted: Vec<&FunctionConfig> = functions.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let json = serde_json::to_value(&sorted).unwrap_or(Value::Null);
    hex::encode(Sha256::digest(sluice_protocol::signing::canonical_json(&json)))
}
