//! kafka-identity: an Envoy network filter that authenticates each Kafka connection to
//! the broker as the principal derived from the client's mTLS certificate.
//!
//! `session`, `peer`, `token` and `config` are plain Rust, tested natively; `glue` is the
//! thin proxy-wasm layer and only exists in the .wasm build.

pub mod config;
pub mod peer;
pub mod session;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod glue;
