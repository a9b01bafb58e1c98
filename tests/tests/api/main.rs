//! The HTTP API against a real server on port 0, over real HTTP (reqwest).

mod admin;
mod beacons;
mod catalog;
mod commands;
mod conventions;
mod direct;
mod encoding;
mod harness;
mod ingest;
mod media;
mod security;
mod stream;
mod uploads;
mod webhooks;
