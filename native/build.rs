//! Links the module with `-z nodelete`: the dynamic loader then never unmaps it, even when
//! Envoy dlcloses it after the last configuration that uses it goes away (a removed
//! EnvoyFilter, unless `do_not_close` is set). The module's timer thread (src/timer.rs) and
//! Rust's thread-local destructors run code from the library for the whole life of the
//! process; unmapped, they would crash Envoy.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-Wl,-z,nodelete");
}
