//! The evaluator: walks the AST the `cel` crate parses (macros already expanded) with Inngest's semantics,
//! and hands every function it does not implement itself to the `cel` crate's standard library.
//!
//! Why not `cel::Program::execute`: the `cel` crate hard-codes its operators (`==`, `<`, `+`, `? :`,
//! `&&`) and resolves a call's arguments before the call, so a missing field is an error that no overload
//! can catch. Inngest (cel-go with a custom decorator, `pkg/expressions/unknown.go`) instead:
//!
//! - treats a field that is not set as *unknown*, and an unknown or an error passed to any call as follows:
//!   `==` is true only against `null`, `!=` the reverse; `<`/`<=` are true when the left side is the unknown
//!   one, `>`/`>=` when the right side is; `+` yields its other operand; `size()` is 0; any other call is
//!   `false`;
//! - retries a call whose arguments have different types after it fails: with `null` as the zero value of
//!   the other type for `<`, `<=`, `>`, `>=` and `+`, and, for `+`, as text concatenation (`"a" + 1` is `"a1"`);
//! - compares numbers across int, uint and double (`1 == 1.0`, `event.data.n > 5` for `n` 7 or 5.0);
//! - evaluates a `? :` condition and non-boolean `&&`/`||` operands by JavaScript truthiness, `&&`/`||`
//!   yielding the deciding operand (`event.data.a || "default"`).
//!
//! A name that is neither a variable nor a type is an error the operators do not absorb (cel-go's
//! "no such attribute"), but a field of it is unknown, as Inngest declares every selected path.
//!
//! Every node evaluated and every value built is charged to a budget ([`crate::MAX_EVAL_COST`]); running
//! out aborts the evaluation, whatever operators it is inside.

use std::sync::{Arc, OnceLock};

use cel::common::ast::{operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, LiteralValue};
use cel::common::value::Val;
use cel::objects::Map;
use cel::{IdedExpr, Value};
use chrono::{DateTime, Utc};

use crate::functions;
use crate::values::{
    arithmetic, compare, display, equal, from_json, index_of, is_number, key_of, owned_key, promote, same_type, truthy,
    type_name, weight, zero_like,
};

/// Why an expression produced no value. Operators treat all three as Inngest treats unknowns and errors,
/// except that [`Soft::Undeclared`] is not absorbed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Soft {
    /// A field that is not set (Inngest: an unknown attribute, evaluated as absent).
    Unknown,
    /// An evaluation error: a type mismatch, a bad argument, an index out of range.
    Error(String),
    /// A name that is neither a variable nor a type.
    Undeclared(String),
}

pub(crate) type Out = Result<Value, Soft>;

/// The evaluation budget ran out.
#[derive(Debug)]
pub(crate) struct OutOfBudget;

type Step = Result<Out, OutOfBudget>;

/// A variable, bound from JSON on first use.
struct Var<'a> {
    name: &'static str,
    json: Option<&'a serde_json::Value>,
    value: Option<Value>,
}

pub(crate) struct Interp<'a> {
    vars: [Var<'a>; 3],
    /// Comprehension variables, innermost last.
    scopes: Vec<(String, Out)>,
    now_ms: Option<i64>,
    now: Option<DateTime<Utc>>,
    fuel: u64,
    cel: Option<cel::Context<'static, 'static>>,
}

fn stdlib() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

impl<'a> Interp<'a> {
    pub(crate) fn new(vars: &crate::Vars<'a>, budget: u64) -> Self {
        let var = |name, json| Var { name, json, value: None };
        Interp {
            vars: [var("event", vars.event), var("async", vars.async_event), var("vars", vars.vars)],
            scopes: Vec::new(),
            now_ms: vars.now_ms,
            now: None,
            fuel: budget,
            cel: None,
        }
    }

    fn charge(&mut self, units: u64) -> Result<(), OutOfBudget> {
        self.fuel = self.fuel.checked_sub(units).ok_or(OutOfBudget)?;
        Ok(())
    }

    fn charge_value(&mut self, v: &Value) -> Result<(), OutOfBudget> {
        let w = weight(v, self.fuel.saturating_add(1));
        self.charge(w)
    }

    fn now(&mut self) -> DateTime<Utc> {
        let now_ms = self.now_ms;
        *self.now.get_or_insert_with(|| now_ms.and_then(DateTime::from_timestamp_millis).unwrap_or_else(Utc::now))
    }

    pub(crate) fn eval(&mut self, e: &IdedExpr) -> Step {
        self.charge(1)?;
        Ok(match &e.expr {
            Expr::Literal(lit) => Ok(literal(lit)),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(s) => {
                let operand = self.eval(&s.operand)?;
                select(operand, &s.field, s.test)
            }
            Expr::Call(call) => return self.call(call),
            Expr::List(list) => {
                let mut items = Vec::with_capacity(list.elements.len());
                for element in &list.elements {
                    match self.eval(element)? {
                        Ok(v) => items.push(v),
                        Err(soft) => return Ok(Err(soft)),
                    }
                }
                Ok(Value::List(Arc::new(items)))
            }
            Expr::Map(map) => {
                let mut entries = std::collections::HashMap::with_capacity(map.entries.len());
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        return Ok(Err(Soft::Error("message literals are not supported".into())));
                    };
                    let key = match self.eval(&entry.key)? {
                        Ok(k) => k,
                        Err(soft) => return Ok(Err(soft)),
                    };
                    let Some(key) = owned_key(&key) else {
                        return Ok(Err(Soft::Error(format!("a {} cannot be a map key", type_name(&key)))));
                    };
                    match self.eval(&entry.value)? {
                        Ok(v) => entries.insert(key, v),
                        Err(soft) => return Ok(Err(soft)),
                    };
                }
                Ok(Value::Map(Map { map: Arc::new(entries) }))
            }
            Expr::Comprehension(c) => return self.comprehension(c),
            Expr::Struct(_) => Err(Soft::Error("message literals are not supported".into())),
            Expr::Unspecified => Err(Soft::Error("empty expression".into())),
        })
    }

    fn ident(&mut self, name: &str) -> Out {
        if let Some((_, v)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return v.clone();
        }
        if let Some(var) = self.vars.iter_mut().find(|v| v.name == name) {
            let json = var.json;
            let value = var.value.get_or_insert_with(|| match json {
                Some(json) => from_json(json),
                None => Value::Map(Map { map: Arc::new(Default::default()) }),
            });
            return Ok(value.clone());
        }
        // A type name (`int`, `string`, ...), as `type(x) == int` reads one.
        let ident = IdedExpr { id: 0, expr: Expr::Ident(name.to_string()) };
        Value::resolve(&ident, self.cel_context()).map_err(|_| Soft::Undeclared(name.to_string()))
    }

    fn cel_context(&mut self) -> &cel::Context<'static, 'static> {
        self.cel.get_or_insert_with(|| cel::Context::with_env(stdlib()))
    }

    fn call(&mut self, call: &CallExpr) -> Step {
        let name = call.func_name.as_str();
        if call.target.is_none() {
            match (name, call.args.as_slice()) {
                (operators::CONDITIONAL, [cond, then, otherwise]) => {
                    let cond = self.eval(cond)?;
                    return if matches!(&cond, Ok(v) if truthy(v)) { self.eval(then) } else { self.eval(otherwise) };
                }
                (operators::LOGICAL_AND, [left, right]) => {
                    // `a && b`: `b` when `a` is truthy, else `a` (for booleans, CEL's `&&`).
                    let left = self.eval(left)?;
                    return if matches!(&left, Ok(v) if truthy(v)) { self.eval(right) } else { Ok(left) };
                }
                (operators::LOGICAL_OR, [left, right]) => {
                    let left = self.eval(left)?;
                    return if matches!(&left, Ok(v) if truthy(v)) { Ok(left) } else { self.eval(right) };
                }
                (operators::NOT_STRICTLY_FALSE, [arg]) => {
                    let arg = self.eval(arg)?;
                    return Ok(Ok(Value::Bool(!matches!(arg, Ok(Value::Bool(false))))));
                }
                (operators::INDEX, [container, index]) => {
                    let container = self.eval(container)?;
                    let index = self.eval(index)?;
                    return Ok(index_into(container, index));
                }
                _ => {}
            }
        }
        let mut args = Vec::with_capacity(call.args.len() + 1);
        if let Some(target) = &call.target {
            args.push(self.eval(target)?);
        }
        for arg in &call.args {
            args.push(self.eval(arg)?);
        }
        self.apply(name, call.target.is_some(), args)
    }

    /// Applies a function to evaluated arguments (the target first, for a member call), with Inngest's
    /// handling of unknowns, errors and mixed types. Not inlined: it runs after the arguments are
    /// evaluated, so its large frame must stay off the recursion through `eval` and `call`.
    #[inline(never)]
    fn apply(&mut self, name: &str, member: bool, args: Vec<Out>) -> Step {
        if let Some(undeclared) = args.iter().find(|a| matches!(a, Err(Soft::Undeclared(_)))) {
            return Ok(undeclared.clone());
        }
        if args.iter().any(Result::is_err) {
            return Ok(absorb(name, &args));
        }
        let values: Vec<Value> = args.into_iter().map(|a| a.unwrap_or(Value::Null)).collect();
        let result = self.call_values(name, member, &values)?;
        let [a, b] = values.as_slice() else { return Ok(result) };
        if result.is_ok() || same_type(a, b) {
            return Ok(result);
        }
        // A mixed-type call that failed: Inngest's coercions.
        let a_null = matches!(a, Value::Null);
        if a_null != matches!(b, Value::Null) {
            match name {
                operators::EQUALS => return Ok(Ok(Value::Bool(false))),
                operators::NOT_EQUALS => return Ok(Ok(Value::Bool(true))),
                operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS
                | operators::ADD => {
                    let zeroed = if a_null {
                        zero_like(b).map(|z| [z, b.clone()])
                    } else {
                        zero_like(a).map(|z| [a.clone(), z])
                    };
                    if let Some(zeroed) = zeroed {
                        return self.call_values(name, member, &zeroed);
                    }
                }
                _ => {}
            }
        }
        if name == operators::ADD {
            let text = display(a) + &display(b);
            let v = Value::String(Arc::new(text));
            self.charge_value(&v)?;
            return Ok(Ok(v));
        }
        Ok(result)
    }

    /// Calls a function on values: the operators and functions implemented here, else the `cel` crate's.
    fn call_values(&mut self, name: &str, member: bool, args: &[Value]) -> Step {
        let binary = |args: &[Value]| match args {
            [a, b] => Some((a.clone(), b.clone())),
            _ => None,
        };
        match (name, binary(args)) {
            (operators::EQUALS | operators::NOT_EQUALS, Some((a, b))) => {
                let w = weight(&a, self.fuel).min(weight(&b, self.fuel));
                self.charge(w)?;
                return Ok(Ok(Value::Bool(equal(&a, &b) == (name == operators::EQUALS))));
            }
            (
                operators::LESS | operators::LESS_EQUALS | operators::GREATER | operators::GREATER_EQUALS,
                Some((a, b)),
            ) => {
                return Ok(match compare(&a, &b) {
                    Some(ord) => Ok(Value::Bool(match name {
                        operators::LESS => ord.is_lt(),
                        operators::LESS_EQUALS => ord.is_le(),
                        operators::GREATER => ord.is_gt(),
                        _ => ord.is_ge(),
                    })),
                    // NaN is unordered: every comparison with it is false.
                    None if is_number(&a) && is_number(&b) => Ok(Value::Bool(false)),
                    None => Err(no_overload(name, args)),
                });
            }
            (operators::IN, Some((needle, haystack))) => {
                return Ok(match &haystack {
                    Value::List(items) => {
                        self.charge(items.len() as u64)?;
                        Ok(Value::Bool(items.iter().any(|item| equal(&needle, item))))
                    }
                    Value::Map(m) => Ok(Value::Bool(key_of(&needle).is_some_and(|k| m.get(&k).is_some()))),
                    _ => Err(no_overload(name, args)),
                });
            }
            (
                operators::ADD | operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO,
                Some((a, b)),
            ) => {
                let (a, b) = match name {
                    operators::MODULO => (a, b),
                    _ => promote(&a, &b).unwrap_or((a, b)),
                };
                if let Some(result) = arithmetic(name, &a, &b) {
                    if let Ok(v) = &result {
                        self.charge_value(v)?;
                    }
                    return Ok(result.map_err(Soft::Error));
                }
            }
            _ => {}
        }
        match (name, args) {
            (operators::LOGICAL_NOT, [Value::Bool(b)]) => return Ok(Ok(Value::Bool(!b))),
            (operators::NEGATE, [Value::Int(i)]) => {
                return Ok(i
                    .checked_neg()
                    .map(Value::Int)
                    .ok_or_else(|| Soft::Error("integer overflow in '-_'".into())))
            }
            (operators::NEGATE, [Value::Float(f)]) => return Ok(Ok(Value::Float(-f))),
            _ => {}
        }
        if name == "size" && args.len() == 1 {
            return Ok(match &args[0] {
                Value::String(s) => Ok(Value::Int(s.chars().count() as i64)),
                Value::Bytes(b) => Ok(Value::Int(b.len() as i64)),
                Value::List(l) => Ok(Value::Int(l.len() as i64)),
                Value::Map(m) => Ok(Value::Int(m.map.len() as i64)),
                _ => Err(no_overload(name, args)),
            });
        }
        if !member && functions::NAMES.contains(&name) {
            let now = self.now();
            if let Some(s) = args.first() {
                self.charge_value(s)?;
            }
            let result = functions::call(name, args, now).map_err(Soft::Error);
            if let Ok(v) = &result {
                self.charge_value(v)?;
            }
            return Ok(result);
        }
        self.delegate(name, member, args)
    }

    /// Calls the `cel` crate's implementation of `name` on values, by binding them to hidden variables.
    fn delegate(&mut self, name: &str, member: bool, args: &[Value]) -> Step {
        for a in args {
            self.charge_value(a)?;
        }
        let result = {
            let ctx = self.cel_context();
            let mut scope = ctx.new_inner_scope();
            let mut idents = Vec::with_capacity(args.len());
            for (i, a) in args.iter().enumerate() {
                let val: Box<dyn Val> = match a.clone().try_into() {
                    Ok(val) => val,
                    Err(e) => return Ok(Err(Soft::Error(format!("{e}")))),
                };
                let var = format!("@arg{i}");
                scope.add_variable_as_val(var.clone(), val);
                idents.push(IdedExpr { id: 0, expr: Expr::Ident(var) });
            }
            let target = if member && !idents.is_empty() { Some(Box::new(idents.remove(0))) } else { None };
            let call =
                IdedExpr { id: 0, expr: Expr::Call(CallExpr { func_name: name.to_string(), target, args: idents }) };
            Value::resolve(&call, &scope)
        };
        match result {
            Ok(v) => {
                self.charge_value(&v)?;
                Ok(Ok(v))
            }
            Err(e) => Ok(Err(Soft::Error(e.to_string()))),
        }
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> Step {
        let range = match self.eval(&c.iter_range)? {
            Ok(v) => v,
            Err(soft) => return Ok(Err(soft)),
        };
        // Lists are walked in place (a comprehension may stop early, and nested ones must not copy the list
        // on every outer step); a map's entries are collected once, at one unit each.
        let entries: Vec<(Value, Value)> = match &range {
            Value::List(_) => Vec::new(),
            Value::Map(m) => {
                self.charge(m.map.len() as u64)?;
                m.map.iter().map(|(k, v)| (Value::from(k), v.clone())).collect()
            }
            other => return Ok(Err(Soft::Error(format!("cannot iterate over a {}", type_name(other))))),
        };
        let len = match &range {
            Value::List(list) => list.len(),
            _ => entries.len(),
        };
        // The variables of item `i`: (element, -) or (index, element) for a list, (key, -) or (key, value)
        // for a map.
        let two = c.iter_var2.is_some();
        let item = |i: usize| -> (Value, Option<Value>) {
            match &range {
                Value::List(list) if two => (Value::Int(i as i64), Some(list[i].clone())),
                Value::List(list) => (list[i].clone(), None),
                _ if two => (entries[i].0.clone(), Some(entries[i].1.clone())),
                _ => (entries[i].0.clone(), None),
            }
        };
        let base = self.scopes.len();

        if let Some((filter, element)) = append_shape(c) {
            // `map` and `filter`: build the list in place instead of copying it on every step. An element
            // that is unknown or an error is left out, as `@result + [unknown]` yields `@result`.
            let mut out = Vec::new();
            for i in 0..len {
                self.charge(1)?;
                self.bind(c, base, item(i));
                if let Some(filter) = filter {
                    if !matches!(self.eval(filter)?, Ok(v) if truthy(&v)) {
                        continue;
                    }
                }
                match self.eval(element)? {
                    Ok(v) => out.push(v),
                    Err(Soft::Undeclared(n)) => {
                        self.scopes.truncate(base);
                        return Ok(Err(Soft::Undeclared(n)));
                    }
                    Err(_) => {}
                }
            }
            self.scopes.truncate(base);
            return Ok(Ok(Value::List(Arc::new(out))));
        }

        let accu = self.eval(&c.accu_init)?;
        self.scopes.push((c.accu_var.clone(), accu));
        for i in 0..len {
            self.charge(1)?;
            self.scopes.truncate(base + 1);
            if matches!(self.eval(&c.loop_cond)?, Ok(Value::Bool(false))) {
                break;
            }
            self.bind(c, base + 1, item(i));
            let step = self.eval(&c.loop_step)?;
            self.scopes[base].1 = step;
        }
        self.scopes.truncate(base + 1);
        let result = self.eval(&c.result)?;
        self.scopes.truncate(base);
        Ok(result)
    }

    /// Binds a comprehension's iteration variables for one item, above scope `base`.
    fn bind(&mut self, c: &ComprehensionExpr, base: usize, (first, second): (Value, Option<Value>)) {
        self.scopes.truncate(base);
        self.scopes.push((c.iter_var.clone(), Ok(first)));
        if let (Some(name), Some(second)) = (&c.iter_var2, second) {
            self.scopes.push((name.clone(), Ok(second)));
        }
    }
}

/// `(filter, element)` when a comprehension is the expansion of `map` or `filter`: it starts from `[]`,
/// each step is `@result + [element]` (under `filter ? … : @result`), and it yields `@result`.
fn append_shape(c: &ComprehensionExpr) -> Option<(Option<&IdedExpr>, &IdedExpr)> {
    fn is_accu(e: &IdedExpr, accu: &str) -> bool {
        matches!(&e.expr, Expr::Ident(n) if n == accu)
    }
    fn append<'e>(e: &'e IdedExpr, accu: &str) -> Option<&'e IdedExpr> {
        let Expr::Call(call) = &e.expr else { return None };
        match (call.func_name.as_str(), call.target.as_ref(), call.args.as_slice()) {
            (operators::ADD, None, [head, list]) if is_accu(head, accu) => match &list.expr {
                Expr::List(l) if l.elements.len() == 1 && l.optional_indices.is_empty() => Some(&l.elements[0]),
                _ => None,
            },
            _ => None,
        }
    }
    let accu = c.accu_var.as_str();
    let starts_empty = matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty());
    let always = matches!(&c.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if *b.inner());
    if !starts_empty || !always || !is_accu(&c.result, accu) {
        return None;
    }
    if let Some(element) = append(&c.loop_step, accu) {
        return Some((None, element));
    }
    let Expr::Call(call) = &c.loop_step.expr else { return None };
    match (call.func_name.as_str(), call.target.as_ref(), call.args.as_slice()) {
        (operators::CONDITIONAL, None, [filter, step, otherwise]) if is_accu(otherwise, accu) => {
            append(step, accu).map(|element| (Some(filter), element))
        }
        _ => None,
    }
}

fn literal(lit: &LiteralValue) -> Value {
    match lit {
        LiteralValue::Boolean(b) => Value::Bool(*b.inner()),
        LiteralValue::Bytes(b) => Value::Bytes(Arc::new(b.inner().to_vec())),
        LiteralValue::Double(d) => Value::Float(*d.inner()),
        LiteralValue::Int(i) => Value::Int(*i.inner()),
        LiteralValue::Null => Value::Null,
        LiteralValue::String(s) => Value::String(Arc::new(s.inner().to_string())),
        LiteralValue::UInt(u) => Value::UInt(*u.inner()),
    }
}

/// `operand.field`, or `has(operand.field)` when `test`. Selecting what is not there is unknown.
fn select(operand: Out, field: &str, test: bool) -> Out {
    match operand {
        Ok(Value::Map(m)) => {
            let found = m.get(&cel::objects::KeyRef::String(field));
            if test {
                Ok(Value::Bool(found.is_some()))
            } else {
                found.cloned().ok_or(Soft::Unknown)
            }
        }
        Ok(_) | Err(Soft::Unknown) | Err(Soft::Undeclared(_)) => Err(Soft::Unknown),
        Err(e) => Err(e),
    }
}

/// `container[index]`: a list element, or a map entry (unknown when absent, like a field).
fn index_into(container: Out, index: Out) -> Out {
    let container = match container {
        Ok(v) => v,
        Err(Soft::Undeclared(_)) => return Err(Soft::Unknown),
        Err(soft) => return Err(soft),
    };
    let index = index?;
    match &container {
        Value::List(items) => match index_of(&index) {
            Some(i) => usize::try_from(i)
                .ok()
                .and_then(|i| items.get(i).cloned())
                .ok_or_else(|| Soft::Error(format!("index {i} out of range for a list of {}", items.len()))),
            None => Err(Soft::Error(format!("cannot index a list with a {}", type_name(&index)))),
        },
        Value::Map(m) => match key_of(&index) {
            Some(k) => m.get(&k).cloned().ok_or(Soft::Unknown),
            None => Err(Soft::Error(format!("cannot index a map with a {}", type_name(&index)))),
        },
        Value::Null => Err(Soft::Unknown),
        other => Err(Soft::Error(format!("cannot index a {}", type_name(other)))),
    }
}

/// Inngest's result for a call with an unknown or errored argument (`handleUnknownCall`).
fn absorb(name: &str, args: &[Out]) -> Out {
    let any_null = args.iter().any(|a| matches!(a, Ok(Value::Null)));
    let first_missing = args.first().is_some_and(Result::is_err);
    Ok(match name {
        operators::ADD => {
            return args.iter().find(|a| !matches!(a, Err(Soft::Unknown))).cloned().unwrap_or(Ok(Value::Bool(false)))
        }
        operators::EQUALS => Value::Bool(any_null),
        operators::NOT_EQUALS => Value::Bool(!any_null),
        operators::LESS | operators::LESS_EQUALS => Value::Bool(first_missing),
        operators::GREATER | operators::GREATER_EQUALS => Value::Bool(!first_missing),
        "size" => Value::Int(0),
        _ => Value::Bool(false),
    })
}

fn no_overload(name: &str, args: &[Value]) -> Soft {
    let types: Vec<&str> = args.iter().map(type_name).collect();
    Soft::Error(format!("found no matching overload for '{name}' applied to '({})'", types.join(", ")))
}

impl From<OutOfBudget> for crate::ExprError {
    fn from(_: OutOfBudget) -> Self {
        crate::ExprError::TooExpensive
    }
}
