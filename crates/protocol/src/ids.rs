//! Identifier helpers.

use sha1::{Digest, Sha1};

/// The step id the SDK uses for the user id of a step (`sha1_hex(userId)`).
/// The server never needs this for user steps; it is used in tests and to spot `RunComplete`.
pub fn hashed_step_id(user_id: &str) -> String {
    hex::encode(Sha1::digest(user_id.as_bytes()))
}

/// The pseudo step id that addresses "run until the next step" (discovery).
pub const DISCOVERY_STEP_ID: &str = "step";

pub fn new_ulid_at(millis: u64) -> ulid::Ulid {
    ulid::Ulid::from_parts(millis, rand_u128())
}

fn rand_u128() -> u128 {
    // ulid's own generator is fine; we only need the randomness part.
    ulid::Ulid::new().random()
}

/// Derive deterministic event ids from an `X-Inngest-Event-Id-Seed` header (`"<millis>,<base64 10 bytes>"`),
/// so that an SDK retrying a send gets the same ids back and nothing is ingested twice.
pub fn seeded_event_ids(seed: &str, count: usize) -> Option<Vec<ulid::Ulid>> {
    let (millis, entropy_b64) = seed.split_once(',')?;
    let millis: u64 = millis.trim().parse().ok()?;
    let entropy = base64_decode(entropy_b64.trim())?;
    if entropy.len() != 10 {
        return None;
    }
    let mut base: u128 = 0;
    for b in entropy {
        base = (base << 8) | b as u128;
    }
    let mask: u128 = (1u128 << 80) - 1;
    Some((0..count).map(|i| ulid::Ulid::from_parts(millis, base.wrapping_add(i as u128) & mask)).collect())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let s = s.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ids_match_observed_sdk_hashes() {
        assert_eq!(hashed_step_id("first-step"), "efec2b2037910199abcc3c58998255afa3066709");
        assert_eq!(hashed_step_id("first-step:1"), "6015258905142e5abe9c93663560ef0a25b94e16");
    }

    #[test]
    fn seeded_ids_are_deterministic_and_distinct() {
        let a = seeded_event_ids("1700000000000,AAECAwQFBgcICQ==", 3).unwrap();
        let b = seeded_event_ids("1700000000000,AAECAwQFBgcICQ==", 3).unwrap();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        assert_eq!(a[0].timestamp_ms(), 1700000000000);
        assert!(seeded_event_ids("garbage", 1).is_none());
    }
}
