//! `vodsource token`: mints an HS256 bearer token with the configured secret, for local use,
//! scripts and tests.

use anyhow::Context;
use jsonwebtoken::{encode, EncodingKey, Header};

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
    /// The HS256 secret the server checks tokens with.
    #[arg(long, env = "VODSOURCE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

/// Prints the token.
///
/// # Errors
/// A secret shorter than the server accepts.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let min = crate::http::auth::MIN_SECRET_BYTES;
    anyhow::ensure!(
        args.jwt_secret.len() >= min,
        "the JWT secret is {} bytes; the server accepts {min} or more",
        args.jwt_secret.len()
    );
    anyhow::ensure!(args.ttl_secs > 0, "the lifetime must be at least 1 second");
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "sub": args.sub,
        "role": args.role,
        "iat": now,
        "exp": now + args.ttl_secs,
    });
    let token = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(args.jwt_secret.as_bytes()),
    )
    .context("signing the token")?;
    println!("{token}");
    Ok(())
}
