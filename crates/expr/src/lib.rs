//! The one expression evaluator in sluice: CEL over `event`, `async` and `vars`, as Inngest uses it
//! for trigger `expression`s, `cancelOn`/`waitForEvent` `if`s, and flow-control keys.
//!
//! Expressions are compiled once per distinct source and cached; hostile sources (too long, too
//! deeply nested) are rejected at compile time with a stable error code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use thiserror::Error;

/// Longest expression source accepted at sync.
pub const MAX_SOURCE_LEN: usize = 8 * 1024;
/// Deepest bracket nesting accepted at sync (bounds parser recursion and evaluation depth).
pub const MAX_NESTING: usize = 32;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ExprError {
    #[error("expression is {len} bytes, over the {MAX_SOURCE_LEN} byte limit")]
    TooLong { len: usize },
    #[error("expression nests {depth} levels deep, over the limit of {MAX_NESTING}")]
    TooDeep { depth: usize },
    #[error("expression does not parse: {0}")]
    Parse(String),
    #[error("expression failed to evaluate: {0}")]
    Eval(String),
}

impl ExprError {
    pub fn code(&self) -> &'static str {
        match self {
            ExprError::TooLong { .. } | ExprError::TooDeep { .. } => "SLUICE-1401",
            ExprError::Parse(_) => "SLUICE-1402",
            ExprError::Eval(_) => "SLUICE-1403",
        }
    }
}

/// A compiled expression.
pub struct Expression {
    source: String,
    program: cel::Program,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expression").field("source", &self.source).finish()
    }
}

/// The variables an expression may read.
#[derive(Default)]
pub struct Vars<'a> {
    pub event: Option<&'a Value>,
    pub async_event: Option<&'a Value>,
    pub vars: Option<&'a Value>,
}

impl Expression {
    pub fn compile(source: &str) -> Result<Expression, ExprError> {
        if source.len() > MAX_SOURCE_LEN {
            return Err(ExprError::TooLong { len: source.len() });
        }
        let depth = nesting_depth(source);
        if depth > MAX_NESTING {
            return Err(ExprError::TooDeep { depth });
        }
        let program = cel::Program::compile(source).map_err(|e| ExprError::Parse(e.to_string()))?;
        Ok(Expression { source: source.to_string(), program })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluate to a JSON value.
    pub fn eval(&self, vars: &Vars<'_>) -> Result<Value, ExprError> {
        let mut ctx = cel::Context::default();
        for (name, value) in [("event", vars.event), ("async", vars.async_event), ("vars", vars.vars)] {
            let v = value.cloned().unwrap_or(Value::Object(Default::default()));
            let v = cel::to_value(v).map_err(|e| ExprError::Eval(e.to_string()))?;
            ctx.add_variable_from_value(name, v);
        }
        let out = self.program.execute(&ctx).map_err(|e| ExprError::Eval(e.to_string()))?;
        out.json().map_err(|e| ExprError::Eval(e.to_string()))
    }

    /// Evaluate as a condition. A missing field or a type error is "no match", as in Inngest,
    /// where an expression that cannot be evaluated never matches.
    pub fn matches(&self, vars: &Vars<'_>) -> bool {
        matches!(self.eval(vars), Ok(Value::Bool(true)))
    }
}

fn nesting_depth(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut in_string: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                in_string = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => in_string = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Compiled expressions by source. Function configs are compiled when an app syncs and reused for
/// every event afterwards.
#[derive(Default, Clone)]
pub struct ExprCache {
    inner: Arc<Mutex<HashMap<String, Arc<Expression>>>>,
}

impl ExprCache {
    pub fn get(&self, source: &str) -> Result<Arc<Expression>, ExprError> {
        if let Some(e) = self.inner.lock().unwrap().get(source) {
            return Ok(e.clone());
        }
        let compiled = Arc::new(Expression::compile(source)?);
        self.inner.lock().unwrap().insert(source.to_string(), compiled.clone());
        Ok(compiled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_inngest_style_conditions() {
        let e = Expression::compile("event.data.function_id == 'app-fn'").unwrap();
        let ev = json!({"name":"inngest/function.failed","data":{"function_id":"app-fn"}});
        assert!(e.matches(&Vars { event: Some(&ev), ..Default::default() }));
        let other = json!({"data":{"function_id":"x"}});
        assert!(!e.matches(&Vars { event: Some(&other), ..Default::default() }));
        let missing = json!({"data":{}});
        assert!(!e.matches(&Vars { event: Some(&missing), ..Default::default() }));

        let cancel = Expression::compile("event.data.userId == async.data.userId").unwrap();
        let a = json!({"data":{"userId":"u1"}});
        assert!(cancel.matches(&Vars { event: Some(&a), async_event: Some(&a), vars: None }));
    }

    #[test]
    fn evaluates_keys_to_values() {
        let e = Expression::compile("event.data.a + '-' + event.data.b").unwrap();
        let ev = json!({"data":{"a":"x","b":"y"}});
        assert_eq!(e.eval(&Vars { event: Some(&ev), ..Default::default() }).unwrap(), json!("x-y"));
    }

    #[test]
    fn rejects_hostile_sources() {
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(Expression::compile(&deep).unwrap_err().code(), "SLUICE-1401");
        let long = "a".repeat(MAX_SOURCE_LEN + 1);
        assert_eq!(Expression::compile(&long).unwrap_err().code(), "SLUICE-1401");
        assert_eq!(Expression::compile("event.data ==").unwrap_err().code(), "SLUICE-1402");
        // Brackets inside strings do not count as nesting.
        assert!(Expression::compile("event.name == '(((((((((((((((((((((((((((((((((((('").is_ok());
    }

    #[test]
    fn cache_returns_the_same_program() {
        let cache = ExprCache::default();
        let a = cache.get("event.name == 'x'").unwrap();
        let b = cache.get("event.name == 'x'").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
