//! The idle-deadline timer is host-independent: its tests run here, in a plain test binary
//! (the module itself links against Envoy's callbacks, so it has none).
#[path = "../src/timer.rs"]
#[allow(dead_code)]
mod timer;
