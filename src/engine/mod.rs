//! The engine: the tokio runtime, one task per connection, the server accept loop, the client
//! connect, and the batches that carry events to JS and commands from it.
//!
//! Files depend on each other in one direction only (checked by `layering_tests.rs`):
//! `wire`, `net` and `state` are at the bottom; `events` carries `wire`'s records; `registry` maps ids to
//! `state`; `connection` runs a connection on a transport; `park` holds idle connections;
//! `commands` applies JS's commands; `topics` holds the servers' topics and fans publishes
//! out; `server` and `client` start connections. `scaleout`, the link to Redis, stands apart:
//! it uses only `runtime` (`topics` gives it the publishes and takes the other processes').

#[cfg(unix)]
pub mod alloc;
pub mod bridge;
pub mod client;
pub mod commands;
pub mod config;
pub mod connection;
pub mod events;
pub mod heartbeat;
pub mod net;
#[cfg(unix)]
pub mod park;
#[cfg(not(unix))]
#[path = "park_off.rs"]
pub mod park;
pub mod proxy;
pub mod registry;
pub mod runtime;
pub mod scaleout;
pub mod server;
pub mod state;
pub mod tls;
pub mod topics;
pub mod wire;
