//! ws-native: the ws API on a Rust engine. Layers, from the wire up:
//! `protocol` (sans-IO core) -> `engine` (tokio tasks, batches) -> `binding` (#[napi] glue).

#![deny(clippy::unwrap_used, clippy::expect_used)]
// Tests may unwrap: a panic there is a failed test, not a panic reaching Node.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod protocol;
pub mod engine;

/// Over-aligned small blocks (tokio's per-connection task cells and I/O registrations) from
/// slabs, everything else from the system's malloc: see `engine::alloc` (Unix; elsewhere
/// the system's allocator serves everything).
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: engine::alloc::Allocator = engine::alloc::Allocator;

// The #[napi] functions are called from JS only: unused in `cargo test`.
#[cfg_attr(test, allow(dead_code))]
mod binding;

#[cfg(test)]
mod layering_tests;
