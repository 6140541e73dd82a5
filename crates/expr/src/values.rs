//! Value helpers for the evaluator: binding JSON, Inngest's relaxed equality and ordering, truthiness,
//! the text a value concatenates as, and a size estimate used to charge the evaluation budget.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, KeyRef, Map};
use cel::Value;

/// Binds a JSON value as a CEL value. Integers that fit an `i64` become `int` (so `event.data.n > 5`
/// compares like for like), larger ones `uint`, and any other number `double`; a double that happens to
/// be whole (`5.0`) stays a double, which the relaxed operators compare and add like an int.
pub(crate) fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => Value::List(Arc::new(items.iter().map(from_json).collect())),
        serde_json::Value::Object(fields) => {
            let map: HashMap<Key, Value> =
                fields.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), from_json(v))).collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

/// The CEL type name of a value, for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Duration(_) => "google.protobuf.Duration",
        Value::Timestamp(_) => "google.protobuf.Timestamp",
        Value::Opaque(_) => "opaque",
        Value::Struct(_) => "struct",
        Value::Null => "null_type",
    }
}

/// Whether two values have the same CEL type (Inngest applies its coercions only to calls whose arguments
/// have different types).
pub(crate) fn same_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

#[derive(Clone, Copy)]
enum Num {
    I(i64),
    U(u64),
    F(f64),
}

fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Int(i) => Some(Num::I(*i)),
        Value::UInt(u) => Some(Num::U(*u)),
        Value::Float(f) => Some(Num::F(*f)),
        _ => None,
    }
}

pub(crate) fn is_number(v: &Value) -> bool {
    num(v).is_some()
}

fn cmp_num(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(a), Num::I(b)) => Some(a.cmp(&b)),
        (Num::U(a), Num::U(b)) => Some(a.cmp(&b)),
        (Num::I(a), Num::U(b)) => Some(i128::from(a).cmp(&i128::from(b))),
        (Num::U(a), Num::I(b)) => Some(i128::from(a).cmp(&i128::from(b))),
        (a, b) => as_f64(a).partial_cmp(&as_f64(b)),
    }
}

fn as_f64(n: Num) -> f64 {
    match n {
        Num::I(i) => i as f64,
        Num::U(u) => u as f64,
        Num::F(f) => f,
    }
}

/// Equality as cel-go's heterogeneous equality, which Inngest relies on: numbers compare by value whatever
/// their type (`1 == 1.0`, `1 == 1u`), lists and maps element-wise with the same rule, and values of
/// different types are unequal rather than an error.
pub(crate) fn equal(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return cmp_num(x, y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y.iter()).all(|(x, y)| equal(x, y)),
        (Value::Map(x), Value::Map(y)) => {
            x.map.len() == y.map.len() && x.map.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        (Value::Timestamp(x), Value::Timestamp(y)) => x == y,
        (Value::Duration(x), Value::Duration(y)) => x == y,
        _ => false,
    }
}

/// Ordering for `<`, `<=`, `>`, `>=`: numbers across int, uint and double by value; strings, bytes, bools,
/// timestamps and durations with their own kind. `None` when the pair is not ordered (including NaN).
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return cmp_num(x, y);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bytes(x), Value::Bytes(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Timestamp(x), Value::Timestamp(y)) => Some(x.cmp(y)),
        (Value::Duration(x), Value::Duration(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Converts a mixed pair of numbers to a common type for arithmetic: int and uint to int when both fit
/// (else uint), anything with a double to double. `None` when the pair is not two numbers of different
/// types. (cel-go rejects mixed arithmetic; Inngest then concatenates `+` as text. Sluice computes.)
pub(crate) fn promote(a: &Value, b: &Value) -> Option<(Value, Value)> {
    let (x, y) = (num(a)?, num(b)?);
    match (x, y) {
        (Num::I(_), Num::I(_)) | (Num::U(_), Num::U(_)) | (Num::F(_), Num::F(_)) => None,
        (Num::F(_), _) | (_, Num::F(_)) => Some((Value::Float(as_f64(x)), Value::Float(as_f64(y)))),
        (Num::I(i), Num::U(u)) => match i64::try_from(u) {
            Ok(u) => Some((Value::Int(i), Value::Int(u))),
            Err(_) => u64::try_from(i).ok().map(|i| (Value::UInt(i), Value::UInt(u))),
        },
        (Num::U(u), Num::I(i)) => match i64::try_from(u) {
            Ok(u) => Some((Value::Int(u), Value::Int(i))),
            Err(_) => u64::try_from(i).ok().map(|i| (Value::UInt(u), Value::UInt(i))),
        },
    }
}

/// The zero value of a value's type, which Inngest substitutes for `null` in a mixed-type ordering or `+`
/// (`null < 5` is `0 < 5`). `None` for types without one.
pub(crate) fn zero_like(v: &Value) -> Option<Value> {
    match v {
        Value::Int(_) => Some(Value::Int(0)),
        Value::UInt(_) => Some(Value::UInt(0)),
        Value::Float(_) => Some(Value::Float(0.0)),
        Value::String(_) => Some(Value::String(Arc::new(String::new()))),
        _ => None,
    }
}

/// JavaScript-like truthiness, as Inngest applies to `? :` conditions and to `&&`/`||` operands that are
/// not all booleans: `null`, `false`, `""` and zero are falsy; lists, maps and other values are truthy.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Int(i) => *i != 0,
        Value::UInt(u) => *u != 0,
        Value::Float(f) => *f != 0.0,
        _ => true,
    }
}

/// Formats a double: whole values below 2^53 print without a fraction (`7`, not `7.0`), like Go's `%v`.
pub(crate) fn format_double(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// The text a value contributes to a mixed-type `+` (Inngest formats both sides with Go's `%v`): strings
/// as they are, numbers and bools in their usual form, `null` as nothing, timestamps in RFC 3339, lists
/// and maps as JSON.
pub(crate) fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => format_double(*f),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Timestamp(t) => t.to_rfc3339(),
        Value::Duration(d) => format!("{}s", d.num_milliseconds() as f64 / 1000.0),
        other => other.json().map(|j| j.to_string()).unwrap_or_default(),
    }
}

/// A rough size of a value in budget units: one per scalar, plus one per 16 bytes of text, counted no
/// further than `cap` so that sizing a huge value costs no more than the budget it could use.
pub(crate) fn weight(v: &Value, cap: u64) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total += 1;
        match v {
            Value::String(s) => total += s.len() as u64 / 16,
            Value::Bytes(b) => total += b.len() as u64 / 16,
            Value::List(items) => stack.extend(items.iter()),
            Value::Map(m) => {
                total += m.map.len() as u64;
                stack.extend(m.map.values());
            }
            _ => {}
        }
        if total > cap {
            break;
        }
    }
    total
}

/// A key for looking a map up by a value: strings, bools, ints, uints and whole doubles.
pub(crate) fn key_of(v: &Value) -> Option<KeyRef<'_>> {
    match v {
        Value::String(s) => Some(KeyRef::String(s.as_str())),
        Value::Int(i) => Some(KeyRef::Int(*i)),
        Value::UInt(u) => Some(KeyRef::Uint(*u)),
        Value::Bool(b) => Some(KeyRef::Bool(*b)),
        Value::Float(f) if f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64 => {
            Some(KeyRef::Int(*f as i64))
        }
        _ => None,
    }
}

/// An owned map key for building a map literal.
pub(crate) fn owned_key(v: &Value) -> Option<Key> {
    Some(match key_of(v)? {
        KeyRef::String(s) => Key::String(Arc::new(s.to_string())),
        KeyRef::Int(i) => Key::Int(i),
        KeyRef::Uint(u) => Key::Uint(u),
        KeyRef::Bool(b) => Key::Bool(b),
    })
}

/// A list index: ints, uints and whole doubles.
pub(crate) fn index_of(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e18 => Some(*f as i128),
        _ => None,
    }
}

/// `+`, `-`, `*`, `/` and `%` on two numbers of the same type, two strings, two byte strings or two
/// lists, with CEL's rules: integer overflow and division by zero are errors, doubles follow IEEE 754.
/// `None` for any other pair (left to the `cel` crate: timestamps and durations).
pub(crate) fn arithmetic(op: &str, a: &Value, b: &Value) -> Option<Result<Value, String>> {
    use cel::common::ast::operators::{ADD, DIVIDE, MODULO, MULTIPLY, SUBSTRACT};
    let overflow = || format!("integer overflow in '{op}'");
    let by_zero = || if op == MODULO { "modulus by zero".to_string() } else { "division by zero".to_string() };
    Some(match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            let r = match op {
                ADD => x.checked_add(*y),
                SUBSTRACT => x.checked_sub(*y),
                MULTIPLY => x.checked_mul(*y),
                DIVIDE | MODULO if *y == 0 => return Some(Err(by_zero())),
                DIVIDE => x.checked_div(*y),
                MODULO => x.checked_rem(*y),
                _ => return None,
            };
            r.map(Value::Int).ok_or_else(overflow)
        }
        (Value::UInt(x), Value::UInt(y)) => {
            let r = match op {
                ADD => x.checked_add(*y),
                SUBSTRACT => x.checked_sub(*y),
                MULTIPLY => x.checked_mul(*y),
                DIVIDE | MODULO if *y == 0 => return Some(Err(by_zero())),
                DIVIDE => x.checked_div(*y),
                MODULO => x.checked_rem(*y),
                _ => return None,
            };
            r.map(Value::UInt).ok_or_else(overflow)
        }
        (Value::Float(x), Value::Float(y)) => Ok(Value::Float(match op {
            ADD => x + y,
            SUBSTRACT => x - y,
            MULTIPLY => x * y,
            DIVIDE => x / y,
            _ => return None,
        })),
        (Value::String(x), Value::String(y)) if op == ADD => Ok(Value::String(Arc::new(format!("{x}{y}")))),
        (Value::Bytes(x), Value::Bytes(y)) if op == ADD => Ok(Value::Bytes(Arc::new([x.as_slice(), y].concat()))),
        (Value::List(x), Value::List(y)) if op == ADD => {
            Ok(Value::List(Arc::new(x.iter().chain(y.iter()).cloned().collect())))
        }
        _ => return None,
    })
}
