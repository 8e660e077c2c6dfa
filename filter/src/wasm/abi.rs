//! Envoy's host functions (the proxy-wasm ABI), called directly.
//!
//! proxy-wasm 0.2.5's `hostcalls` turn most statuses they do not expect into a panic
//! (`set_buffer`, `get_buffer` and `get_current_time` on anything but Ok/NotFound,
//! `define_metric` and `close_downstream` on anything but Ok, `get_property` on
//! BadArgument, `log` when logging fails), and a panic traps the VM and every connection
//! on the worker. They also declare the returned status as the SDK's `Status` enum, so a
//! value outside it would be undefined behaviour. These wrappers take the status as a
//! plain `u32` and return every failure as a [`HostError`]. The SDK stays for what it is
//! good at: dispatching the host's callbacks to contexts.

use std::ops::Range;
use std::ptr::{null, null_mut};

use proxy_wasm::types::{BufferType, LogLevel, MetricType, StreamType};

use crate::host::{ChunkSource, HostBuffer, HostError};
use crate::read_window::ReadWindow;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
}

fn status(call: &'static str, status: u32) -> Result<(), HostError> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError::Status { call, status })
    }
}

/// Takes ownership of memory the host allocated through the SDK's
/// `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes).
///
/// # Safety
/// `data` must be null or come from that allocator with exactly `size` bytes.
unsafe fn take_host_bytes(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        // SAFETY: guaranteed by the caller; capacity and length are the allocation's size.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }
}

/// Writes one log line; a failed log call is ignored (there is nowhere to report it).
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the host reads `message.len()` bytes from a live &str.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// Nanoseconds since the Unix epoch, as milliseconds.
pub fn now_ms() -> Result<u64, HostError> {
    let mut nanos: u64 = 0;
    // SAFETY: the host writes one u64 into a location we own.
    status("proxy_get_current_time_nanoseconds", unsafe {
        proxy_get_current_time_nanoseconds(&mut nanos)
    })?;
    Ok(nanos / 1_000_000)
}

/// Bytes `start..start + max` of a buffer; NotFound and an absent buffer give no bytes.
pub fn get_buffer(buffer: BufferType, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a size into locations we own.
    let code = unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, &mut data, &mut size) };
    match code {
        // SAFETY: on Ok the host allocated `size` bytes with our allocator (or gave null).
        OK => Ok(unsafe { take_host_bytes(data, size) }.unwrap_or_default()),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(HostError::Status {
            call: "proxy_get_buffer_bytes",
            status: other,
        }),
    }
}

/// Envoy's buffer edit: see [`HostBuffer::replace`].
pub fn set_buffer(
    buffer: BufferType,
    start: usize,
    size: usize,
    bytes: &[u8],
) -> Result<(), HostError> {
    // SAFETY: the host reads `bytes.len()` bytes from a live slice.
    status("proxy_set_buffer_bytes", unsafe {
        proxy_set_buffer_bytes(buffer as u32, start, size, bytes.as_ptr(), bytes.len())
    })
}

/// A property such as `["connection", "mtls"]`; `None` when Envoy does not have it.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    // Path segments separated by NUL, as the ABI wants them.
    let serialized = path.join("\0");
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let (ptr, len) = if serialized.is_empty() {
        (null(), 0)
    } else {
        (serialized.as_ptr(), serialized.len())
    };
    // SAFETY: the host reads `len` bytes of the path and writes a pointer and a size.
    let code = unsafe { proxy_get_property(ptr, len, &mut data, &mut size) };
    match code {
        // SAFETY: as in get_buffer.
        OK => Ok(unsafe { take_host_bytes(data, size) }),
        NOT_FOUND => Ok(None),
        other => Err(HostError::Status {
            call: "proxy_get_property",
            status: other,
        }),
    }
}

pub fn define_counter(name: &str) -> Result<u32, HostError> {
    let mut id: u32 = 0;
    // SAFETY: the host reads the name from a live &str and writes one u32.
    status("proxy_define_metric", unsafe {
        proxy_define_metric(
            MetricType::Counter as u32,
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    })?;
    Ok(id)
}

pub fn increment_counter(id: u32) -> Result<(), HostError> {
    // SAFETY: no memory is shared.
    status("proxy_increment_metric", unsafe {
        proxy_increment_metric(id, 1)
    })
}

/// Asks Envoy to call the root context's `on_tick` every `period_ms`.
pub fn set_tick_period(period_ms: u32) -> Result<(), HostError> {
    // SAFETY: no memory is shared.
    status("proxy_set_tick_period_milliseconds", unsafe {
        proxy_set_tick_period_milliseconds(period_ms)
    })
}

/// Envoy's log level for Wasm (proxy-wasm numbering: 0 trace ... 5 critical).
pub fn log_level() -> Result<u32, HostError> {
    let mut level: u32 = 0;
    // SAFETY: the host writes one u32 into a location we own.
    status("proxy_get_log_level", unsafe {
        proxy_get_log_level(&mut level)
    })?;
    Ok(level)
}

/// Closes the downstream connection (Envoy flushes what is buffered for the client).
pub fn close_downstream() -> Result<(), HostError> {
    // SAFETY: no memory is shared.
    status("proxy_close_stream", unsafe {
        proxy_close_stream(StreamType::Downstream as u32)
    })
}

/// One direction's buffer during `on_downstream_data` / `on_upstream_data`, read through
/// a [`ReadWindow`] (one host read per request header rather than one per field).
pub struct EnvoyBuffer {
    kind: BufferType,
    window: ReadWindow,
}

impl EnvoyBuffer {
    /// `len`: the callback's `data_size`.
    pub fn new(kind: BufferType, len: usize) -> Self {
        Self {
            kind,
            window: ReadWindow::new(len),
        }
    }
}

impl ChunkSource for EnvoyBuffer {
    fn read(&mut self, range: Range<usize>) -> Result<Vec<u8>, HostError> {
        let kind = self.kind;
        self.window
            .read(range, |start, max| get_buffer(kind, start, max))
    }
}

impl HostBuffer for EnvoyBuffer {
    fn replace(&mut self, start: usize, len: usize, bytes: &[u8]) -> Result<(), HostError> {
        self.window.edited();
        set_buffer(self.kind, start, len, bytes)
    }
}
