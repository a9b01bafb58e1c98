//! `vodsource token`: mints an HS256 bearer token with the configured secret, for local use,
//! scripts and tests.

use anyhow::Context;
use jsonwebtoken::{encode, EncodingKey, Header};

use crate::config::{Config, Secret};

/// `vodsource token` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The subject (the principal's name).
    #[arg(long)]
    pub sub: String,
    /// viewer, creator or admin.
    #[arg(long, value_parser = ["viewer", "creator", "admin"])]
    pub role: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: i64,
}

/// Prints the token, signed with the configured `jwt_secret` and carrying the configured
/// issuer and audience, which the server then requires.
///
/// # Errors
/// No secret, or one shorter than the server accepts.
pub fn run(config: &Config, args: &Args) -> anyhow::Result<()> {
    let o = config.options();
    let Some(secret) = o.jwt_secret.as_ref().map(Secret::expose) else {
        anyhow::bail!("no JWT secret to sign with: set VODSOURCE_JWT_SECRET (or jwt_secret in the configuration file)");
    };
    let min = crate::http::auth::MIN_SECRET_BYTES;
    anyhow::ensure!(
        secret.len() >= min,
        "the JWT secret is {} bytes; the server accepts {min} or more",
        secret.len()
    );
    anyhow::ensure!(args.ttl_secs > 0, "the lifetime must be at least 1 second");
    let now = chrono::Utc::now().timestamp();
    let mut claims = serde_json::json!({
        "sub": args.sub,
        "role": args.role,
        "iat": now,
        "exp": now + args.ttl_secs,
    });
    if let Some(issuer) = &o.jwt_issuer {
        claims["iss"] = issuer.clone().into();
    }
    if let Some(audience) = &o.jwt_audience {
        claims["aud"] = audience.clone().into();
    }
    let token = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("signing the token")?;
    println!("{token}");
    Ok(())
}
