//! The part of Envoy's dynamic-module ABI this module uses, declared by us (the SDK is not in
//! any registry we can reach; docs: shared notes `envoy-dynamic-modules.md`). Checked against
//! Envoy 1.40.0 (ABI `v0.2.0`); the network filter's hooks and these callbacks have the same
//! shapes in 1.38 and 1.39. A struct of a pointer and a length is passed by value: in the
//! x86-64 and aarch64 C ABIs that is the same as passing the two words separately.
//!
//! Only the adapter (`lib.rs`) calls these; every call is wrapped there in a safe function
//! that returns an error instead of trusting the result.

use std::ffi::c_void;

/// The ABI version this build was written against, as `on_program_init` reports it: Envoy
/// 1.40 says `v0.2.0`, 1.38 and 1.39 `v0.1.0` (feature `envoy-1-38`, `make native-1.38`).
/// Envoy 1.38+ only warns on a mismatch, but only "built for N, loaded by N or N+1" is
/// promised, so there is one build per ABI version. The callbacks used here have the same
/// shapes in 1.38, 1.39 and 1.40 (1.37 differs, e.g. `inject_read_data` takes a pointer and a
/// length, and wants the header's hash instead of a version: not built).
#[cfg(not(feature = "envoy-1-38"))]
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";
#[cfg(feature = "envoy-1-38")]
pub const ABI_VERSION: &[u8] = b"v0.1.0\0";

/// Envoy's filter (`DynamicModuleNetworkFilter*`): the first argument of every per-connection
/// callback. Valid during a hook of that connection.
pub type FilterEnvoyPtr = *mut c_void;
/// Envoy's filter configuration: valid during `config_new` (counters are defined there).
pub type ConfigEnvoyPtr = *mut c_void;

/// `envoy_dynamic_module_type_envoy_buffer`: bytes Envoy owns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// `envoy_dynamic_module_type_module_buffer`: bytes the module owns, read during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }
}

/// `envoy_dynamic_module_type_on_network_filter_data_status`.
pub const STATUS_CONTINUE: u32 = 0;
pub const STATUS_STOP_ITERATION: u32 = 1;

/// `envoy_dynamic_module_type_network_connection_close_type_FlushWrite`: what the Wasm
/// build's `proxy_close_stream` does (the client gets what is already buffered for it).
pub const CLOSE_FLUSH_WRITE: u32 = 0;

/// `envoy_dynamic_module_type_metrics_result_Success`.
pub const METRICS_SUCCESS: u32 = 0;

/// `envoy_dynamic_module_type_log_level`.
pub const LOG_TRACE: u32 = 0;
pub const LOG_DEBUG: u32 = 1;
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;
pub const LOG_CRITICAL: u32 = 5;

// Envoy defines these; the module is loaded into Envoy, which resolves them at dlopen.
extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    pub fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    pub fn envoy_dynamic_module_callback_network_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_network_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        value: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_network_filter_get_read_buffer_size(
        filter: FilterEnvoyPtr,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size(
        filter: FilterEnvoyPtr,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks(
        filter: FilterEnvoyPtr,
        chunks: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_drain_read_buffer(
        filter: FilterEnvoyPtr,
        length: usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_prepend_read_buffer(
        filter: FilterEnvoyPtr,
        data: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_append_read_buffer(
        filter: FilterEnvoyPtr,
        data: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_network_filter_get_write_buffer_size(
        filter: FilterEnvoyPtr,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks_size(
        filter: FilterEnvoyPtr,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks(
        filter: FilterEnvoyPtr,
        chunks: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_drain_write_buffer(
        filter: FilterEnvoyPtr,
        length: usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_prepend_write_buffer(
        filter: FilterEnvoyPtr,
        data: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_append_write_buffer(
        filter: FilterEnvoyPtr,
        data: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_network_filter_close(filter: FilterEnvoyPtr, kind: u32);

    /// Bytes into the filter chain after this filter, towards the upstream (the broker).
    pub fn envoy_dynamic_module_callback_network_filter_inject_read_data(
        filter: FilterEnvoyPtr,
        data: ModuleBuffer,
        end_stream: bool,
    );

    /// A handle that delivers `on_network_filter_scheduled` on the connection's worker,
    /// committed to from any thread; deleted by the module.
    pub fn envoy_dynamic_module_callback_network_filter_scheduler_new(
        filter: FilterEnvoyPtr,
    ) -> *mut c_void;
    pub fn envoy_dynamic_module_callback_network_filter_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_network_filter_scheduler_delete(scheduler: *mut c_void);

    pub fn envoy_dynamic_module_callback_network_filter_is_ssl(filter: FilterEnvoyPtr) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans_size(
        filter: FilterEnvoyPtr,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans(
        filter: FilterEnvoyPtr,
        sans: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_get_ssl_subject(
        filter: FilterEnvoyPtr,
        subject: *mut EnvoyBuffer,
    ) -> bool;
    /// A filter-state object that is a string accessor (`envoy.string`); false if absent.
    pub fn envoy_dynamic_module_callback_network_get_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_network_filter_get_remote_address(
        filter: FilterEnvoyPtr,
        address: *mut EnvoyBuffer,
        port: *mut u32,
    ) -> bool;
}
