//! Webhook signatures, Stripe's and Mux's scheme: the header
//! `Vodsource-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` — one `v1` per
//! secret in force, so a receiver keeps working across a rotation. A receiver recomputes the
//! HMAC over the raw body, compares in constant time and refuses an old `t` (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Vodsource-Signature";

/// How old a signature a receiver should accept, by default.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header's value for `body` sent at `timestamp`, signed with each of `secrets`.
pub fn sign(secrets: &[&[u8]], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let digest = mac(secret, timestamp, body).finalize().into_bytes();
        header.push_str(",v1=");
        for byte in digest {
            header.push_str(&format!("{byte:02x}"));
        }
    }
    header
}

/// Why a signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=…,v1=…`.
    #[error("the signature header is malformed")]
    Malformed,
    /// No `v1` matches the body under the secret.
    #[error("no signature matches")]
    Mismatch,
    /// `t` is further than the tolerance from now.
    #[error("the signature's timestamp is {age} s from now, past the {tolerance} s tolerated")]
    Stale {
        /// Seconds between `t` and now.
        age: i64,
        /// Seconds tolerated.
        tolerance: i64,
    },
}

/// Checks `header` for `body` under `secret` at `now` (unix seconds).
///
/// # Errors
/// [`SignatureError`].
pub fn verify(header: &str, secret: &[u8], body: &[u8], now: i64, tolerance: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", hex)) => signatures.push(decode_hex(hex).ok_or(SignatureError::Malformed)?),
            Some(_) => {} // other schemes: not ours to judge
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    let age = (now - timestamp).abs();
    if age > tolerance {
        return Err(SignatureError::Stale { age, tolerance });
    }
    if signatures
        .iter()
        .any(|signature| mac(secret, timestamp, body).verify_slice(signature).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_vector_matches() {
        // printf '1700000000.{"id":"e1"}' | openssl dgst -sha256 -hmac whsec_test
        let header = sign(&[b"whsec_test"], 1_700_000_000, br#"{"id":"e1"}"#);
        assert_eq!(
            header,
            "t=1700000000,v1=6a85cb117c993612a34c72b4cfb5a16baed25a80d26e298ce0e6671320fd07c8"
        );
    }

    #[test]
    fn a_receiver_accepts_either_secret_of_a_rotation_and_refuses_tampering_and_replays() {
        let body = br#"{"id":"e1","type":"video.ready"}"#;
        let header = sign(&[b"old-secret", b"new-secret"], 1_000, body);
        assert_eq!(verify(&header, b"old-secret", body, 1_010, 300), Ok(()));
        assert_eq!(verify(&header, b"new-secret", body, 1_010, 300), Ok(()));
        assert_eq!(
            verify(&header, b"other", body, 1_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &header,
                b"new-secret",
                br#"{"id":"e2","type":"video.ready"}"#,
                1_010,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, b"new-secret", body, 1_400, 300),
            Err(SignatureError::Stale {
                age: 400,
                tolerance: 300
            })
        );
        for bad in ["", "v1=00", "t=x,v1=00", "t=1000,v1=0", "t=1000,v1=zz", "garbage"] {
            assert!(verify(bad, b"new-secret", body, 1_000, 300).is_err(), "{bad:?}");
        }
    }
}
