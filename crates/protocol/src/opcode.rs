//! What an SDK answers with in a `206`: a list of generator opcodes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ProtocolError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opcode {
    None,
    Step,
    StepRun,
    StepError,
    StepPlanned,
    StepFailed,
    Sleep,
    WaitForEvent,
    InvokeFunction,
    AiGateway,
    Gateway,
    WaitForSignal,
    RunComplete,
    SyncRunComplete,
    DiscoveryRequest,
    DeferAdd,
    DeferAbort,
    Unknown(String),
}

impl Opcode {
    pub fn parse(s: &str) -> Opcode {
        match s {
            "None" => Opcode::None,
            "Step" => Opcode::Step,
            "StepRun" => Opcode::StepRun,
            "StepError" => Opcode::StepError,
            "StepPlanned" => Opcode::StepPlanned,
            "StepFailed" => Opcode::StepFailed,
            "Sleep" => Opcode::Sleep,
            "WaitForEvent" => Opcode::WaitForEvent,
            "InvokeFunction" => Opcode::InvokeFunction,
            "AIGateway" => Opcode::AiGateway,
            "Gateway" => Opcode::Gateway,
            "WaitForSignal" => Opcode::WaitForSignal,
            "RunComplete" => Opcode::RunComplete,
            "SyncRunComplete" => Opcode::SyncRunComplete,
            "DiscoveryRequest" => Opcode::DiscoveryRequest,
            "DeferAdd" => Opcode::DeferAdd,
            "DeferAbort" => Opcode::DeferAbort,
            other => Opcode::Unknown(other.to_string()),
        }
    }
}

/// One op in a 206 body. Fields are lenient: SDKs differ (`opts: null` in Python, `{}` in JS).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GeneratorOp {
    pub op: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
    #[serde(default)]
    pub opts: Option<Value>,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default)]
    pub userland: Option<Value>,
}

impl GeneratorOp {
    pub fn opcode(&self) -> Opcode {
        Opcode::parse(&self.op)
    }

    pub fn opt_str(&self, key: &str) -> Option<&str> {
        self.opts.as_ref()?.get(key)?.as_str()
    }

    /// The user-facing step name, for logs and the run view.
    pub fn label(&self) -> &str {
        self.display_name.as_deref().or(self.name.as_deref()).unwrap_or(&self.id)
    }

    /// `parallelMode: "race"` asks for rediscovery after each planned step.
    pub fn is_race(&self) -> bool {
        self.opt_str("parallelMode") == Some("race")
    }
}

/// Parse a 206 body: a JSON array of ops, a single op object, or `[]` / `null` for "nothing to do".
pub fn parse_ops(body: &[u8]) -> Result<Vec<GeneratorOp>, ProtocolError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::InvalidSdkResponse(format!("206 body is not JSON: {e}")))?;
    let items = match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        other => {
            return Err(ProtocolError::InvalidSdkResponse(format!("206 body must be an array of opcodes, got {other}")))
        }
    };
    items
        .into_iter()
        .map(|item| {
            serde_json::from_value::<GeneratorOp>(item)
                .map_err(|e| ProtocolError::InvalidSdkResponse(format!("opcode is malformed: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_observed_js_and_python_ops() {
        let js = br#"[{"id":"efec","op":"StepRun","name":"first-step","opts":{},"displayName":"first-step","userland":{"id":"first-step"},"data":"A","timing":{"a":1,"b":2}}]"#;
        let ops = parse_ops(js).unwrap();
        assert_eq!(ops[0].opcode(), Opcode::StepRun);
        assert_eq!(ops[0].data, Some(Value::String("A".into())));
        let py = br#"[{"op":"Sleep","id":"x","name":"2030-01-01T00:00:00+00:00","opts":null,"displayName":"nap"}]"#;
        let ops = parse_ops(py).unwrap();
        assert_eq!(ops[0].opcode(), Opcode::Sleep);
        assert!(parse_ops(b"[]").unwrap().is_empty());
        assert!(parse_ops(b"").unwrap().is_empty());
        assert_eq!(parse_ops(b"\"nope\"").unwrap_err().code(), "SLUICE-1201");
        assert_eq!(parse_ops(b"[{\"id\":1}]").unwrap_err().code(), "SLUICE-1201");
    }
}
