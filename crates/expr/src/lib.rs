//! The one expression evaluator in sluice: CEL over `event`, `async` and `vars`, as Inngest uses it
//! for trigger `expression`s, `cancelOn`/`waitForEvent` `if`s, flow-control keys and `priority.run`.
//!
//! The `cel` crate parses (and expands macros); [`interp`] evaluates with Inngest's semantics: its extra
//! functions ([`functions`]), relaxed mixed-type comparisons, missing fields treated as unknowns rather
//! than errors, and truthy `? :` / `&&` / `||`. See the module docs of each for the exact rules.
//!
//! Expressions are compiled once per distinct source and cached; hostile sources (too long, too deeply
//! nested, comprehensions nested too deep) are rejected at compile time with a stable error code, and
//! evaluation is bounded by a budget ([`MAX_EVAL_COST`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cel::common::ast::{EntryExpr, Expr};
use cel::IdedExpr;
use serde_json::Value;
use thiserror::Error;

mod functions;
mod interp;
mod values;

use interp::{Interp, Soft};

/// Longest expression source accepted at sync.
pub const MAX_SOURCE_LEN: usize = 8 * 1024;
/// Deepest bracket nesting accepted at sync (bounds parser recursion and evaluation depth).
pub const MAX_NESTING: usize = 32;
/// Deepest expression tree accepted at sync: a chain such as `a + b + c + …` nests without brackets,
/// and evaluation recurses once per level (at most about 1 KiB of stack a level in release builds,
/// 3.5 KiB in debug builds: well within a 2 MiB thread stack).
pub const MAX_TREE_DEPTH: usize = 200;
/// Most comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`) nested in one another's
/// bodies: two nested over a list of n items already run n² steps.
pub const MAX_COMPREHENSION_NESTING: usize = 2;
/// Evaluation budget: one unit per node evaluated and per comprehension step, plus about one per value
/// element or 16 bytes of text built or passed to a library function. An evaluation that runs out fails
/// with [`ExprError::TooExpensive`], whatever operators it is inside. A simple predicate over a list of
/// about 100,000 items (`xs.exists(x, x == v)`, about nine units an item) fits; in release builds the
/// whole budget is tens of milliseconds.
pub const MAX_EVAL_COST: u64 = 1_000_000;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ExprError {
    #[error("expression is {len} bytes, over the {MAX_SOURCE_LEN} byte limit")]
    TooLong { len: usize },
    #[error("expression nests {depth} levels deep, over the limit of {MAX_NESTING}")]
    TooDeep { depth: usize },
    #[error("expression is too complex: {0}")]
    TooComplex(String),
    #[error("expression does not parse: {0}")]
    Parse(String),
    #[error("expression failed to evaluate: {0}")]
    Eval(String),
    #[error("expression exceeded its evaluation budget of {MAX_EVAL_COST} steps")]
    TooExpensive,
}

impl ExprError {
    pub fn code(&self) -> &'static str {
        match self {
            ExprError::TooLong { .. } | ExprError::TooDeep { .. } | ExprError::TooComplex(_) => "SLUICE-1401",
            ExprError::Parse(_) => "SLUICE-1402",
            ExprError::Eval(_) | ExprError::TooExpensive => "SLUICE-1403",
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

/// The variables an expression may read, and its clock.
///
/// Build with `..Default::default()` so that fields added later keep callers compiling.
#[derive(Default)]
pub struct Vars<'a> {
    /// `event`: the triggering (or incoming) event, `{"name", "data", "id", "ts", ...}`. Unset is `{}`.
    pub event: Option<&'a Value>,
    /// `async`: the event being matched by a `cancelOn`/`waitForEvent` `if`. Unset is `{}`.
    pub async_event: Option<&'a Value>,
    /// `vars`. Unset is `{}`.
    pub vars: Option<&'a Value>,
    /// The time `now()`, `now_plus()` and `now_minus()` read, in unix milliseconds; `None` reads the
    /// system clock (once per evaluation).
    pub now_ms: Option<i64>,
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
        check_shape(program.expression())?;
        Ok(Expression { source: source.to_string(), program })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn run(&self, vars: &Vars<'_>) -> Result<Result<cel::Value, Soft>, ExprError> {
        let mut interp = Interp::new(vars, MAX_EVAL_COST);
        Ok(interp.eval(self.program.expression())?)
    }

    /// Evaluate to a JSON value (timestamps as RFC 3339 strings, durations as nanoseconds, bytes as
    /// base64). An expression that yields a field that is not set (and nothing else) is an `Eval` error.
    pub fn eval(&self, vars: &Vars<'_>) -> Result<Value, ExprError> {
        match self.run(vars)? {
            Ok(v) => v.json().map_err(|e| ExprError::Eval(e.to_string())),
            Err(Soft::Unknown) => Err(ExprError::Eval("the expression yields a field that is not set".into())),
            Err(Soft::Error(message)) => Err(ExprError::Eval(message)),
            Err(Soft::Undeclared(name)) => Err(ExprError::Eval(format!("undeclared reference to '{name}'"))),
        }
    }

    /// Evaluate as a condition: true only for a boolean `true`. A missing field or a type error is "no
    /// match", as in Inngest, where an expression that cannot be evaluated never matches.
    pub fn matches(&self, vars: &Vars<'_>) -> bool {
        matches!(self.run(vars), Ok(Ok(cel::Value::Bool(true))))
    }

    /// Evaluate a concurrency, throttle, rate-limit, debounce, singleton or idempotency key: a string as
    /// it is; an int, uint or bool in its usual text; a double like Go's `%v` for whole values (`7`, not
    /// `7.0`); a timestamp in RFC 3339; a list or map as JSON. `None` for `null`, a field that is not
    /// set, an error or an exhausted budget.
    ///
    /// Inngest itself turns a failed key into the text `false` (concurrency, throttle: the error is
    /// ignored and the evaluator's `false` used) or `<invalid>` (debounce); mapping `None` to a key is the
    /// caller's choice. Note that a bare identifier such as `x-post` is CEL (`x - post`) over undeclared
    /// names, so it fails (`None`), and in Inngest every such key is the same text `false`; quote static
    /// keys (`"\"x-post\""`).
    pub fn eval_key(&self, vars: &Vars<'_>) -> Option<String> {
        Some(match self.run(vars).ok()?.ok()? {
            cel::Value::String(s) => s.to_string(),
            cel::Value::Int(i) => i.to_string(),
            cel::Value::UInt(u) => u.to_string(),
            cel::Value::Float(f) if f.is_finite() => values::format_double(f),
            cel::Value::Bool(b) => b.to_string(),
            cel::Value::Timestamp(t) => t.to_rfc3339(),
            cel::Value::Null | cel::Value::Float(_) => return None,
            other => other.json().ok()?.to_string(),
        })
    }

    /// Evaluate to an integer, for `priority.run` (seconds; the caller applies the bounds). Ints, uints
    /// that fit and whole doubles (Inngest's JSON numbers are doubles) count; anything else is `None`.
    pub fn eval_int(&self, vars: &Vars<'_>) -> Option<i64> {
        match self.run(vars).ok()?.ok()? {
            cel::Value::Int(i) => Some(i),
            cel::Value::UInt(u) => i64::try_from(u).ok(),
            cel::Value::Float(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => Some(f as i64),
            _ => None,
        }
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

/// Rejects trees deeper than [`MAX_TREE_DEPTH`] and comprehensions nested deeper than
/// [`MAX_COMPREHENSION_NESTING`] (a comprehension in another's condition, step or result; one in another's
/// range, as in `xs.map(…).exists(…)`, runs after it, not inside it). Iterative: the tree may be deep.
fn check_shape(root: &IdedExpr) -> Result<(), ExprError> {
    let mut stack = vec![(root, 1usize, 0usize)];
    while let Some((e, depth, loops)) = stack.pop() {
        if depth > MAX_TREE_DEPTH {
            return Err(ExprError::TooComplex(format!("its tree is over {MAX_TREE_DEPTH} levels deep")));
        }
        let next = depth + 1;
        match &e.expr {
            Expr::Call(call) => {
                stack.extend(call.target.iter().map(|t| (t.as_ref(), next, loops)));
                stack.extend(call.args.iter().map(|a| (a, next, loops)));
            }
            Expr::Select(s) => stack.push((&s.operand, next, loops)),
            Expr::List(l) => stack.extend(l.elements.iter().map(|a| (a, next, loops))),
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(entry) = &entry.expr {
                        stack.push((&entry.key, next, loops));
                        stack.push((&entry.value, next, loops));
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(field) = &entry.expr {
                        stack.push((&field.value, next, loops));
                    }
                }
            }
            Expr::Comprehension(c) => {
                let inner = loops + 1;
                if inner > MAX_COMPREHENSION_NESTING {
                    return Err(ExprError::TooComplex(format!(
                        "it nests {inner} comprehensions (all, exists, exists_one, map, filter) in one another, \
                         over the limit of {MAX_COMPREHENSION_NESTING}"
                    )));
                }
                stack.push((&c.iter_range, next, loops));
                stack.push((&c.accu_init, next, loops));
                stack.push((&c.loop_cond, next, inner));
                stack.push((&c.loop_step, next, inner));
                stack.push((&c.result, next, inner));
            }
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    Ok(())
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
mod tests;
