//! Request signing in cloud mode: HMAC-SHA256 over the JCS-canonical body plus unix seconds,
//! header `X-Inngest-Signature: t=<secs>&s=<hex>`; and the hashed-key Bearer token SDKs send.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ProtocolError;

type HmacSha256 = Hmac<Sha256>;

/// JS rejects signatures more than five minutes off; sluice applies the same window to SDK answers.
pub const SIGNATURE_WINDOW_SECS: i64 = 300;

/// Serialise a JSON value in RFC 8785 canonical form. Outgoing bodies are sent as exactly these
/// bytes so the SDK (which re-canonicalises before checking) computes the same HMAC.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    serde_jcs::to_vec(value).unwrap_or_else(|_| serde_json::to_vec(value).unwrap_or_default())
}

/// `signkey-prod-abc…` → `abc…`: the HMAC key is the key without its `signkey-<env>-` prefix.
fn key_material(signing_key: &str) -> &str {
    if let Some(rest) = signing_key.strip_prefix("signkey-") {
        if let Some(idx) = rest.find('-') {
            let env = &rest[..idx];
            if !env.is_empty() && env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return &rest[idx + 1..];
            }
        }
    }
    signing_key
}

fn hmac_hex(signing_key: &str, body: &[u8], ts: i64) -> String {
    let mut mac =
        HmacSha256::new_from_slice(key_material(signing_key).as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.update(ts.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The `X-Inngest-Signature` header value for `body` at unix time `ts`.
pub fn sign(signing_key: &str, body: &[u8], ts: i64) -> String {
    format!("t={ts}&s={}", hmac_hex(signing_key, body, ts))
}

/// Check a signature header over `body`. The body is tried as sent and, when it is JSON, in JCS
/// form, because SDKs differ in which of the two they sign.
pub fn verify(signing_keys: &[String], header: &str, body: &[u8], now_secs: i64) -> Result<(), ProtocolError> {
    let mut ts = None;
    let mut sig = None;
    for part in header.split('&') {
        match part.split_once('=') {
            Some(("t", v)) => ts = v.parse::<i64>().ok(),
            Some(("s", v)) => sig = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(ts), Some(sig)) = (ts, sig) else {
        return Err(ProtocolError::InvalidSignature("header is not t=<secs>&s=<hex>".into()));
    };
    if (now_secs - ts).abs() > SIGNATURE_WINDOW_SECS {
        return Err(ProtocolError::InvalidSignature(format!(
            "timestamp {ts} is outside the {SIGNATURE_WINDOW_SECS}s window"
        )));
    }
    let canonical = serde_json::from_slice::<Value>(body).ok().map(|v| canonical_json(&v));
    for key in signing_keys {
        if constant_time_eq(hmac_hex(key, body, ts).as_bytes(), sig.as_bytes()) {
            return Ok(());
        }
        if let Some(c) = &canonical {
            if constant_time_eq(hmac_hex(key, c, ts).as_bytes(), sig.as_bytes()) {
                return Ok(());
            }
        }
    }
    Err(ProtocolError::InvalidSignature("signature does not match any signing key".into()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The Bearer token an SDK sends to the API: `signkey-<env>-` + hex(sha256(hex_decode(rest))).
pub fn hashed_signing_key(signing_key: &str) -> String {
    let material = key_material(signing_key);
    let prefix = &signing_key[..signing_key.len() - material.len()];
    let raw = hex::decode(material).unwrap_or_else(|_| material.as_bytes().to_vec());
    format!("{prefix}{}", hex::encode(Sha256::digest(&raw)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hashed_key_matches_the_observed_js_bearer() {
        let h = hashed_signing_key("signkey-test-12345678");
        assert!(h.starts_with("signkey-test-b2ed9921"), "{h}");
        assert!(h.ends_with("916c"), "{h}");
    }

    #[test]
    fn sign_then_verify_round_trips_and_rejects_tampering() {
        let keys = vec!["signkey-test-12345678".to_string()];
        let body = canonical_json(&json!({"b":1,"a":[1,2,{"z":0,"y":"é"}]}));
        assert_eq!(String::from_utf8(body.clone()).unwrap(), r#"{"a":[1,2,{"y":"é","z":0}],"b":1}"#);
        let header = sign(&keys[0], &body, 1_700_000_000);
        assert!(verify(&keys, &header, &body, 1_700_000_010).is_ok());
        assert!(verify(&keys, &header, b"{\"a\":2}", 1_700_000_010).is_err());
        assert!(verify(&keys, &header, &body, 1_700_000_000 + 601).is_err());
        let other = vec!["signkey-test-99".to_string()];
        assert!(verify(&other, &header, &body, 1_700_000_010).is_err());
    }
}
