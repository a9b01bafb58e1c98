//! The `vodsource` binary's library: configuration, the composition root that wires stores,
//! projections and process managers together, and the command-line interface.

pub mod cli;
pub mod config;
pub mod http;
pub mod roles;
pub mod runtime;
pub mod seed;
pub mod settings;
pub mod supervisor;
