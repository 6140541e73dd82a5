//! The JSON envelope every `--json` command prints (the reference workload's CLI convention):
//! `{"ok","command","result","error"?,"fix"?,"next_actions"}`.

use serde_json::{json, Value};

use crate::hints::hint;

pub fn success(command: &str, result: Value, next_actions: Vec<Value>) -> Value {
    json!({
        "ok": true,
        "command": format!("sluice {command}"),
        "result": result,
        "next_actions": next_actions,
    })
}

pub fn failure(command: &str, code: &str, message: &str) -> Value {
    json!({
        "ok": false,
        "command": format!("sluice {command}"),
        "result": null,
        "error": { "message": message, "code": code },
        "fix": hint(code),
        "next_actions": [],
    })
}

pub fn action(command: &str, description: &str) -> Value {
    json!({ "command": command, "description": description })
}

/// Print a CLI error: the envelope on stdout with `--json`, else `[CODE] message` and the hint on stderr.
pub fn report_error(command: &str, json_output: bool, code: &str, message: &str) -> i32 {
    if json_output {
        println!("{}", failure(command, code, message));
    } else {
        eprintln!("[{code}] {message}");
        eprintln!("  hint: {}", hint(code));
    }
    1
}
