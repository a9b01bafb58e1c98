//! Application services over the Video aggregate.
//!
//! Owns the command side: the cqrs-es store adapter over any [`ports::EventLog`] (with an
//! aggregate cache so a command does not reload its history), command execution with
//! idempotent retries on conflicts, the catch-up [`Subscription`], the event codec with its
//! upcasting hook, and the process managers that move a video from upload to encoding and
//! recover lapsed or failed attempts. It defines the ports infra implements and knows nothing
//! of SQL, HTTP or AWS. [`layout`] makes every object key.

pub mod codec;
pub mod layout;
pub mod ports;
pub mod process;
mod service;
mod store;
mod subscription;

pub use service::{CommandContext, CommandError, CommandOutcome, VideoCommands};
pub use store::{VideoContext, VideoStore};
pub use subscription::Subscription;
