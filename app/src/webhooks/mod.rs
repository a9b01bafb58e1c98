//! Webhooks: the platform's own backend hears of its videos from HTTP requests this service
//! sends, each a read of the global log.
//!
//! - [`contract`]: the public event contract — stable, versioned types (`video.created`,
//!   `video.ready`, …) derived from domain events by one mapping.
//! - [`registry`]: the endpoints, kept as one stream of the log.
//! - [`Webhooks`]: the endpoints' use cases (create, list, change, rotate, delete).
//! - [`dispatch`]: the dispatcher — each endpoint a consumer of the log under its own lease.
//! - [`deliveries`]: the delivery log — each event's attempts, last answer and next try.
//! - [`signature`]: how each request is signed (HMAC-SHA256 over timestamp and body, one
//!   signature per secret in force) and how a receiver checks it.

pub mod contract;
pub mod deliveries;
pub mod dispatch;
mod endpoints;
pub mod registry;
pub mod signature;

pub use contract::{public_event, PublicEvent, CONTRACT_VERSION, EVENT_TYPES, OPT_IN_TYPES, TEST_EVENT_TYPE};
pub use deliveries::{DeliveryRecord, DeliveryState};
pub use endpoints::{
    DeliveryPage, EndpointChanges, Listed, NewEndpoint, ReplayFrom, ReplayStarted, TestOutcome, Webhooks, WithSecret,
    DEFAULT_SECRET_OVERLAP, MAX_DELIVERY_PAGE, MAX_SECRET_OVERLAP, WEBHOOK_ID_PATTERN,
};
pub use registry::{operators_table, shown_url, Endpoint, EndpointState, Failing, RegistryStore};
pub use signature::{sign, verify, SignatureError, SIGNATURE_HEADER};
