//! The protocol core: sans-IO state machines that know bytes and states, never sockets.

pub mod close;
pub mod deflate;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod receiver;
pub mod utf8;
pub mod zlib;
#[cfg(test)] mod corpus_tests;
