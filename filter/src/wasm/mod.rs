//! The proxy-wasm adapter: `abi` calls Envoy's Wasm host functions, `glue` is the thin
//! layer the proxy-wasm SDK dispatches Envoy's callbacks to. Everything it decides is the
//! core's (see the crate documentation).

mod abi;
mod glue;
