//! kafka-identity: an Envoy network filter that authenticates each Kafka connection to
//! the broker as the principal derived from the client's mTLS certificate.
//!
//! Everything but `glue` and `abi` is plain Rust, tested natively: `session` (one
//! connection's state machine), `connection` (drives a session against a [`host`]: the
//! buffers, the clock), `splice` (buffer edits), `latest` (the current configuration per
//! filter in a VM), `read_window` (one host read per request header), `peer`,
//! `identity_cache` (identifications by certificate digest),
//! `token`, `token_cache` (a principal's token reused for a while), `config`. `abi` calls Envoy's host functions and returns their errors; `glue`
//! is the thin proxy-wasm layer. Both only exist in the .wasm build.

pub mod config;
pub mod connection;
pub mod host;
pub mod identity_cache;
pub mod latest;
pub mod peer;
pub mod read_window;
pub mod session;
pub mod splice;
pub mod token;
pub mod token_cache;

#[cfg(target_arch = "wasm32")]
mod abi;
#[cfg(target_arch = "wasm32")]
mod glue;
