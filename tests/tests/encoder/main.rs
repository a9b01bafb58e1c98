//! The encoder against real FFmpeg libraries (clips made with lavfi at test time, outputs read
//! back with ffprobe) and the worker against real SQLite stores and a local object store.

mod chunks;
mod helpers;
mod media;
mod worker;
