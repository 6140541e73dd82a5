//! Unit tests: Inngest's functions, relaxed comparisons, truthy conditionals, keys and priority,
//! evaluation bounds, and the forms the SDKs and the reference workload generate.

use super::*;
use serde_json::json;

/// 2024-01-02T03:04:05Z in unix milliseconds: the clock of every test that reads `now()`.
const NOW_MS: i64 = 1_704_164_645_000;

/// An event as the SDKs see it.
fn event(data: Value) -> Value {
    json!({"name": "app/test.event", "id": "01HZZZZZZZZZZZZZZZZZZZZZZZ", "data": data, "ts": NOW_MS - 60_000})
}

fn vars(event: &Value) -> Vars<'_> {
    Vars { event: Some(event), now_ms: Some(NOW_MS), ..Default::default() }
}

fn compile(source: &str) -> Expression {
    Expression::compile(source).unwrap_or_else(|e| panic!("{source}: {e}"))
}

/// Evaluates `source` against an event with `data`.
fn eval(source: &str, data: Value) -> Result<Value, ExprError> {
    compile(source).eval(&vars(&event(data)))
}

/// Whether `source` matches an event with `data`.
fn matches(source: &str, data: Value) -> bool {
    compile(source).matches(&vars(&event(data)))
}

fn key(source: &str, data: Value) -> Option<String> {
    compile(source).eval_key(&vars(&event(data)))
}

fn int(source: &str, data: Value) -> Option<i64> {
    compile(source).eval_int(&vars(&event(data)))
}

/// Asserts that every source evaluates to `true` against `data`.
fn assert_all_true(data: Value, sources: &[&str]) {
    for source in sources {
        assert_eq!(eval(source, data.clone()), Ok(json!(true)), "{source}");
    }
}

/// Asserts that every source evaluates to `false` against `data`.
fn assert_all_false(data: Value, sources: &[&str]) {
    for source in sources {
        assert_eq!(eval(source, data.clone()), Ok(json!(false)), "{source}");
    }
}

// ---- existing behaviour ----

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
    assert!(cancel.matches(&Vars { event: Some(&a), async_event: Some(&a), ..Default::default() }));
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

// ---- Inngest's functions ----

#[test]
fn lowercase_and_uppercase() {
    let data = json!({"name": "Ada Lovelace", "city": "ÉVORA"});
    assert_eq!(eval("lowercase(event.data.name)", data.clone()), Ok(json!("ada lovelace")));
    assert_eq!(eval("uppercase(event.data.name)", data.clone()), Ok(json!("ADA LOVELACE")));
    assert_eq!(eval("lowercase(event.data.city)", data.clone()), Ok(json!("évora")));
    assert!(matches("lowercase(event.data.name) == 'ada lovelace'", data.clone()));
    assert!(matches("uppercase('abc') == 'ABC'", data.clone()));
    // Not a string: an error, and no match.
    assert_eq!(eval("lowercase(1)", data.clone()).unwrap_err().code(), "SLUICE-1403");
    // A missing argument: Inngest yields false for the call, so comparing it to a string is false.
    assert_eq!(eval("lowercase(event.data.missing)", data.clone()), Ok(json!(false)));
    assert!(!matches("lowercase(event.data.missing) == 'x'", data));
}

#[test]
fn b64decode_decodes_standard_base64() {
    let data = json!({"body": "aGVsbG8gd29ybGQ="});
    assert_eq!(eval("b64decode(event.data.body)", data.clone()), Ok(json!("hello world")));
    assert_eq!(eval("b64decode('not base64!')", data), Ok(json!("")));
}

#[test]
fn json_parse_turns_a_string_into_a_value() {
    let data = json!({"payload": "{\"user\": {\"id\": 5, \"tags\": [\"a\", \"b\"]}, \"ok\": true}"});
    assert_eq!(
        eval("json_parse(event.data.payload)", data.clone()),
        Ok(json!({"user": {"id": 5, "tags": ["a", "b"]}, "ok": true}))
    );
    assert!(matches("json_parse(event.data.payload).user.id == 5", data.clone()));
    assert!(matches("json_parse(event.data.payload).user.id == 5.0", data.clone()));
    assert!(matches("'b' in json_parse(event.data.payload).user.tags", data.clone()));
    assert!(matches("json_parse(event.data.payload).ok", data.clone()));
    assert_eq!(eval("json_parse('[1, 2.5, null]')", data.clone()), Ok(json!([1, 2.5, null])));
    assert_eq!(eval("json_parse('\"text\"')", data.clone()), Ok(json!("text")));
    // Invalid JSON is an error; in a comparison it counts as unknown.
    assert_eq!(eval("json_parse('{nope')", data.clone()).unwrap_err().code(), "SLUICE-1403");
    assert!(!matches("json_parse('{nope').a == 1", data.clone()));
    // A field the parsed document lacks is unknown, not an error.
    assert!(matches("json_parse(event.data.payload).user.missing != 1", data));
}

#[test]
fn date_reads_strings_and_unix_numbers() {
    let data = json!({"at": "2024-01-02T03:04:05Z", "secs": 1_704_164_645, "ms": NOW_MS, "fsecs": 1_704_164_645.0});
    assert_eq!(eval("date(event.data.at)", data.clone()), Ok(json!("2024-01-02T03:04:05+00:00")));
    assert_all_true(
        data.clone(),
        &[
            "date(event.data.at) == date(event.data.secs)",
            "date(event.data.at) == date(event.data.ms)",
            "date(event.data.at) == date(event.data.fsecs)",
            "date('2024-01-02T05:04:05+02:00') == date(event.data.at)",
            "date('2024-01-02') < date(event.data.at)",
            "date(event.data.at) == timestamp('2024-01-02T03:04:05Z')",
            "date(event.data.at).getHours() == 3",
            "date(event.ts) < now()",
            "date(event.data.at) + duration('1h') > date(event.data.at)",
        ],
    );
    // Unrecognised strings, numbers before 2000 and other types are errors.
    for bad in ["date('yesterday')", "date(12345)", "date(true)"] {
        assert_eq!(eval(bad, data.clone()).unwrap_err().code(), "SLUICE-1403", "{bad}");
    }
}

#[test]
fn now_reads_the_injected_clock() {
    let data = json!({"expires": "2024-01-02T03:30:00Z", "seen": "2024-01-02T02:30:00Z"});
    assert_eq!(eval("now()", data.clone()), Ok(json!("2024-01-02T03:04:05+00:00")));
    assert_eq!(eval("now_plus('5m')", data.clone()), Ok(json!("2024-01-02T03:09:05+00:00")));
    assert_eq!(eval("now_minus('1h')", data.clone()), Ok(json!("2024-01-02T02:04:05+00:00")));
    assert_eq!(eval("now_plus('1d')", data.clone()), Ok(json!("2024-01-03T03:04:05+00:00")));
    assert_eq!(eval("now_minus('1h30m')", data.clone()), Ok(json!("2024-01-02T01:34:05+00:00")));
    assert_all_true(
        data.clone(),
        &[
            "date(event.data.expires) > now()",
            "date(event.data.expires) < now_plus('30m')",
            "date(event.data.seen) > now_minus('1h')",
            "now_plus('0') == now()",
            "now_minus('-5m') == now_plus('5m')",
        ],
    );
    assert_eq!(eval("now_plus('soon')", data.clone()).unwrap_err().code(), "SLUICE-1403");
    assert_eq!(eval("now_plus(5)", data.clone()).unwrap_err().code(), "SLUICE-1403");

    // Without an injected time, the system clock.
    let ev = event(data);
    let system = Vars { event: Some(&ev), ..Default::default() };
    assert!(compile("now() > date('2024-06-01T00:00:00Z')").matches(&system));
}

// ---- relaxed comparisons ----

#[test]
fn numbers_compare_across_int_uint_and_double() {
    assert_all_true(
        json!({}),
        &[
            "1 == 1.0",
            "1.0 == 1",
            "1u == 1",
            "1 == 1u",
            "1u == 1.0",
            "1 != 1.5",
            "2 > 1.5",
            "1.5 < 2",
            "1 <= 1.0",
            "1.0 >= 1",
            "3u >= 2",
            "-1 < 1u",
            "[1, 2] == [1.0, 2.0]",
            "{'a': 1} == {'a': 1.0}",
            "2.0 in [1, 2]",
            "1 + 1.5 == 2.5",
            "3 * 0.5 == 1.5",
            "7 / 2.0 == 3.5",
            "1u + 1 == 2",
        ],
    );
    assert_all_false(json!({}), &["1 == 2.0", "1 != 1.0", "2 < 1.5", "1.5 >= 2", "0.0 / 0.0 < 1"]);
}

#[test]
fn event_numbers_compare_whatever_their_json_form() {
    let expr = compile("event.data.count > 5");
    for (count, expected) in [
        (json!(7), true),
        (json!(5.0), false),
        (json!(5.5), true),
        (json!(5), false),
        (json!(-3), false),
        (json!(18_446_744_073_709_551_615u64), true),
    ] {
        let ev = event(json!({ "count": count }));
        assert_eq!(expr.matches(&vars(&ev)), expected, "count = {count}");
    }
    assert_all_true(
        json!({"count": 5.0, "n": 7, "big": 18_446_744_073_709_551_615u64}),
        &[
            "event.data.count == 5",
            "event.data.count >= 5",
            "event.data.count <= 5u",
            "event.data.n == 7.0",
            "event.data.n > event.data.count",
            "event.data.big > event.data.n",
            "event.data.count + event.data.n == 12",
            "event.data.count * 2 == 10",
        ],
    );
}

#[test]
fn missing_fields_compare_like_inngest_unknowns() {
    let data = json!({"present": "x"});
    assert_all_false(
        data.clone(),
        &[
            "event.data.missing == 'x'",
            "event.data.missing != null",
            "event.data.a.b.c == 1",
            "event.data.missing > 5",
            "event.data.missing >= 5",
            "5 < event.data.missing",
            "event.data.missing == event.data.other",
            "event.data.present.deeper == 'x'",
            "event.data['missing'] == 'x'",
            "async.data.userId == 'u1'",
        ],
    );
    assert_all_true(
        data.clone(),
        &[
            "event.data.missing != 'x'",
            "event.data.missing == null",
            "event.data.a.b.c != 1",
            // Inngest: an unknown is less than anything.
            "event.data.missing < 5",
            "event.data.missing <= 5",
            "5 > event.data.missing",
            "size(event.data.missing) == 0",
            "event.data.missing.size() == 0",
            "!has(event.data.missing)",
            "has(event.data.present)",
        ],
    );
    // Any other call on a missing field is false, so `!` of it is false too.
    assert_all_false(
        data.clone(),
        &[
            "event.data.missing.startsWith('x')",
            "'x' in event.data.missing",
            "!event.data.missing",
            "int(event.data.missing) == 0",
        ],
    );
    // On its own, a missing field is not a value: no match, an error from eval, no key.
    assert!(!matches("event.data.missing", data.clone()));
    assert_eq!(eval("event.data.missing", data.clone()).unwrap_err().code(), "SLUICE-1403");
    assert_eq!(key("event.data.missing", data), None);
}

#[test]
fn null_compares_like_inngest() {
    let data = json!({"n": null, "s": "x"});
    assert_all_true(
        data.clone(),
        &[
            "event.data.n == null",
            "null == event.data.n",
            "event.data.n != 'x'",
            "event.data.n != 0",
            "event.data.s != null",
            // Ordering against a number or string treats null as that type's zero.
            "event.data.n < 5",
            "event.data.n <= 0",
            "event.data.n >= 0.0",
            "event.data.n < 'a'",
            "event.data.n + 'x' == 'x'",
            "event.data.n + 5 == 5",
        ],
    );
    assert_all_false(
        data.clone(),
        &["event.data.n == 'x'", "event.data.n == 0", "event.data.n != null", "event.data.n > 5"],
    );
}

#[test]
fn other_mixed_types_are_unequal_not_errors() {
    let data = json!({"s": "5", "b": true, "list": [1], "obj": {"a": 1}});
    assert_all_false(
        data.clone(),
        &["event.data.s == 5", "event.data.b == 1", "event.data.list == 1", "event.data.obj == 'a'"],
    );
    assert_all_true(data.clone(), &["event.data.s != 5", "event.data.b != 'true'"]);
    // Ordering a string against a number has no meaning: an error, and no match.
    assert_eq!(eval("event.data.s > 3", data.clone()).unwrap_err().code(), "SLUICE-1403");
    assert!(!matches("event.data.s > 3", data.clone()));
    // `+` of mixed types concatenates as text, as in Inngest.
    assert_eq!(eval("'user-' + 42", data.clone()), Ok(json!("user-42")));
    assert_eq!(eval("1.5 + 'x'", data.clone()), Ok(json!("1.5x")));
    assert_eq!(eval("event.data.s + event.data.b", data), Ok(json!("5true")));
}

#[test]
fn undeclared_names_are_errors_but_their_fields_are_unknown() {
    let data = json!({});
    assert_eq!(eval("nope == 1", data.clone()).unwrap_err(), ExprError::Eval("undeclared reference to 'nope'".into()));
    assert!(!matches("nope != 1", data.clone()));
    assert!(matches("nope.field != 1", data.clone()));
    assert!(matches("type(1) == int && type('a') == string", data));
}

#[test]
fn vars_and_async_are_readable() {
    let ev = event(json!({"userId": "u1"}));
    let incoming = event(json!({"userId": "u1"}));
    let extra = json!({"threshold": 3});
    let all = Vars { event: Some(&ev), async_event: Some(&incoming), vars: Some(&extra), now_ms: Some(NOW_MS) };
    assert!(compile("event.data.userId == async.data.userId && vars.threshold == 3").matches(&all));
}

// ---- `? :`, `&&`, `||` ----

#[test]
fn ternary_conditions_use_truthiness() {
    let expr = "(event.data.nasPath ? event.data.nasPath : (event.data.filePath ? event.data.filePath : \"\")) + \"::\" + event.data.idempotencyKey";
    assert_eq!(
        key(expr, json!({"nasPath": "/nas/a", "filePath": "/f", "idempotencyKey": "k1"})),
        Some("/nas/a::k1".into())
    );
    assert_eq!(key(expr, json!({"filePath": "/f", "idempotencyKey": "k1"})), Some("/f::k1".into()));
    assert_eq!(key(expr, json!({"nasPath": "", "filePath": "/f", "idempotencyKey": "k1"})), Some("/f::k1".into()));
    assert_eq!(key(expr, json!({"nasPath": null, "idempotencyKey": "k1"})), Some("::k1".into()));
    assert_eq!(key(expr, json!({"idempotencyKey": 7})), Some("::7".into()));

    assert_eq!(eval("event.data.n ? 'yes' : 'no'", json!({"n": 0})), Ok(json!("no")));
    assert_eq!(eval("event.data.n ? 'yes' : 'no'", json!({"n": 2.5})), Ok(json!("yes")));
    assert_eq!(eval("event.data.l ? 'yes' : 'no'", json!({"l": []})), Ok(json!("yes")));
    assert_eq!(eval("1 / 0 == 1 ? 'yes' : 'no'", json!({})), Ok(json!("no")));
}

#[test]
fn logical_operators_short_circuit_and_coerce_like_inngest() {
    let data = json!({"isHuman": true, "name": "ada", "empty": "", "flag": false});
    assert!(matches("event.data.isHuman == true && event.data.name == 'ada'", data.clone()));
    assert!(matches("event.data.missing == 'x' || event.data.name == 'ada'", data.clone()));
    assert!(matches("event.data.missing || true", data.clone()));
    assert!(!matches("event.data.missing && true", data.clone()));
    assert!(matches("!event.data.flag", data.clone()));
    assert!(!matches("!(event.data.missing == 'x') && event.data.flag", data.clone()));
    // Errors on the side that does not decide are ignored, as in CEL.
    assert!(matches("event.data.isHuman || 1 / 0 == 1", data.clone()));
    assert!(!matches("event.data.flag && 1 / 0 == 1", data.clone()));
    // Non-boolean operands yield the deciding operand.
    assert_eq!(eval("event.data.empty || 'default'", data.clone()), Ok(json!("default")));
    assert_eq!(eval("event.data.name || 'default'", data.clone()), Ok(json!("ada")));
    assert_eq!(eval("event.data.missing || 'default'", data.clone()), Ok(json!("default")));
    assert_eq!(eval("event.data.name && 5", data), Ok(json!(5)));
}

// ---- keys and priority ----

#[test]
fn keys_stringify_scalars() {
    let data =
        json!({"s": "acct-1", "n": 42, "f": 2.5, "w": 7.0, "b": true, "z": null, "list": [1, "a"], "obj": {"k": 1}});
    assert_eq!(key("event.data.s", data.clone()), Some("acct-1".into()));
    assert_eq!(key("event.data.n", data.clone()), Some("42".into()));
    assert_eq!(key("event.data.f", data.clone()), Some("2.5".into()));
    assert_eq!(key("event.data.w", data.clone()), Some("7".into()));
    assert_eq!(key("event.data.b", data.clone()), Some("true".into()));
    assert_eq!(key("event.data.list", data.clone()), Some("[1,\"a\"]".into()));
    assert_eq!(key("event.data.obj", data.clone()), Some("{\"k\":1}".into()));
    assert_eq!(key("event.name", data.clone()), Some("app/test.event".into()));
    assert_eq!(key("date(event.ts)", data.clone()), Some("2024-01-02T03:03:05+00:00".into()));
    // null, missing and errors: no key.
    assert_eq!(key("event.data.z", data.clone()), None);
    assert_eq!(key("event.data.missing", data.clone()), None);
    assert_eq!(key("int('x')", data.clone()), None);
    assert_eq!(key("nope", data), None);
}

#[test]
fn sdk_and_workload_key_forms() {
    let data = json!({"a": "x", "b": "y", "project": "sluice", "from": {"phone_number": "+15550100"}, "runId": 991});
    // A static key sent as a quoted CEL string literal.
    assert_eq!(key("\"global\"", data.clone()), Some("global".into()));
    assert_eq!(key("\"media-transcription\"", data.clone()), Some("media-transcription".into()));
    assert_eq!(key("event.data.a + \"-\" + event.data.b", data.clone()), Some("x-y".into()));
    assert_eq!(key("event.data.a + '-' + event.data.runId", data.clone()), Some("x-991".into()));
    assert_eq!(key("event.data.project", data.clone()), Some("sluice".into()));
    assert_eq!(key("event.data.from.phone_number", data.clone()), Some("+15550100".into()));
    assert_eq!(key("event.data.runId", data.clone()), Some("991".into()));
    // Missing parts of a concatenation drop out, as in Inngest.
    assert_eq!(key("event.data.a + '-' + event.data.missing", data.clone()), Some("x-".into()));
    // A bare identifier is CEL: `x - post` over unknown names. Inngest's key for it is "false".
    assert_eq!(key("x-post", data.clone()), None);
    assert_eq!(key("docs-reindex-batch", data), None);
}

#[test]
fn priority_uses_ternaries_and_yields_ints() {
    let simple = "event.data.priority == \"high\" ? 100 : 0";
    assert_eq!(int(simple, json!({"priority": "high"})), Some(100));
    assert_eq!(int(simple, json!({"priority": "low"})), Some(0));
    assert_eq!(int(simple, json!({})), Some(0));

    let workload = "event.data.priority == 'query' ? 0 : event.data.priority == 'ingest-realtime' ? 10 : 100";
    assert_eq!(int(workload, json!({"priority": "query"})), Some(0));
    assert_eq!(int(workload, json!({"priority": "ingest-realtime"})), Some(10));
    assert_eq!(int(workload, json!({"priority": "batch"})), Some(100));
    assert_eq!(int(workload, json!({})), Some(100));

    assert_eq!(int("event.data.p", json!({"p": -30})), Some(-30));
    assert_eq!(int("event.data.p", json!({"p": 60.0})), Some(60));
    assert_eq!(int("event.data.p * 2", json!({"p": 30})), Some(60));
    assert_eq!(int("600u", json!({})), Some(600));
    for (source, data) in [
        ("event.data.p", json!({"p": 1.5})),
        ("event.data.p", json!({"p": "10"})),
        ("event.data.p", json!({"p": true})),
        ("event.data.p", json!({})),
        ("event.data.p", json!({"p": null})),
        ("18446744073709551615u", json!({})),
    ] {
        assert_eq!(int(source, data.clone()), None, "{source} over {data}");
    }
}

// ---- standard CEL through the library ----

#[test]
fn standard_functions_and_macros_work() {
    let data = json!({
        "email": "ada@example.com",
        "tags": ["vip", "beta"],
        "items": [{"price": 2.5, "qty": 2}, {"price": 1, "qty": 3}, {"qty": 1}],
        "counts": {"a": 1, "b": 2},
    });
    assert_all_true(
        data.clone(),
        &[
            "event.data.email.endsWith('@example.com')",
            "event.data.email.startsWith('ada')",
            "event.data.email.contains('@')",
            "size(event.data.tags) == 2 && event.data.tags.size() == 2",
            "size(event.data.email) == 15",
            "'vip' in event.data.tags",
            "'a' in event.data.counts",
            "event.data.tags.exists(t, t == 'beta')",
            "event.data.tags.all(t, size(t) >= 3)",
            "event.data.tags.exists_one(t, t.startsWith('v'))",
            "event.data.counts.all(k, event.data.counts[k] > 0)",
            "event.data.tags[0] == 'vip'",
            "string(event.data.counts.b) == '2'",
            "int('12') == 12",
            "double(event.data.counts.a) == 1.0",
            "-event.data.counts.b == -2",
            "event.data.counts.b % 2 == 0",
            "[1, 2, 3].filter(x, x > 1) == [2, 3]",
            "[1, 2].map(x, x * 2) == [2, 4]",
        ],
    );
    // Mixed int/double arithmetic inside map. For the item without a price, `unknown * 1` is false, as
    // any call but `==`, `!=`, ordering, `+` and `size` on an unknown is in Inngest.
    assert_eq!(eval("event.data.items.map(i, i.price * i.qty)", data.clone()), Ok(json!([5.0, 3, false])));
    assert_eq!(eval("event.data.items.map(i, i.missing)", data.clone()), Ok(json!([])));
    assert_eq!(eval("event.data.items.filter(i, has(i.price)).map(i, i.qty)", data.clone()), Ok(json!([2, 3])));
    assert_eq!(eval("event.data.tags[5]", data.clone()).unwrap_err().code(), "SLUICE-1403");
    assert_eq!(eval("event.data.tags[5] == 'x'", data), Ok(json!(false)));
}

// ---- bounds ----

#[test]
fn comprehensions_nested_three_deep_are_rejected() {
    let three = "event.data.a.all(x, event.data.b.exists(y, event.data.c.all(z, x == y && y == z)))";
    let err = Expression::compile(three).unwrap_err();
    assert!(matches!(err, ExprError::TooComplex(_)), "{err}");
    assert_eq!(err.code(), "SLUICE-1401");
    // Two deep, and comprehensions one after another, are fine.
    assert!(Expression::compile("event.data.a.all(x, event.data.b.exists(y, x == y))").is_ok());
    assert!(Expression::compile("event.data.a.map(x, x * 2).filter(x, x > 2).exists(x, x == 4)").is_ok());
    assert!(Expression::compile("[[1]].map(x, x.map(y, y)).exists(l, l.exists(v, v == 1))").is_ok());
}

#[test]
fn deep_trees_are_rejected() {
    let chain = vec!["event.data.a"; MAX_TREE_DEPTH + 1].join(" + ");
    let err = Expression::compile(&chain).unwrap_err();
    assert!(matches!(err, ExprError::TooComplex(_)), "{err}");
    assert_eq!(err.code(), "SLUICE-1401");
    let selects = format!("event{}", ".f".repeat(MAX_TREE_DEPTH));
    assert_eq!(Expression::compile(&selects).unwrap_err().code(), "SLUICE-1401");
    // Nested ternaries hit the parser's own recursion limit first.
    let ternaries = format!("{}0", "event.data.a == 1 ? 1 : ".repeat(MAX_TREE_DEPTH));
    assert!(Expression::compile(&ternaries).is_err());
    // Just under the limit evaluates, on a test thread's 2 MiB stack, in a debug build.
    // (n terms nest n - 1 additions over `event.data.a`, three levels.)
    let terms = MAX_TREE_DEPTH - 3;
    let allowed = vec!["event.data.a"; terms].join(" + ");
    assert_eq!(compile(&allowed).eval_key(&vars(&event(json!({"a": "x"})))), Some("x".repeat(terms)));
    let selects = format!("event{} == 1", ".f".repeat(MAX_TREE_DEPTH - 3));
    assert!(!compile(&selects).matches(&vars(&event(json!({})))));
    let ternaries = format!("{}0", "event.data.a == 1 ? 1 : ".repeat(80));
    assert_eq!(compile(&ternaries).eval_int(&vars(&event(json!({"a": 2})))), Some(0));
    // `&&` chains are balanced by the parser, so long ones are fine.
    let conjunction = vec!["event.data.a == 1"; 300].join(" && ");
    assert!(Expression::compile(&conjunction).unwrap().matches(&vars(&event(json!({"a": 1})))));
}

#[test]
fn expensive_evaluation_runs_out_of_budget() {
    // 3,000 x 3,000 nested iterations: allowed at compile time, stopped by the budget.
    let items: Vec<i64> = (0..3_000).collect();
    let ev = event(json!({ "items": items }));
    let quadratic = compile("event.data.items.all(x, event.data.items.exists(y, y == x + 1) || x == 2999)");
    assert_eq!(quadratic.eval(&vars(&ev)), Err(ExprError::TooExpensive));
    assert_eq!(ExprError::TooExpensive.code(), "SLUICE-1403");
    assert!(!quadratic.matches(&vars(&ev)));
    assert_eq!(quadratic.eval_key(&vars(&ev)), None);
    // The budget is not absorbed by the operators around the expensive part.
    let wrapped = compile("!(event.data.items.all(x, !event.data.items.exists(y, y == -1)) == true) || true");
    assert_eq!(wrapped.eval(&vars(&ev)), Err(ExprError::TooExpensive));

    // Inner loops that stop early stay cheap however long the list: the budget counts the steps taken.
    let long: Vec<i64> = (0..200_000).collect();
    let long = event(json!({ "items": long }));
    let early = compile("event.data.items.exists(x, event.data.items.exists(y, y == x))");
    assert!(early.matches(&vars(&long)));
    let outer_all = compile("event.data.items.all(x, event.data.items.exists(y, true))");
    assert_eq!(outer_all.eval(&vars(&long)), Err(ExprError::TooExpensive));

    // A single pass over the same list is well within it.
    let linear = compile("event.data.items.exists(x, x == 2999) && event.data.items.map(x, x * 2).size() == 3000");
    assert!(linear.matches(&vars(&ev)));
}

#[test]
fn building_huge_values_runs_out_of_budget() {
    let big = "x".repeat(64 * 1024);
    let ev = event(json!({ "s": big }));
    // Asserted with `matches!`: a failure must not print megabytes of text.
    let doubling = compile(&vec!["event.data.s"; 100].join(" + "));
    assert!(matches!(doubling.eval(&vars(&ev)), Err(ExprError::TooExpensive)));
    let twenty = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]";
    let mapped = compile(&format!("{twenty}.map(i, {twenty}.map(j, event.data.s + event.data.s))"));
    assert!(matches!(mapped.eval(&vars(&ev)), Err(ExprError::TooExpensive)));
    // A few concatenations of a large field are fine.
    assert!(compile("size(event.data.s + '-' + event.data.s) == 131073").matches(&vars(&ev)));
}

#[test]
fn arithmetic_follows_cel() {
    assert_all_true(
        json!({"n": 7, "s": "ab", "l": [1]}),
        &[
            "event.data.n + 1 == 8",
            "event.data.n - 10 == -3",
            "event.data.n * 3 == 21",
            "event.data.n / 2 == 3",
            "event.data.n % 4 == 3",
            "event.data.n / 2.0 == 3.5",
            "-event.data.n == -7",
            "event.data.s + 'c' == 'abc'",
            "event.data.l + [2] == [1, 2]",
            "5u - 2u == 3u",
            "1.0 / 0.0 > 1e308",
        ],
    );
    for source in ["event.data.n / 0", "event.data.n % 0", "9223372036854775807 + event.data.n", "0u - 1u", "5.5 % 2.0"]
    {
        assert_eq!(eval(source, json!({"n": 7})).unwrap_err().code(), "SLUICE-1403", "{source}");
    }
}
