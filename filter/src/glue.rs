//! The thin proxy-wasm layer: the SDK dispatches Envoy's callbacks to the contexts here;
//! every host call goes through `abi`, which returns errors instead of panicking. The
//! connection logic itself is `connection::Connection`, tested natively.

use std::cell::RefCell;
use std::rc::Rc;

use log::{debug, error, info, warn};
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, PeerType};

use crate::abi::{self, EnvoyBuffer};
use crate::config::{self, FilterConfig};
use crate::connection::Connection;
use crate::host::{Clock, HostError};
use crate::identity_cache::{self, IdentityCache};
use crate::latest::{filter_key, Latest, RootId};
use crate::peer::{self, HbonePeer, PeerProperties};
use crate::session::{Identification, Refusal, RefusalKind};
use crate::splice;
use crate::token_cache::{self, TokenCache};

proxy_wasm::main! {{
    // Our own logger and panic hook: the SDK's unwrap the status of the log call.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    std::panic::set_hook(Box::new(|info| abi::log(LogLevel::Critical, &info.to_string())));
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root::new(id)) });
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
    /// The current configuration of each filter in this VM (see `latest`).
    static LATEST: RefCell<Latest<Configured>> = RefCell::new(Latest::default());
    /// This VM's name in the logs (its start time) and how many root contexts it has had:
    /// shows whether a configuration update kept the VM.
    static VM: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    /// Envoy's clock as of the last tick (ms) and how often it was used since.
    static TICK_CLOCK: std::cell::Cell<(u64, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// Every root context ticks this often, to refresh `TICK_CLOCK`. Re-authentication is due
/// at 85-95% of a session of at least a minute, a token's `iat` is in seconds: 100 ms is
/// plenty, and a tick costs far less than reading the clock on every chunk.
const TICK_MS: u32 = 100;
/// Ticks between two readings of Envoy's log level (it can change at run time).
const TICKS_PER_LOG_LEVEL: u32 = 10;
/// Uses of one tick's time before the clock is read anyway (should ticks stop).
const MAX_USES_PER_TICK: u32 = 1024;

/// Envoy's clock, read at most once per tick: every chunk needs the time (re-authentication
/// is planned by it) and each crossing into Envoy costs more than the filter's work on a
/// chunk.
struct TickClock;

impl TickClock {
    fn refresh() -> Result<u64, HostError> {
        let now = abi::now_ms()?;
        TICK_CLOCK.with(|c| c.set((now, 0)));
        Ok(now)
    }
}

impl Clock for TickClock {
    fn now_ms(&mut self) -> Result<u64, HostError> {
        let (at, uses) = TICK_CLOCK.with(|c| c.get());
        if at == 0 || uses >= MAX_USES_PER_TICK {
            return Self::refresh();
        }
        TICK_CLOCK.with(|c| c.set((at, uses + 1)));
        Ok(at)
    }
}

/// The `log` crate's level follows Envoy's level for the `wasm` component, so lines Envoy
/// would drop are not formatted (nor their connection's source address read).
fn follow_host_log_level() {
    let level = match abi::log_level() {
        Ok(0) => log::LevelFilter::Trace,
        Ok(1) => log::LevelFilter::Debug,
        Ok(2) => log::LevelFilter::Info,
        Ok(3) => log::LevelFilter::Warn,
        Ok(_) => log::LevelFilter::Error,
        Err(_) => log::LevelFilter::Trace,
    };
    log::set_max_level(level);
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
    reidentified_closed: u32,
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
            reidentified_closed: counter("reidentified_closed")?,
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
            RefusalKind::Reidentified => self.reidentified_closed,
        }
    }
}

struct Configured {
    config: FilterConfig,
    metrics: Metrics,
    /// The issuer shared with connections that re-authenticate under a newer configuration.
    tokens: Rc<crate::token::TokenIssuer>,
    /// The SASL requests per principal made with `tokens`, reused for a while.
    token_cache: Rc<TokenCache>,
    /// Identifications by certificate digest, for this configuration's mapping.
    identities: IdentityCache,
}

struct Root {
    /// This root context's id: its entry in `LATEST`.
    id: RootId,
    /// Its number in the VM's log lines (`root context <n> in VM <id>`).
    ordinal: u64,
    configured: Option<Rc<Configured>>,
    ticks: u32,
    /// This filter's key in `LATEST`.
    filter: Rc<str>,
}

impl Root {
    fn new(id: RootId) -> Self {
        Self {
            id,
            ordinal: 0,
            configured: None,
            ticks: 0,
            filter: Rc::from(""),
        }
    }

    /// This root's configuration, keys and caches leave `LATEST` with it.
    fn leave(&self) {
        let _ = LATEST.try_with(|latest| {
            if let Ok(mut latest) = latest.try_borrow_mut() {
                latest.root_gone(self.id);
            }
        });
    }
}

impl Context for Root {
    fn on_done(&mut self) -> bool {
        // Envoy shuts this plugin down: its filter was removed or replaced and its last
        // connection is gone.
        self.leave();
        true
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        self.leave();
    }
}

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
            // Once per VM: which release this is (the workspace version, as the CLI says).
            info!(
                "kafka-identity: version {} in VM {id:x}",
                env!("CARGO_PKG_VERSION")
            );
        }
        VM.with(|vm| vm.set((id, roots + 1)));
        self.ordinal = roots + 1;
        info!("kafka-identity: root context {} in VM {id:x}", roots + 1);
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        follow_host_log_level();
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
        self.filter = filter_key(&plugin, &root_id).into();
        info!(
            "kafka-identity: configured (plugin {plugin}, identity {}, stat_prefix {}, \
             on_no_identity {:?}, on_client_sasl {:?}, token {})",
            config.identity_source(),
            config.stat_prefix,
            config.session.on_no_identity,
            config.session.on_client_sasl,
            config.session.tokens.describe()
        );
        let tokens = Rc::new(config.session.tokens.clone());
        let token_cache = Rc::new(TokenCache::new(
            &config.session.client_id,
            config.token_reuse_seconds.saturating_mul(1000),
            token_cache::DEFAULT_MAX_ENTRIES,
        ));
        let configured = Rc::new(Configured {
            config,
            metrics,
            tokens,
            token_cache,
            identities: IdentityCache::new(identity_cache::DEFAULT_MAX_ENTRIES),
        });
        LATEST.with(|latest| {
            latest
                .borrow_mut()
                .configured(&self.filter, self.id, Rc::clone(&configured))
        });
        self.configured = Some(configured);
        if let Err(e) = abi::set_tick_period(TICK_MS) {
            error!("kafka-identity: cannot set a tick period, the clock is read per chunk: {e}");
        }
        let _ = TickClock::refresh();
        true
    }

    fn on_tick(&mut self) {
        let _ = TickClock::refresh();
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(TICKS_PER_LOG_LEVEL) {
            follow_host_log_level();
        }
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        // Returning None would make the SDK panic; a connection without a configuration
        // (not reachable while Envoy only routes to configured filters) is refused.
        let configured = self.configured.clone();
        // Envoy hands this root's configuration to new connections: after a revert to a
        // configuration it still runs, this is the only sign that it is current again.
        if configured.is_some()
            && LATEST.with(|latest| latest.borrow_mut().connection_opened(self.id))
        {
            info!(
                "kafka-identity: root context {} is current again (a revert)",
                self.ordinal
            );
        }
        let nonce = TickClock.now_ms().map(|ms| ms << 20).unwrap_or(0) ^ u64::from(context_id);
        let connection = configured
            .as_ref()
            .map(|c| Connection::new(&c.config.session, nonce));
        Some(Box::new(Stream {
            configured,
            filter: Rc::clone(&self.filter),
            seen: 0,
            current: None,
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
    filter: Rc<str>,
    /// `LATEST`'s version when `current` was last taken from it.
    seen: u64,
    /// The current configuration of this filter: tokens and identities come from it.
    current: Option<Rc<Configured>>,
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
/// handshake is complete by then). In a waypoint only the configured filter-state keys: the
/// inner connection has no TLS of its own. A sidecar's peer certificate has a digest: a
/// certificate seen before is identified from the cache (see `identity_cache`), without
/// reading it.
fn read_peer(configured: &Configured) -> Identification {
    let config = &configured.config;
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
    match property(&["connection", "sha256_peer_certificate_digest"]) {
        Some(digest) if !digest.is_empty() => configured
            .identities
            .get_or_identify(&digest, || identify(config, true)),
        _ => {
            let mtls = property(&["connection", "mtls"])
                .map(|b| b.first() == Some(&1))
                .unwrap_or(false);
            identify(config, mtls)
        }
    }
}

fn identify(config: &FilterConfig, mtls: bool) -> Identification {
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
    /// The client's address, for log lines only: read when one is written.
    fn load_source(&mut self) {
        if self.source.is_none() {
            self.source = property_string(&["source", "address"]);
        }
    }

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
        if log::log_enabled!(log::Level::Warn) {
            self.load_source();
        }
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
        // (Re-)authentications sign with the current configuration of this filter, and
        // identify the peer with it.
        let changed =
            LATEST.with(|latest| latest.borrow().changed_since(&self.filter, &mut self.seen));
        if let Some(current) = changed {
            connection.set_token_issuer(Rc::clone(&current.tokens));
            connection.set_token_cache(Rc::clone(&current.token_cache));
            self.current = Some(current);
        }
        let current = self
            .current
            .clone()
            .unwrap_or_else(|| Rc::clone(&configured));
        let opened = connection.downstream(
            &configured.config.session,
            size,
            &mut EnvoyBuffer::new(BufferType::DownstreamData, size),
            &mut TickClock,
            || read_peer(&current),
        );
        if let Some(opened) = opened? {
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
                if log::log_enabled!(log::Level::Info) {
                    self.load_source();
                    info!(
                        "kafka-identity: {} outcome=passed_through reason=\"{reason}\"",
                        self.describe()
                    );
                }
            }
        }
        Ok(())
    }

    fn upstream(&mut self, size: usize) -> Result<(), Refusal> {
        let (Some(configured), Some(connection)) = (self.configured.clone(), &mut self.connection)
        else {
            // Nothing from the broker reaches a client the filter could not vouch for.
            let _ = splice::discard(&mut EnvoyBuffer::new(BufferType::UpstreamData, size), size);
            if self.closed {
                return Ok(());
            }
            return Err(Refusal::new(
                RefusalKind::Protocol,
                "the filter has no configuration",
            ));
        };
        let authenticated = connection.upstream(
            &configured.config.session,
            size,
            &mut EnvoyBuffer::new(BufferType::UpstreamData, size),
            &mut TickClock,
        )?;
        if let Some(auth) = authenticated {
            if auth.reauthentication {
                self.bump(|m| m.reauthenticated);
                if log::log_enabled!(log::Level::Debug) {
                    self.load_source();
                }
                debug!(
                    "kafka-identity: {} outcome=reauthenticated session_lifetime_ms={}",
                    self.describe(),
                    auth.session_lifetime_ms
                );
            } else {
                self.bump(|m| m.authenticated);
                if log::log_enabled!(log::Level::Info) {
                    self.load_source();
                }
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
        // Never Pause here: Envoy does not implement resuming the upstream direction. After
        // a refusal the connection driver drops every chunk: Envoy flushes what the client
        // has pending before it closes.
        if data_size == 0 {
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
