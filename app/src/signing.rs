//! Signed, expiring URLs served by this process in embedded mode: uploads (`PUT
//! /uploads/{token}`) and media (`/media/{token}/{video_id}/...`). A token is
//! `base64url(claims).base64url(HMAC-SHA256(key, claims))`, where the key is derived from the
//! secret per kind of token (`HMAC-SHA256(secret, "vodsource token/<kind>")`): an upload
//! token is not a media token, however alike their claims look.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What an upload token allows: one PUT of at most `size` bytes to `key` until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadClaims {
    /// Video id.
    pub v: String,
    /// Object key.
    pub k: String,
    /// Declared size.
    pub s: u64,
    /// Expiry, Unix seconds.
    pub e: i64,
}

/// What a direct-upload grant allows: one multipart upload of the video's source of `s`
/// bytes straight to the object store, its parts' URLs signed by this service, until `e`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectClaims {
    /// Video id.
    pub v: String,
    /// Declared size.
    pub s: u64,
    /// Expiry, Unix seconds.
    pub e: i64,
}

/// What a media token allows: GETs under one video's media until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaClaims {
    /// Video id.
    pub v: String,
    /// Expiry, Unix seconds.
    pub e: i64,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this server made.
    #[error("the signature is not valid")]
    Invalid,
    /// Past its expiry.
    #[error("the link expired at {0}")]
    Expired(DateTime<Utc>),
}

/// The kinds of token; each signs with a key of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `PUT /uploads/{token}`.
    Upload,
    /// `GET /media/{token}/...`.
    Media,
    /// `/v1/direct/{grant}/s3/multipart...`.
    Direct,
}

impl TokenKind {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Upload => b"vodsource token/upload",
            Self::Media => b"vodsource token/media",
            Self::Direct => b"vodsource token/direct",
        }
    }
}

/// Makes and checks tokens with one secret.
#[derive(Clone)]
pub struct Signer {
    upload: Vec<u8>,
    media: Vec<u8>,
    direct: Vec<u8>,
    webhook: Vec<u8>,
}

/// What webhook secrets are derived with.
const WEBHOOK_SECRET_LABEL: &[u8] = b"vodsource webhook secret";

fn hmac(key: &[u8], payload: &[u8]) -> HmacSha256 {
    #[allow(clippy::expect_used)]
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(payload);
    mac
}

impl Signer {
    /// A signer with `secret` (at least 32 bytes of randomness).
    pub fn new(secret: Vec<u8>) -> Self {
        let derive = |kind: TokenKind| hmac(&secret, kind.label()).finalize().into_bytes().to_vec();
        Self {
            upload: derive(TokenKind::Upload),
            media: derive(TokenKind::Media),
            direct: derive(TokenKind::Direct),
            webhook: hmac(&secret, WEBHOOK_SECRET_LABEL).finalize().into_bytes().to_vec(),
        }
    }

    /// Webhook endpoint `endpoint_id`'s secret of `version`: `whsec_` and 32 bytes derived
    /// from this signer's secret, so no store holds it and every process that has the
    /// signing secret (the API, the dispatchers) computes the same.
    pub fn webhook_secret(&self, endpoint_id: &str, version: u32) -> String {
        let derived = hmac(&self.webhook, format!("{endpoint_id}/{version}").as_bytes())
            .finalize()
            .into_bytes();
        format!("whsec_{}", URL_SAFE_NO_PAD.encode(derived))
    }

    /// Names the secret webhook secrets derive from without giving it away (`key_` and 8
    /// bytes of an HMAC): recorded with each endpoint, so a process whose signing secret is
    /// another can tell before it signs anything wrongly.
    pub fn webhook_key_id(&self) -> String {
        let id = hmac(&self.webhook, b"key id").finalize().into_bytes();
        format!("key_{}", id[..8].iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    fn mac(&self, kind: TokenKind, payload: &[u8]) -> HmacSha256 {
        hmac(
            match kind {
                TokenKind::Upload => &self.upload,
                TokenKind::Media => &self.media,
                TokenKind::Direct => &self.direct,
            },
            payload,
        )
    }

    /// A token for `claims`.
    pub fn sign<T: Serialize + Expiring>(&self, claims: &T) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signature = URL_SAFE_NO_PAD.encode(self.mac(T::KIND, payload.as_bytes()).finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The claims of a token of `T`'s kind this signer made, if it has not expired by `now`.
    ///
    /// # Errors
    /// `Invalid` (another kind's token included) or `Expired`.
    pub fn verify<T: DeserializeOwned + Expiring>(&self, token: &str, now: DateTime<Utc>) -> Result<T, TokenError> {
        let (payload, signature) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Invalid)?;
        self.mac(T::KIND, payload.as_bytes())
            .verify_slice(&signature)
            .map_err(|_| TokenError::Invalid)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Invalid)?;
        let claims: T = serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)?;
        let expiry = DateTime::from_timestamp(claims.expiry(), 0).ok_or(TokenError::Invalid)?;
        if expiry < now {
            return Err(TokenError::Expired(expiry));
        }
        Ok(claims)
    }
}

/// Claims of a kind of token, which expire.
pub trait Expiring {
    /// The kind of token these claims are signed as.
    const KIND: TokenKind;

    /// Expiry, Unix seconds.
    fn expiry(&self) -> i64;
}

impl Expiring for UploadClaims {
    const KIND: TokenKind = TokenKind::Upload;

    fn expiry(&self) -> i64 {
        self.e
    }
}

impl Expiring for DirectClaims {
    const KIND: TokenKind = TokenKind::Direct;

    fn expiry(&self) -> i64 {
        self.e
    }
}

impl Expiring for MediaClaims {
    const KIND: TokenKind = TokenKind::Media;

    fn expiry(&self) -> i64 {
        self.e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn a_token_round_trips_until_it_expires() {
        let signer = Signer::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let claims = MediaClaims {
            v: "v1".into(),
            e: now().timestamp() + 60,
        };
        let token = signer.sign(&claims);
        assert_eq!(signer.verify::<MediaClaims>(&token, now()), Ok(claims.clone()));
        let later = now() + chrono::Duration::seconds(61);
        assert!(matches!(
            signer.verify::<MediaClaims>(&token, later),
            Err(TokenError::Expired(_))
        ));
    }

    #[test]
    fn a_changed_claim_or_another_secret_is_refused() {
        let signer = Signer::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let token = signer.sign(&MediaClaims {
            v: "v1".into(),
            e: now().timestamp() + 60,
        });
        let (_, signature) = token.split_once('.').unwrap_or_default();
        let forged_claims = URL_SAFE_NO_PAD.encode(br#"{"v":"v2","e":1800000000}"#);
        let forged = format!("{forged_claims}.{signature}");
        assert_eq!(signer.verify::<MediaClaims>(&forged, now()), Err(TokenError::Invalid));
        let other = Signer::new(b"another secret of thirty-two bytes".to_vec());
        assert_eq!(other.verify::<MediaClaims>(&token, now()), Err(TokenError::Invalid));
        assert_eq!(signer.verify::<MediaClaims>("garbage", now()), Err(TokenError::Invalid));
    }

    #[test]
    fn an_upload_token_is_not_a_media_token() {
        let signer = Signer::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let upload = signer.sign(&UploadClaims {
            v: "v1".into(),
            k: "sources/v1/a.mp4".into(),
            s: 10,
            e: now().timestamp() + 60,
        });
        // Its claims read as media claims (serde ignores the extra fields); the key does not.
        assert_eq!(signer.verify::<MediaClaims>(&upload, now()), Err(TokenError::Invalid));
        let media = signer.sign(&MediaClaims {
            v: "v1".into(),
            e: now().timestamp() + 60,
        });
        assert_eq!(signer.verify::<UploadClaims>(&media, now()), Err(TokenError::Invalid));
        assert!(signer.verify::<UploadClaims>(&upload, now()).is_ok());
    }

    #[test]
    fn a_media_token_is_no_direct_upload_grant() {
        let signer = Signer::new(b"0123456789abcdef0123456789abcdef".to_vec());
        // The same claims' shape (v, e and a size the media claims lack is defaulted nowhere):
        // only the kind's key tells them apart.
        let media = signer.sign(&MediaClaims {
            v: "v1".into(),
            e: now().timestamp() + 60,
        });
        assert_eq!(signer.verify::<DirectClaims>(&media, now()), Err(TokenError::Invalid));
        let direct = signer.sign(&DirectClaims {
            v: "v1".into(),
            s: 10,
            e: now().timestamp() + 60,
        });
        assert_eq!(signer.verify::<MediaClaims>(&direct, now()), Err(TokenError::Invalid));
        assert!(signer.verify::<DirectClaims>(&direct, now()).is_ok());
    }
}
