//! The thin proxy-wasm layer: the SDK dispatches Envoy's callbacks to the contexts here;
//! every host call goes through `abi`, which returns errors instead of panicking. The
//! connection logic itself is `connection::Connection`, tested natively.

use std::cell::RefCell;
use std::rc::Rc;

use log::{debug, error, info, warn};
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, PeerType};

use crate::abi::{self, EnvoyBuffer, EnvoyClock};
use crate::config::{self, FilterConfig};
use crate::connection::Connection;
use crate::host::HostError;
use crate::latest::{filter_key, Latest};
use crate::peer::{self, HbonePeer, PeerProperties};
use crate::session::{Identification, Refusal, RefusalKind};

proxy_wasm::main! {{
    // Our own logger and panic hook: the SDK's unwrap the status of the log call.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    std::panic::set_hook(Box::new(|info| abi::log(LogLevel::Critical, &info.to_string())));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

thread_local! {
    /// The newest configuration of each filter in this VM (see `latest`).
    static LATEST: RefCell<Latest<Configured>> = RefCell::new(Latest::default());
    /// This VM's name in the logs (its start time) and how many root contexts it has had:
    /// shows whether a configuration update kept the VM.
    static VM: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Counter ids, defined once per configuration.
struct Metrics {
    connections: u32,
    authenticated: u32,
    reauthenticated: u32,
    auth_failed: u32,
    rejected_no_identity: u32,
    rejected_client_sasl: u32,
    protocol_errors: u32,
    passed_through: u32,
}

impl Metrics {
    fn define(prefix: &str) -> Result<Self, HostError> {
        let counter = |name: &str| abi::define_counter(&format!("{prefix}.{name}"));
        Ok(Self {
            connections: counter("connections")?,
            authenticated: counter("authenticated")?,
            reauthenticated: counter("reauthenticated")?,
            auth_failed: counter("auth_failed")?,
            rejected_no_identity: counter("rejected_no_identity")?,
            rejected_client_sasl: counter("rejected_client_sasl")?,
            protocol_errors: counter("protocol_errors")?,
            passed_through: counter("passed_through")?,
        })
    }

    fn bump(&self, id: u32) {
        // A failed counter update must not affect the connection.
        let _ = abi::increment_counter(id);
    }

    fn refusal(&self, kind: RefusalKind) -> u32 {
        match kind {
            RefusalKind::NoIdentity => self.rejected_no_identity,
            RefusalKind::AuthFailed => self.auth_failed,
            RefusalKind::ClientSasl => self.rejected_client_sasl,
            RefusalKind::Protocol | RefusalKind::Host => self.protocol_errors,
        }
    }
}

struct Configured {
    config: FilterConfig,
    metrics: Metrics,
    /// The issuer shared with connections that re-authenticate under a newer configuration.
    tokens: Rc<crate::token::TokenIssuer>,
}

#[derive(Default)]
struct Root {
    configured: Option<Rc<Configured>>,
    /// This filter's key in `LATEST`.
    filter: String,
}

impl Context for Root {}

fn property_string(path: &[&str]) -> Option<String> {
    abi::get_property(path)
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        // Envoy starts a root context per filter configuration; the VM may be new or kept.
        let (mut id, roots) = VM.with(|vm| vm.get());
        if id == 0 {
            id = abi::now_ms().unwrap_or(1).max(1);
        }
        VM.with(|vm| vm.set((id, roots + 1)));
        info!("kafka-identity: root context {} in VM {id:x}", roots + 1);
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = match abi::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes,
            Err(e) => {
                error!("kafka-identity: cannot read plugin configuration: {e}");
                return false;
            }
        };
        let config = match config::parse_with_env(&raw, &wasi_env::var) {
            Ok(config) => config,
            Err(e) => {
                error!("kafka-identity: configuration refused: {e}");
                return false;
            }
        };
        let metrics = match Metrics::define(&config.stat_prefix) {
            Ok(metrics) => metrics,
            Err(e) => {
                error!("kafka-identity: cannot define counters: {e}");
                return false;
            }
        };
        let plugin = property_string(&["plugin_name"]).unwrap_or_default();
        let root_id = property_string(&["plugin_root_id"]).unwrap_or_default();
        self.filter = filter_key(&plugin, &root_id);
        let peer = match &config.waypoint {
            Some(w) => format!(
                "waypoint HBONE peer from filter state {:?}",
                w.peer_principal_filter_state_key
            ),
            None => "sidecar TLS peer".to_owned(),
        };
        info!(
            "kafka-identity: configured (plugin {plugin}, identity {peer}, stat_prefix {}, \
             on_no_identity {:?}, on_client_sasl {:?}, token {})",
            config.stat_prefix,
            config.session.on_no_identity,
            config.session.on_client_sasl,
            config.session.tokens.describe()
        );
        let tokens = Rc::new(config.session.tokens.clone());
        let configured = Rc::new(Configured {
            config,
            metrics,
            tokens,
        });
        LATEST.with(|latest| {
            latest
                .borrow_mut()
                .publish(&self.filter, Rc::clone(&configured))
        });
        self.configured = Some(configured);
        true
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        // Returning None would make the SDK panic; a connection without a configuration
        // (not reachable while Envoy only routes to configured filters) is refused.
        let configured = self.configured.clone();
        let nonce = abi::now_ms().map(|ms| ms << 20).unwrap_or(0) ^ u64::from(context_id);
        let connection = configured
            .as_ref()
            .map(|c| Connection::new(&c.config.session, nonce));
        Some(Box::new(Stream {
            configured,
            filter: self.filter.clone(),
            connection,
            source: None,
            identity: None,
            principal: None,
            closed: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

struct Stream {
    configured: Option<Rc<Configured>>,
    filter: String,
    connection: Option<Connection>,
    source: Option<String>,
    identity: Option<String>,
    principal: Option<String>,
    closed: bool,
}

fn property(path: &[&str]) -> Option<Vec<u8>> {
    abi::get_property(path).ok().flatten()
}

/// What Envoy exposes about the peer; read once, on the first downstream data (the TLS
/// handshake is complete by then). In a waypoint only the configured filter-state keys.
fn read_peer(config: &FilterConfig) -> Identification {
    if let Some(keys) = &config.waypoint {
        let found = HbonePeer {
            principal: property(&["filter_state", &keys.peer_principal_filter_state_key]),
            certificate: keys
                .peer_certificate_filter_state_key
                .as_deref()
                .and_then(|key| property(&["filter_state", key])),
        };
        return peer::identify_hbone_peer(&config.mapper, keys, &found);
    }
    let mtls = property(&["connection", "mtls"])
        .map(|b| b.first() == Some(&1))
        .unwrap_or(false);
    let props = if mtls {
        let certificate_pem = property(&["connection", "peer_certificate"]);
        let filter_state_pem = if certificate_pem.is_none() {
            property(&["filter_state", &config.peer_certificate_filter_state_key])
        } else {
            None
        };
        let fallback = certificate_pem.is_none() && filter_state_pem.is_none();
        PeerProperties {
            mtls,
            certificate_pem,
            filter_state_pem,
            uri_san: fallback
                .then(|| property_string(&["connection", "uri_san_peer_certificate"]))
                .flatten(),
            subject: fallback
                .then(|| property_string(&["connection", "subject_peer_certificate"]))
                .flatten(),
        }
    } else {
        PeerProperties::default()
    };
    peer::identify(&config.mapper, &props)
}

impl Stream {
    fn describe(&self) -> String {
        let token = self
            .connection
            .as_ref()
            .map(|c| c.session().last_token())
            .filter(|t| !t.is_empty())
            .unwrap_or("-");
        format!(
            "source={} identity={} principal={} token={token}",
            self.source.as_deref().unwrap_or("-"),
            self.identity.as_deref().unwrap_or("-"),
            self.principal.as_deref().unwrap_or("-"),
        )
    }

    fn bump(&self, pick: impl Fn(&Metrics) -> u32) {
        if let Some(c) = &self.configured {
            c.metrics.bump(pick(&c.metrics));
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.bump(|m| m.refusal(refusal.kind));
        warn!(
            "kafka-identity: {} outcome={} reason=\"{}\"",
            self.describe(),
            refusal.kind.outcome(),
            refusal.message
        );
        self.closed = true;
        if let Err(e) = abi::close_downstream() {
            error!("kafka-identity: cannot close connection: {e}");
        }
    }

    fn downstream(&mut self, size: usize) -> Result<(), Refusal> {
        let (Some(configured), Some(connection)) = (self.configured.clone(), &mut self.connection)
        else {
            return Err(Refusal::new(
                RefusalKind::Protocol,
                "the filter has no configuration",
            ));
        };
        // Re-authentications sign with the newest configuration of this filter.
        let newest = LATEST
            .with(|latest| latest.borrow().get(&self.filter))
            .unwrap_or_else(|| Rc::clone(&configured));
        connection.set_token_issuer(Rc::clone(&newest.tokens));
        let config = &configured.config;
        let opened = connection.downstream(
            &config.session,
            size,
            &mut EnvoyBuffer(BufferType::DownstreamData),
            &mut EnvoyClock,
            || read_peer(config),
        );
        if let Some(opened) = opened? {
            self.source = property_string(&["source", "address"]);
            match &opened.identification {
                Identification::Principal {
                    identity,
                    principal,
                } => {
                    self.identity = Some(identity.clone());
                    self.principal = Some(principal.clone());
                }
                Identification::NoPrincipal { identity, .. } => {
                    self.identity = Some(identity.clone())
                }
                Identification::NoMtls => {}
            }
            if opened.passed_through {
                self.bump(|m| m.passed_through);
                let reason = match &opened.identification {
                    Identification::NoMtls => "no mTLS",
                    Identification::NoPrincipal { reason, .. } => reason.as_str(),
                    Identification::Principal { .. } => "",
                };
                info!(
                    "kafka-identity: {} outcome=passed_through reason=\"{reason}\"",
                    self.describe()
                );
            }
        }
        Ok(())
    }

    fn upstream(&mut self, size: usize) -> Result<(), Refusal> {
        let (Some(configured), Some(connection)) = (self.configured.clone(), &mut self.connection)
        else {
            return Err(Refusal::new(
                RefusalKind::Protocol,
                "the filter has no configuration",
            ));
        };
        let authenticated = connection.upstream(
            &configured.config.session,
            size,
            &mut EnvoyBuffer(BufferType::UpstreamData),
            &mut EnvoyClock,
        )?;
        if let Some(auth) = authenticated {
            if auth.reauthentication {
                self.bump(|m| m.reauthenticated);
                debug!(
                    "kafka-identity: {} outcome=reauthenticated session_lifetime_ms={}",
                    self.describe(),
                    auth.session_lifetime_ms
                );
            } else {
                self.bump(|m| m.authenticated);
                info!(
                    "kafka-identity: {} outcome=authenticated session_lifetime_ms={}",
                    self.describe(),
                    auth.session_lifetime_ms
                );
            }
        }
        Ok(())
    }
}

impl Context for Stream {}

impl StreamContext for Stream {
    fn on_new_connection(&mut self) -> Action {
        // Too early for the peer certificate: the TLS handshake has not finished.
        self.bump(|m| m.connections);
        Action::Continue
    }

    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        if self.closed {
            return Action::Pause;
        }
        if data_size == 0 {
            return Action::Continue;
        }
        match self.downstream(data_size) {
            Ok(()) => Action::Continue,
            Err(refusal) => {
                self.refuse(refusal);
                Action::Pause
            }
        }
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        // Never Pause here: Envoy does not implement resuming the upstream direction.
        if self.closed || data_size == 0 {
            return Action::Continue;
        }
        if let Err(refusal) = self.upstream(data_size) {
            // The connection driver has dropped the chunk already.
            self.refuse(refusal);
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {}
}

/// Environment variables of the VM: `vm_config.environment_variables` (`host_env_keys`,
/// copied from Envoy's own environment, or `key_values`). Envoy serves them through the
/// WASI calls below to every module; `std::env` has none on wasm32-unknown-unknown, so the
/// calls are declared here.
mod wasi_env {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        fn environ_sizes_get(count: *mut usize, buf_size: *mut usize) -> u16;
        fn environ_get(environ: *mut *mut u8, environ_buf: *mut u8) -> u16;
    }

    /// Upper bounds that keep a misbehaving host from making us allocate without limit.
    const MAX_VARS: usize = 4096;
    const MAX_BYTES: usize = 1 << 20;

    pub fn var(name: &str) -> Option<String> {
        let (mut count, mut size) = (0usize, 0usize);
        // SAFETY: the host writes two usizes into the locations we own.
        if unsafe { environ_sizes_get(&mut count, &mut size) } != 0
            || count > MAX_VARS
            || size > MAX_BYTES
        {
            return None;
        }
        let mut pointers: Vec<*mut u8> = vec![std::ptr::null_mut(); count];
        let mut buffer = vec![0u8; size];
        // SAFETY: both buffers have exactly the sizes the host reported.
        if unsafe { environ_get(pointers.as_mut_ptr(), buffer.as_mut_ptr()) } != 0 {
            return None;
        }
        // Entries are NUL-terminated `KEY=VALUE` strings laid out in `buffer`.
        buffer
            .split(|b| *b == 0)
            .filter_map(|entry| std::str::from_utf8(entry).ok())
            .find_map(|entry| {
                let (key, value) = entry.split_once('=')?;
                (key == name).then(|| value.to_owned())
            })
    }
}
