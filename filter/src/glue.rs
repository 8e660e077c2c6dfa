//! The thin proxy-wasm layer: reads Envoy's properties and buffers, feeds the session,
//! carries out its decisions. Every host call goes through `hostcalls`, which return
//! errors instead of panicking like the SDK's convenience methods do.

use std::ops::Range;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use log::{debug, error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MetricType, PeerType};

use crate::config::{self, FilterConfig};
use crate::peer::{self, PeerProperties};
use crate::session::{ChunkSource, Identification, Refusal, RefusalKind, Session, Start};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Counter ids, defined once per VM.
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
    fn define(prefix: &str) -> Result<Self, String> {
        let counter = |name: &str| {
            let full = format!("{prefix}.{name}");
            hostcalls::define_metric(MetricType::Counter, &full)
                .map_err(|status| format!("cannot define metric {full}: {status:?}"))
        };
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
        let _ = hostcalls::increment_metric(id, 1);
    }

    fn refusal(&self, kind: RefusalKind) -> u32 {
        match kind {
            RefusalKind::NoIdentity => self.rejected_no_identity,
            RefusalKind::AuthFailed => self.auth_failed,
            RefusalKind::ClientSasl => self.rejected_client_sasl,
            RefusalKind::Protocol => self.protocol_errors,
        }
    }
}

struct Configured {
    config: FilterConfig,
    metrics: Metrics,
}

#[derive(Default)]
struct Root {
    configured: Option<Rc<Configured>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                error!("kafka-identity: cannot read plugin configuration: {status:?}");
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
                error!("kafka-identity: {e}");
                return false;
            }
        };
        info!(
            "kafka-identity: configured (stat_prefix {}, on_no_identity {:?}, on_client_sasl {:?})",
            config.stat_prefix, config.session.on_no_identity, config.session.on_client_sasl
        );
        self.configured = Some(Rc::new(Configured { config, metrics }));
        true
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        let configured = self.configured.clone()?;
        let mut session = Session::new(&configured.config.session);
        session.set_token_nonce((now_ms() << 20) ^ u64::from(context_id));
        Some(Box::new(Connection {
            configured,
            session,
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

struct Connection {
    configured: Rc<Configured>,
    session: Session,
    source: Option<String>,
    identity: Option<String>,
    principal: Option<String>,
    closed: bool,
}

/// Envoy's buffer for one direction, read range by range.
struct EnvoyBuffer(BufferType);

impl ChunkSource for EnvoyBuffer {
    fn read(&mut self, range: Range<usize>) -> Option<Vec<u8>> {
        let len = range.len();
        match hostcalls::get_buffer(self.0, range.start, len) {
            Ok(Some(bytes)) => Some(bytes),
            Ok(None) if len == 0 => Some(Vec::new()),
            _ => None,
        }
    }
}

fn property(path: Vec<&str>) -> Option<Vec<u8>> {
    hostcalls::get_property(path).ok().flatten()
}

fn property_string(path: Vec<&str>) -> Option<String> {
    property(path).and_then(|bytes| String::from_utf8(bytes).ok())
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

impl Connection {
    fn metrics(&self) -> &Metrics {
        &self.configured.metrics
    }

    /// Read once, on the first downstream data: the TLS handshake is complete by then.
    fn read_peer(&mut self) -> Identification {
        self.source = property_string(vec!["source", "address"]);
        let key = self
            .configured
            .config
            .peer_certificate_filter_state_key
            .as_str();
        let mtls = property(vec!["connection", "mtls"])
            .map(|b| b.first() == Some(&1))
            .unwrap_or(false);
        let props = if mtls {
            let certificate_pem = property(vec!["connection", "peer_certificate"]);
            let filter_state_pem = if certificate_pem.is_none() {
                property(vec!["filter_state", key])
            } else {
                None
            };
            let fallback = certificate_pem.is_none() && filter_state_pem.is_none();
            PeerProperties {
                mtls,
                certificate_pem,
                filter_state_pem,
                uri_san: fallback
                    .then(|| property_string(vec!["connection", "uri_san_peer_certificate"]))
                    .flatten(),
                subject: fallback
                    .then(|| property_string(vec!["connection", "subject_peer_certificate"]))
                    .flatten(),
            }
        } else {
            PeerProperties::default()
        };
        let identification = peer::identify(&self.configured.config.mapper, &props);
        match &identification {
            Identification::Principal {
                identity,
                principal,
            } => {
                self.identity = Some(identity.clone());
                self.principal = Some(principal.clone());
            }
            Identification::NoPrincipal { identity, .. } => self.identity = Some(identity.clone()),
            Identification::NoMtls => {}
        }
        identification
    }

    fn describe(&self) -> String {
        format!(
            "source={} identity={} principal={} token={}",
            self.source.as_deref().unwrap_or("-"),
            self.identity.as_deref().unwrap_or("-"),
            self.principal.as_deref().unwrap_or("-"),
            self.configured.config.session.tokens.describe(),
        )
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.metrics().bump(self.metrics().refusal(refusal.kind));
        warn!(
            "kafka-identity: {} outcome={} reason=\"{}\"",
            self.describe(),
            outcome_name(refusal.kind),
            refusal.message
        );
        self.closed = true;
        if let Err(status) = hostcalls::close_downstream() {
            error!("kafka-identity: cannot close connection: {status:?}");
        }
    }

    fn downstream(&mut self, size: usize) -> Result<(), Refusal> {
        let configured = Rc::clone(&self.configured);
        let settings = &configured.config.session;
        let now = now_ms();
        let mut inject = None;
        if !self.session.is_started() {
            let identification = self.read_peer();
            match self.session.start(settings, &identification, now)? {
                Start::Inject(bytes) => inject = Some(bytes),
                Start::PassThrough => {
                    self.metrics().bump(self.metrics().passed_through);
                    info!(
                        "kafka-identity: {} outcome=passed_through reason=\"{}\"",
                        self.describe(),
                        match &identification {
                            Identification::NoMtls => "no mTLS".to_owned(),
                            Identification::NoPrincipal { reason, .. } => reason.clone(),
                            Identification::Principal { .. } => String::new(),
                        }
                    );
                }
            }
        }
        let reauth = self.session.downstream(
            settings,
            size,
            &mut EnvoyBuffer(BufferType::DownstreamData),
            now,
        )?;
        let cannot = |s: proxy_wasm::types::Status| Refusal {
            kind: RefusalKind::Protocol,
            message: format!("cannot inject SASL requests: {s:?}"),
        };
        if let Some(bytes) = inject {
            hostcalls::set_buffer(BufferType::DownstreamData, 0, 0, &bytes).map_err(cannot)?;
        }
        if let Some(injection) = reauth {
            // Envoy drains `offset` bytes from the front and puts the replacement there:
            // the bytes before the frame boundary, then the SASL requests.
            let mut replacement = EnvoyBuffer(BufferType::DownstreamData)
                .read(0..injection.offset)
                .ok_or(Refusal {
                    kind: RefusalKind::Protocol,
                    message: "cannot read client bytes before the re-authentication point"
                        .to_owned(),
                })?;
            replacement.extend_from_slice(&injection.bytes);
            hostcalls::set_buffer(
                BufferType::DownstreamData,
                0,
                injection.offset,
                &replacement,
            )
            .map_err(cannot)?;
        }
        Ok(())
    }

    fn upstream(&mut self, size: usize) -> Result<(), Refusal> {
        let configured = Rc::clone(&self.configured);
        let outcome = self.session.upstream(
            &configured.config.session,
            size,
            &mut EnvoyBuffer(BufferType::UpstreamData),
            now_ms(),
        )?;
        if let Some(edits) = outcome.edits {
            let result = match edits.front_only() {
                Some(drop) => {
                    hostcalls::set_buffer(BufferType::UpstreamData, 0, drop, &edits.prepend)
                }
                None => {
                    let chunk = EnvoyBuffer(BufferType::UpstreamData)
                        .read(0..size)
                        .unwrap_or_default();
                    hostcalls::set_buffer(BufferType::UpstreamData, 0, size, &edits.apply(&chunk))
                }
            };
            result.map_err(|s| Refusal {
                kind: RefusalKind::Protocol,
                message: format!("cannot rewrite broker bytes: {s:?}"),
            })?;
        }
        if let Some(auth) = outcome.authenticated {
            if auth.reauthentication {
                self.metrics().bump(self.metrics().reauthenticated);
                debug!(
                    "kafka-identity: {} outcome=reauthenticated session_lifetime_ms={}",
                    self.describe(),
                    auth.session_lifetime_ms
                );
            } else {
                self.metrics().bump(self.metrics().authenticated);
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

fn outcome_name(kind: RefusalKind) -> &'static str {
    match kind {
        RefusalKind::NoIdentity => "rejected_no_identity",
        RefusalKind::AuthFailed => "auth_failed",
        RefusalKind::ClientSasl => "rejected_client_sasl",
        RefusalKind::Protocol => "protocol_error",
    }
}

impl Context for Connection {}

impl StreamContext for Connection {
    fn on_new_connection(&mut self) -> Action {
        // Too early for the peer certificate: the TLS handshake has not finished.
        self.metrics().bump(self.metrics().connections);
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
            // Nothing of a failed authentication reaches the client.
            let _ = hostcalls::set_buffer(BufferType::UpstreamData, 0, data_size, &[]);
            self.refuse(refusal);
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {}
}

/// Environment variables of the VM (`vm_config.environment_variables`). Envoy serves them
/// through the WASI calls below to every module; `std::env` has none on
/// wasm32-unknown-unknown, so the calls are declared here.
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
