//! Requests this service makes to URLs its users name (a source to ingest, a webhook
//! endpoint): where a server-side request forgery could start. [`AddressPolicy`] says which
//! addresses are outside the network (public unicast) and what an operator's allow-list
//! adds; the [`HttpFetcher`] checks every address it would connect to against it — IP literals before
//! the request, names after DNS resolution (the connection goes to exactly the addresses
//! checked), on every redirect hop, and never through a proxy. The [`HttpSender`] posts
//! webhooks with the same checks and follows no redirect.

mod fetcher;
mod policy;
mod sender;

pub use fetcher::{FetchSettings, HttpFetcher};
pub use policy::{AddressPolicy, Cidr};
pub use sender::{HttpSender, SendSettings};
