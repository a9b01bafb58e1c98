//! Webhooks: the platform's own backend hears of its videos from HTTP requests this service
//! sends, each a read of the global log.
//!
//! - [`contract`]: the public event contract — stable, versioned types (`video.created`,
//!   `video.ready`, …) derived from domain events by one mapping.
//! - [`signature`]: how each request is signed (HMAC-SHA256 over timestamp and body, one
//!   signature per secret in force) and how a receiver checks it.

pub mod contract;
pub mod signature;

pub use contract::{public_event, PublicEvent, CONTRACT_VERSION, EVENT_TYPES, OPT_IN_TYPES};
pub use signature::{sign, verify, SignatureError, SIGNATURE_HEADER};
