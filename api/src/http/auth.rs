//! Who is calling: JWT bearer tokens (HS256 secret or a JWKS file) with the roles viewer,
//! creator and admin, and a token bucket per principal.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;
use serde::Deserialize;

use super::error::ApiError;

pub use vodsource_app::{Principal, Role};

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

enum Keys {
    /// No authentication (loopback only): every caller is the local admin.
    Off,
    Secret(DecodingKey),
    Jwks(JwkSet),
}

/// Checks tokens and rate limits.
pub struct Gate {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    max_lifetime: Option<std::time::Duration>,
    limiter: DefaultKeyedRateLimiter<String>,
    burst: u32,
    /// Tokens already verified, with their expiry: a client sends the same token with every
    /// request, and checking a signature costs more than the lookup.
    verified: Mutex<HashMap<String, (Principal, i64)>>,
}

/// Verified tokens remembered at most.
const VERIFIED_CAPACITY: usize = 10_000;

/// The shortest HS256 secret accepted: as many bytes as the hash's output (RFC 7518 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_SECS: i64 = 60;

/// How the gate is configured.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// HS256 shared secret (at least [`MIN_SECRET_BYTES`]).
    pub hs256_secret: Option<String>,
    /// A JWKS file with the public keys of RS/ES/PS/EdDSA-signed tokens.
    pub jwks_file: Option<std::path::PathBuf>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// When set, tokens must carry `iat` and live at most this long (`exp - iat`).
    pub max_lifetime: Option<std::time::Duration>,
    /// Sustained requests per second per principal.
    pub rate_per_second: u32,
    /// Burst size per principal.
    pub burst: u32,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "<redacted>"))
            .field("jwks_file", &self.jwks_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .field("rate_per_second", &self.rate_per_second)
            .field("burst", &self.burst)
            .finish()
    }
}

impl Gate {
    /// Builds the gate.
    ///
    /// # Errors
    /// An unreadable JWKS file, or both a secret and a JWKS file.
    pub fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        let keys = match (&settings.hs256_secret, &settings.jwks_file) {
            (Some(_), Some(_)) => anyhow::bail!("configure either a JWT secret or a JWKS file, not both"),
            (Some(secret), None) => {
                anyhow::ensure!(
                    secret.len() >= MIN_SECRET_BYTES,
                    "the JWT secret (VODSOURCE_JWT_SECRET) is {} bytes; HS256 needs at least {MIN_SECRET_BYTES} \
                     (for example `openssl rand -base64 48`)",
                    secret.len()
                );
                Keys::Secret(DecodingKey::from_secret(secret.as_bytes()))
            }
            (None, Some(path)) => Keys::Jwks(read_jwks(path)?),
            (None, None) => Keys::Off,
        };
        let rate = NonZeroU32::new(settings.rate_per_second).context("the rate limit must be at least 1/s")?;
        let burst = NonZeroU32::new(settings.burst).context("the burst must be at least 1")?;
        Ok(Self {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            max_lifetime: settings.max_lifetime,
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            burst: burst.get(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether tokens are checked at all.
    pub fn enabled(&self) -> bool {
        !matches!(self.keys, Keys::Off)
    }

    /// What a token must satisfy: a configured issuer or audience is *required* (the library
    /// checks them only when present), `nbf` is honoured, and the leeway is one minute.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS.unsigned_abs();
        validation
    }

    /// Refuses a token that lives longer than the configured maximum.
    fn check_lifetime(&self, claims: &Claims) -> Result<(), String> {
        let Some(max) = self.max_lifetime else {
            return Ok(());
        };
        let Some(iat) = claims.iat else {
            return Err("it has no iat (issued-at), which tokens with a maximum lifetime need".into());
        };
        if iat > chrono::Utc::now().timestamp() + LEEWAY_SECS {
            return Err("it was issued in the future (iat)".into());
        }
        let lifetime = claims.exp.saturating_sub(iat);
        let max_secs = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        if lifetime > max_secs {
            return Err(format!(
                "it lives {lifetime} s (exp - iat), more than the allowed {max_secs} s"
            ));
        }
        Ok(())
    }

    /// The principal a bearer token names.
    ///
    /// # Errors
    /// UNAUTHORIZED saying why the token is refused.
    pub fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        if matches!(self.keys, Keys::Off) {
            return self.verify(token);
        }
        let now = chrono::Utc::now().timestamp();
        {
            let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((principal, exp)) = verified.get(token) {
                if *exp > now {
                    return Ok(principal.clone());
                }
            }
        }
        self.verify(token)
    }

    fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let refuse = |why: String| ApiError::unauthorized(format!("the bearer token is refused: {why}"));
        let claims = match &self.keys {
            Keys::Off => {
                return Ok(Principal {
                    subject: "local".into(),
                    role: Role::Admin,
                })
            }
            Keys::Secret(key) => {
                jsonwebtoken::decode::<Claims>(token, key, &self.validation(Algorithm::HS256))
                    .map_err(|e| refuse(e.to_string()))?
                    .claims
            }
            Keys::Jwks(set) => {
                let header = jsonwebtoken::decode_header(token).map_err(|e| refuse(e.to_string()))?;
                if matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    return Err(refuse("HMAC tokens are not accepted with a JWKS".into()));
                }
                let jwk = match &header.kid {
                    Some(kid) => set.find(kid),
                    None if set.keys.len() == 1 => set.keys.first(),
                    None => None,
                }
                .ok_or_else(|| refuse("no key in the JWKS matches the token's kid".into()))?;
                let key = DecodingKey::from_jwk(jwk).map_err(|e| refuse(e.to_string()))?;
                jsonwebtoken::decode::<Claims>(token, &key, &self.validation(header.alg))
                    .map_err(|e| refuse(e.to_string()))?
                    .claims
            }
        };
        self.check_lifetime(&claims).map_err(refuse)?;
        let role = claims
            .role
            .iter()
            .chain(&claims.roles)
            .filter_map(|r| Role::from_name(r))
            .max()
            .ok_or_else(|| refuse("it carries no role (viewer, creator or admin)".into()))?;
        if claims.sub.is_empty() {
            return Err(refuse("its subject is empty".into()));
        }
        let principal = Principal {
            subject: claims.sub,
            role,
        };
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(token.to_owned(), (principal.clone(), claims.exp));
        Ok(principal)
    }

    /// The principal of a request's `Authorization: Bearer …` header (the local admin with
    /// authentication off), rate limited like any operation.
    ///
    /// # Errors
    /// UNAUTHORIZED without a valid token; RATE_LIMITED.
    pub fn principal_of(&self, headers: &poem::http::HeaderMap) -> Result<Principal, ApiError> {
        let token = headers
            .get(poem::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let principal = match (token, self.enabled()) {
            (Some(token), _) => self.authenticate(token)?,
            (None, false) => self.authenticate(LOCAL_TOKEN)?,
            (None, true) => return Err(ApiError::unauthorized("this needs a bearer token")),
        };
        self.admit(&principal)?;
        Ok(principal)
    }

    /// Whether a request carries an admin's valid token (quietly false otherwise).
    pub fn is_admin(&self, headers: &poem::http::HeaderMap) -> bool {
        self.principal_of(headers).is_ok_and(|p| p.role == Role::Admin)
    }

    /// Takes one request from the principal's bucket.
    ///
    /// # Errors
    /// RATE_LIMITED with Retry-After and the X-RateLimit headers.
    pub fn admit(&self, principal: &Principal) -> Result<(), ApiError> {
        match self.limiter.check_key(&principal.subject) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut error = ApiError::with(
                    429,
                    "RATE_LIMITED",
                    format!("too many requests; retry in {secs} s"),
                    serde_json::json!({ "retry_after_seconds": secs }),
                );
                if let ApiError::RateLimited(_, retry, limit, remaining, reset) = &mut error {
                    (*retry, *limit, *remaining, *reset) = (secs, self.burst, 0, secs);
                }
                Err(error)
            }
        }
    }
}

fn read_jwks(path: &Path) -> anyhow::Result<JwkSet> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the JWKS file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("the JWKS file {} is not a JWK set", path.display()))
}

/// A JWT bearer token; the operation runs as its principal.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Principal);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let gate = req
        .data::<Arc<Gate>>()
        .ok_or_else(|| ApiError::internal("no gate installed", &"the API was built without a gate").into_poem())?;
    let principal = gate.authenticate(&bearer.token).map_err(ApiError::into_poem)?;
    gate.admit(&principal).map_err(ApiError::into_poem)?;
    Ok(principal)
}

/// With authentication off there is no token to send: this names the local admin for the
/// security scheme (the gate ignores it).
pub const LOCAL_TOKEN: &str = "local";
