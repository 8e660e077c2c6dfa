//! A proxy-wasm network filter that does nothing: every callback continues. `make bench`
//! runs it as path (n), so the report can tell what any Wasm network filter costs Envoy per
//! connection (the context, the callbacks into the VM) from what kafka-identity itself adds.
//!
//! For calibration its configuration may be a number N: then each new connection makes N
//! cheap host calls (`proxy_get_current_time_nanoseconds`) and N property reads
//! (`source.address`), which prices one crossing from the VM into Envoy (docs/design.md).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { calls: 0 }) });
}}

struct Root {
    calls: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.calls = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        true
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Stream { calls: self.calls }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

struct Stream {
    calls: u32,
}

impl Context for Stream {}

impl StreamContext for Stream {
    fn on_new_connection(&mut self) -> Action {
        for _ in 0..self.calls {
            let _ = hostcalls::get_current_time();
            let _ = hostcalls::get_property(vec!["source", "address"]);
        }
        Action::Continue
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_upstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}
