//! kafka-identity: an Envoy network filter that authenticates each Kafka connection to
//! the broker as the principal derived from the client's mTLS certificate.
//!
//! One core, two thin adapters (one per host):
//!
//! - **Core** (this crate but `wasm`): plain Rust, tested natively and shared by both hosts.
//!   `session` (one connection's state machine), `connection` (drives a session against a
//!   [`host`]: the buffers, the clock), `splice` (buffer edits), `latest` (the current
//!   configuration per filter), `generation` (one accepted configuration with its token issuer
//!   and caches), `metrics` (the counters' names and meaning), `outcome` (the log lines),
//!   `read_window` (one host read per request header), `peer`, `identity_cache`
//!   (identifications by certificate digest), `token`, `token_cache` (a principal's token
//!   reused for a while), `config`.
//! - **Adapters**: `wasm` (proxy-wasm: `wasm::abi` calls Envoy's host functions and returns
//!   their errors, `wasm::glue` dispatches Envoy's callbacks; only in the .wasm build), and the
//!   native Envoy dynamic module, the crate `kafka-identity-native` (`native/`).
//!
//! The Wasm adapter stays a module of this crate so that the .wasm keeps its name
//! (`kafka_identity_filter.wasm`) everywhere it is built, shipped and pinned.

pub mod config;
pub mod connection;
pub mod generation;
pub mod host;
pub mod identity_cache;
pub mod latest;
pub mod metrics;
pub mod outcome;
pub mod peer;
pub mod read_window;
pub mod session;
pub mod splice;
pub mod token;
pub mod token_cache;

#[cfg(target_arch = "wasm32")]
mod wasm;
