//! kafka-identity as an Envoy dynamic module: the native adapter over the same core as the
//! .wasm (`kafka_identity_filter`). Envoy calls the exported `envoy_dynamic_module_on_*`
//! hooks directly; this file maps them onto the core's `Connection`, and `abi` declares the
//! Envoy callbacks it uses.
//!
//! There is no sandbox: a panic unwinding into Envoy would abort the whole proxy. The module
//! is built with `panic = "unwind"` (`make native`) and every hook runs inside
//! [`std::panic::catch_unwind`]; a caught panic fails closed (that connection is refused,
//! closed and counted in `panics`; a configuration is refused).
//!
//! Envoy creates a filter configuration on its main thread and the connections on its
//! workers. The checked configuration is shared (`Arc`); the token issuer and the caches of
//! a [`Generation`] are per worker thread, made on first use, as a Wasm VM has them.
//!
//! A configuration update (ECDS, a changed listener) gives Envoy a new filter configuration
//! while open connections keep the one they were created with. As in the .wasm, each
//! connection takes the current configuration of its filter (by `filter_name`) from a
//! [`Latest`] table at every (re-)authentication: a rotated signing key or a changed mapping
//! reaches open connections at their next re-authentication.

mod abi;
mod timer;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_identity_filter::config::{self, FilterConfig};
use kafka_identity_filter::connection::Connection;
use kafka_identity_filter::generation::Generation;
use kafka_identity_filter::host::{self, ChunkSource, Clock, HostBuffer, HostError};
use kafka_identity_filter::latest::{Latest, RootId};
use kafka_identity_filter::metrics::Counter;
use kafka_identity_filter::outcome::Described;
use kafka_identity_filter::peer::{self, HbonePeer, PeerProperties};
use kafka_identity_filter::session::{Identification, Refusal};

use abi::{EnvoyBuffer, FilterEnvoyPtr, ModuleBuffer};

// ---------------------------------------------------------------------------------------
// Logging: the `log` facade, written through Envoy's `dynamic_modules` logger.

struct Logger;
static LOGGER: Logger = Logger;

fn envoy_level(level: log::Level) -> u32 {
    match level {
        log::Level::Trace => abi::LOG_TRACE,
        log::Level::Debug => abi::LOG_DEBUG,
        log::Level::Info => abi::LOG_INFO,
        log::Level::Warn => abi::LOG_WARN,
        log::Level::Error => abi::LOG_ERROR,
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // SAFETY: no memory is shared.
        unsafe { abi::envoy_dynamic_module_callback_log_enabled(envoy_level(metadata.level())) }
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = record.args().to_string();
        // SAFETY: Envoy reads the message during the call; `line` outlives it.
        unsafe {
            abi::envoy_dynamic_module_callback_log(
                envoy_level(record.level()),
                ModuleBuffer::of(line.as_bytes()),
            )
        }
    }

    fn flush(&self) {}
}

fn log_critical(message: &str) {
    // SAFETY: as in `Logger::log`.
    unsafe {
        abi::envoy_dynamic_module_callback_log(
            abi::LOG_CRITICAL,
            ModuleBuffer::of(message.as_bytes()),
        )
    }
}

/// What a caught panic said, for the log line.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

// ---------------------------------------------------------------------------------------
// Program and configuration hooks.

/// Called once when Envoy loads the module. Returns the ABI version it was built for.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    let ok = catch_unwind(|| {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
        log::info!(
            "kafka-identity: version {} (native, dynamic-module ABI {})",
            env!("CARGO_PKG_VERSION"),
            String::from_utf8_lossy(abi::ABI_VERSION.strip_suffix(b"\0").unwrap_or_default())
        );
    });
    if ok.is_err() {
        // A null pointer makes Envoy refuse the module: nothing of it runs.
        return std::ptr::null();
    }
    abi::ABI_VERSION.as_ptr().cast()
}

/// One filter configuration (`filter_config`), shared by Envoy's workers.
struct ModuleConfig {
    /// Numbers this configuration in the per-worker generation table and in [`LATEST`].
    id: RootId,
    /// Envoy's `filter_name`: successive configurations of one filter share it.
    filter: Box<str>,
    config: Arc<FilterConfig>,
    /// Envoy's counter ids, by [`Counter::index`].
    counters: [usize; Counter::ALL.len()],
}

static CONFIG_IDS: AtomicU32 = AtomicU32::new(1);

/// The current configuration of each filter. Configurations arrive on Envoy's main thread and
/// connections read it on the workers, so it sits behind a lock; [`LATEST_VERSION`] mirrors
/// its version so that a chunk costs one atomic load when nothing changed.
static LATEST: Mutex<Latest<Arc<ModuleConfig>>> = Mutex::new(Latest::new());
static LATEST_VERSION: AtomicU64 = AtomicU64::new(0);

/// Runs `change` on the table and publishes its new version.
fn update_latest(change: impl FnOnce(&mut Latest<Arc<ModuleConfig>>)) {
    // A poisoned lock only means a panic elsewhere while holding it; the table stays usable.
    let mut latest = LATEST.lock().unwrap_or_else(|e| e.into_inner());
    change(&mut latest);
    LATEST_VERSION.store(latest.version(), Ordering::Release);
}

/// The current configuration of `filter` if the table changed since `*seen`.
fn latest_changed(filter: &str, seen: &mut u64) -> Option<Arc<ModuleConfig>> {
    if LATEST_VERSION.load(Ordering::Acquire) == *seen {
        return None;
    }
    let latest = LATEST.lock().unwrap_or_else(|e| e.into_inner());
    latest.changed_since(filter, seen)
}

/// # Safety
/// `ptr` must be valid for `len` bytes (or null with `len` 0) for the duration of the call.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

fn new_config(
    config_envoy: abi::ConfigEnvoyPtr,
    name: &[u8],
    raw: &[u8],
) -> Option<Arc<ModuleConfig>> {
    let name = String::from_utf8_lossy(name);
    let config = match config::parse_with_env(raw, &|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(e) => {
            log::error!("kafka-identity: configuration refused: {e}");
            return None;
        }
    };
    let mut counters = [0usize; Counter::ALL.len()];
    for (id, counter) in counters.iter_mut().zip(Counter::ALL) {
        let full = format!("{}.{}", config.stat_prefix, counter.name());
        // SAFETY: Envoy reads the name during the call and writes one usize we own.
        let status = unsafe {
            abi::envoy_dynamic_module_callback_network_filter_config_define_counter(
                config_envoy,
                ModuleBuffer::of(full.as_bytes()),
                id,
            )
        };
        if status != abi::METRICS_SUCCESS {
            log::error!("kafka-identity: cannot define counter {full}: status {status}");
            return None;
        }
    }
    let config = Arc::new(config);
    log::info!("{}", Generation::new(Arc::clone(&config)).describe(&name));
    let module_config = Arc::new(ModuleConfig {
        id: CONFIG_IDS.fetch_add(1, Ordering::Relaxed),
        filter: name.into(),
        config,
        counters,
    });
    update_latest(|latest| {
        latest.configured(
            &module_config.filter,
            module_config.id,
            Arc::clone(&module_config),
        )
    });
    Some(module_config)
}

/// # Safety
/// Called by Envoy with the pointers and lengths of the filter's name and configuration.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_config_new(
    config_envoy: abi::ConfigEnvoyPtr,
    name_ptr: *const u8,
    name_len: usize,
    config_ptr: *const u8,
    config_len: usize,
) -> *const c_void {
    let made = catch_unwind(|| {
        // SAFETY: Envoy passes valid buffers for the duration of the call.
        let (name, raw) = unsafe { (bytes(name_ptr, name_len), bytes(config_ptr, config_len)) };
        new_config(config_envoy, name, raw)
    });
    match made {
        Ok(Some(config)) => Arc::into_raw(config).cast(),
        Ok(None) => std::ptr::null(),
        Err(panic) => {
            log_critical(&format!(
                "kafka-identity: configuration refused: the filter panicked: {}",
                panic_message(panic.as_ref())
            ));
            std::ptr::null()
        }
    }
}

/// # Safety
/// `config` is a pointer `config_new` returned, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_config_destroy(
    config: *mut c_void,
) {
    if config.is_null() {
        return;
    }
    // SAFETY: made by `config_new` with Arc::into_raw, not yet destroyed.
    let config = unsafe { Arc::from_raw(config.cast::<ModuleConfig>()) };
    let id = config.id;
    drop(config);
    // Envoy destroys a configuration when no listener and no connection uses it: it leaves
    // the table (the filter's newest other configuration becomes current), and the main
    // thread's generation of it goes too. Known gap: each worker keeps its own generation of
    // a removed configuration (a few KB) until the worker ends.
    let _ = catch_unwind(|| {
        update_latest(|latest| latest.root_gone(id));
        forget_generation(id);
    });
}

// ---------------------------------------------------------------------------------------
// Per-worker state.

thread_local! {
    /// This worker's generation of each configuration: token issuer and caches.
    static GENERATIONS: RefCell<HashMap<RootId, Rc<Generation>>> = RefCell::new(HashMap::new());
}

fn generation(config: &ModuleConfig) -> Rc<Generation> {
    GENERATIONS.with(|g| {
        Rc::clone(
            g.borrow_mut()
                .entry(config.id)
                .or_insert_with(|| Rc::new(Generation::new(Arc::clone(&config.config)))),
        )
    })
}

fn forget_generation(id: RootId) {
    let _ = GENERATIONS.try_with(|g| {
        if let Ok(mut g) = g.try_borrow_mut() {
            g.remove(&id);
        }
    });
}

static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&mut self) -> Result<u64, HostError> {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| HostError::OutOfRange { call: "clock" })?;
        u64::try_from(since.as_millis()).map_err(|_| HostError::OutOfRange { call: "clock" })
    }
}

/// One connection.
struct Filter {
    /// The configuration Envoy created this connection with: its session settings and counters.
    config: *const ModuleConfig,
    generation: Rc<Generation>,
    /// [`LATEST_VERSION`] when this connection last looked, and its filter's current
    /// configuration then (`None`: the one it was created with).
    seen: u64,
    current: Option<(Arc<ModuleConfig>, Rc<Generation>)>,
    /// This connection's place in the idle-deadline timer (made at its first deadline) and
    /// the deadline it is armed for.
    timer: Option<Arc<timer::Slot>>,
    armed_at: Option<u64>,
    connection: Connection,
    described: Described,
    closed: bool,
}

impl Filter {
    fn config(&self) -> &ModuleConfig {
        // SAFETY: Envoy keeps a filter's configuration alive until its last filter is
        // destroyed.
        unsafe { &*self.config }
    }

    fn bump(&self, envoy: FilterEnvoyPtr, counter: Counter) {
        if let Some(id) = self.config().counters.get(counter.index()) {
            // SAFETY: `envoy` is this connection's filter during a hook. A failed update must
            // not affect the connection.
            let _ = unsafe {
                abi::envoy_dynamic_module_callback_network_filter_increment_counter(envoy, *id, 1)
            };
        }
    }

    fn load_source(&mut self, envoy: FilterEnvoyPtr) {
        if self.described.source.is_some() {
            return;
        }
        let mut address = EnvoyBuffer::EMPTY;
        let mut port = 0u32;
        // SAFETY: Envoy writes a buffer and a port into locations we own; the address is
        // read before the hook returns.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_network_filter_get_remote_address(
                envoy,
                &mut address,
                &mut port,
            )
        };
        if ok {
            // SAFETY: Envoy's buffer, valid during the hook.
            let ip = unsafe { bytes(address.ptr, address.length) };
            let ip = String::from_utf8_lossy(ip);
            self.described.source = Some(if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            });
        }
    }

    fn token(&self) -> &str {
        self.connection.session().last_token()
    }

    fn refuse(&mut self, envoy: FilterEnvoyPtr, refusal: Refusal) {
        self.bump(envoy, Counter::for_refusal(refusal.kind));
        if log::log_enabled!(log::Level::Warn) {
            self.load_source(envoy);
        }
        log::warn!("{}", self.described.refused(self.token(), &refusal));
        self.close(envoy);
    }

    fn close(&mut self, envoy: FilterEnvoyPtr) {
        self.closed = true;
        self.connection.refuse();
        // SAFETY: `envoy` is this connection's filter during a hook.
        unsafe {
            abi::envoy_dynamic_module_callback_network_filter_close(envoy, abi::CLOSE_FLUSH_WRITE)
        };
    }

    fn downstream(&mut self, envoy: FilterEnvoyPtr, size: usize) -> Result<(), Refusal> {
        // The panic-test build panics here on purpose: the hook must catch it.
        #[cfg(feature = "panic-test")]
        #[allow(clippy::panic)]
        {
            let mut probe = NativeBuffer::new(envoy, Direction::Read);
            if size >= 6 && probe.read(0..6).ok().as_deref() == Some(b"PANIC!".as_slice()) {
                panic!("panic-test build: a client sent PANIC!");
            }
        }
        let session = Rc::clone(&self.generation);
        let identifying = self.current_generation();
        let opened = self.connection.downstream(
            &session.config.session,
            size,
            &mut NativeBuffer::new(envoy, Direction::Read),
            &mut SystemClock,
            || identify(envoy, &identifying),
        )?;
        if let Some(opened) = opened {
            self.described.identified(&opened.identification);
            if opened.passed_through {
                self.bump(envoy, Counter::PassedThrough);
                if log::log_enabled!(log::Level::Info) {
                    self.load_source(envoy);
                    log::info!(
                        "{}",
                        self.described
                            .passed_through(self.token(), &opened.identification)
                    );
                }
            }
        }
        Ok(())
    }

    /// The generation (re-)authentications use: the current configuration of this filter,
    /// whose signing key and identity mapping reach open connections this way.
    fn current_generation(&mut self) -> Rc<Generation> {
        let mut seen = self.seen;
        let changed = latest_changed(&self.config().filter, &mut seen);
        self.seen = seen;
        if let Some(current) = changed {
            let current_generation = generation(&current);
            self.connection
                .set_token_issuer(Rc::clone(&current_generation.tokens));
            self.connection
                .set_token_cache(Rc::clone(&current_generation.token_cache));
            self.current = Some((current, current_generation));
        }
        self.current
            .as_ref()
            .map_or_else(|| Rc::clone(&self.generation), |(_, g)| Rc::clone(g))
    }

    /// Arms the timer for the session's re-authentication deadline, once per deadline. If
    /// the timer cannot run, the data hooks still check the deadline.
    fn arm_deadline(&mut self, envoy: FilterEnvoyPtr) {
        let Some(at) = self.connection.session().reauthentication_due_at() else {
            return;
        };
        if self.armed_at == Some(at) {
            return;
        }
        if self.timer.is_none() {
            // SAFETY: `envoy` is this connection's filter during a hook.
            let scheduler =
                unsafe { abi::envoy_dynamic_module_callback_network_filter_scheduler_new(envoy) };
            if scheduler.is_null() {
                return;
            }
            self.timer = Some(timer::Slot::new(timer::SchedulerPtr(scheduler)));
        }
        if let Some(slot) = &self.timer {
            if timer::arm(
                slot,
                at,
                abi::envoy_dynamic_module_callback_network_filter_scheduler_commit,
                || SystemClock.now_ms().ok(),
            ) {
                self.armed_at = Some(at);
            }
        }
    }

    /// The timer says the re-authentication deadline passed: if the connection is idle
    /// (between requests), re-authenticate now, as a data hook would.
    fn deadline(&mut self, envoy: FilterEnvoyPtr) {
        if self.closed {
            return;
        }
        self.armed_at = None;
        let identifying = self.current_generation();
        let session = Rc::clone(&self.generation);
        match self
            .connection
            .due(&session.config.session, &mut SystemClock, || {
                identify(envoy, &identifying)
            }) {
            Ok(Some(bytes)) => {
                log::debug!("kafka-identity: re-authenticating an idle connection at its deadline");
                // SAFETY: `envoy` is this connection's filter during a hook; Envoy copies
                // the bytes during the call.
                unsafe {
                    abi::envoy_dynamic_module_callback_network_filter_inject_read_data(
                        envoy,
                        ModuleBuffer::of(&bytes),
                        false,
                    )
                };
            }
            Ok(None) => {
                // Not due yet (the timer woke early): wait again. Due but a request is
                // under way: the data hooks re-authenticate once it is through.
                let now = SystemClock.now_ms().unwrap_or(u64::MAX);
                if self
                    .connection
                    .session()
                    .reauthentication_due_at()
                    .is_some_and(|at| at > now)
                {
                    self.arm_deadline(envoy);
                }
            }
            Err(refusal) => self.refuse(envoy, refusal),
        }
    }

    fn upstream(&mut self, envoy: FilterEnvoyPtr, size: usize) -> Result<(), Refusal> {
        let generation = Rc::clone(&self.generation);
        let authenticated = self.connection.upstream(
            &generation.config.session,
            size,
            &mut NativeBuffer::new(envoy, Direction::Write),
            &mut SystemClock,
        )?;
        if let Some(auth) = authenticated {
            let (counter, level) = if auth.reauthentication {
                (Counter::Reauthenticated, log::Level::Debug)
            } else {
                (Counter::Authenticated, log::Level::Info)
            };
            self.bump(envoy, counter);
            self.arm_deadline(envoy);
            if log::log_enabled!(level) {
                self.load_source(envoy);
                log::log!(
                    level,
                    "{}",
                    self.described.authenticated(
                        self.token(),
                        auth.reauthentication,
                        auth.session_lifetime_ms
                    )
                );
            }
        }
        Ok(())
    }
}

/// The peer as Envoy's TLS connection reports it: every URI SAN and the subject. A peer
/// certificate seen before on this worker is identified from the cache, keyed by what
/// identifies it here (its URI SANs and subject: the mapping depends on nothing else).
fn identify(envoy: FilterEnvoyPtr, generation: &Generation) -> Identification {
    let config = &generation.config;
    if let Some(keys) = &config.waypoint {
        // A waypoint's inner connection has no TLS of its own: the client is the HBONE
        // tunnel's peer, which Envoy's filters wrote into filter state (see `peer`).
        let found = HbonePeer {
            principal: filter_state(envoy, &keys.peer_principal_filter_state_key),
            certificate: keys
                .peer_certificate_filter_state_key
                .as_deref()
                .and_then(|key| filter_state(envoy, key)),
        };
        return peer::identify_hbone_peer(&config.mapper, keys, &found);
    }
    // SAFETY: `envoy` is this connection's filter during a hook.
    if !unsafe { abi::envoy_dynamic_module_callback_network_filter_is_ssl(envoy) } {
        return Identification::NoMtls;
    }
    let uri_sans = ssl_uri_sans(envoy);
    let subject = ssl_subject(envoy);
    if uri_sans.is_empty() && subject.as_deref().is_none_or(str::is_empty) {
        // TLS without a client certificate.
        return Identification::NoMtls;
    }
    let mut key = uri_sans.join("\n").into_bytes();
    key.push(0);
    key.extend_from_slice(subject.as_deref().unwrap_or("").as_bytes());
    generation.identities.get_or_identify(&key, || {
        peer::identify(
            &config.mapper,
            &PeerProperties {
                mtls: true,
                uri_sans: Some(uri_sans.clone()),
                subject: subject.clone(),
                ..PeerProperties::default()
            },
        )
    })
}

/// A filter-state value Envoy holds as a string (`envoy.string`, as Istio's and our
/// `set_filter_state` filters write them); `None` when the key is absent.
fn filter_state(envoy: FilterEnvoyPtr, key: &str) -> Option<Vec<u8>> {
    let mut value = EnvoyBuffer::EMPTY;
    // SAFETY: `envoy` is this connection's filter during a hook; Envoy reads the key during
    // the call and points `value` at its own string, copied before the hook returns.
    let found = unsafe {
        abi::envoy_dynamic_module_callback_network_get_filter_state_bytes(
            envoy,
            ModuleBuffer::of(key.as_bytes()),
            &mut value,
        )
    };
    // SAFETY: Envoy's buffer, valid during the hook.
    found.then(|| unsafe { bytes(value.ptr, value.length) }.to_vec())
}

fn ssl_uri_sans(envoy: FilterEnvoyPtr) -> Vec<String> {
    // SAFETY: `envoy` is this connection's filter during a hook.
    let count =
        unsafe { abi::envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans_size(envoy) };
    if count == 0 || count > 1024 {
        return Vec::new();
    }
    let mut sans = vec![EnvoyBuffer::EMPTY; count];
    // SAFETY: Envoy fills `count` entries, the size it just reported.
    if !unsafe {
        abi::envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans(envoy, sans.as_mut_ptr())
    } {
        return Vec::new();
    }
    sans.iter()
        // SAFETY: Envoy's strings, valid during the hook.
        .map(|b| String::from_utf8_lossy(unsafe { bytes(b.ptr, b.length) }).into_owned())
        .collect()
}

fn ssl_subject(envoy: FilterEnvoyPtr) -> Option<String> {
    let mut subject = EnvoyBuffer::EMPTY;
    // SAFETY: Envoy writes one buffer into a location we own.
    if !unsafe {
        abi::envoy_dynamic_module_callback_network_filter_get_ssl_subject(envoy, &mut subject)
    } {
        return None;
    }
    // SAFETY: Envoy's string, valid during the hook.
    Some(String::from_utf8_lossy(unsafe { bytes(subject.ptr, subject.length) }).into_owned())
}

// ---------------------------------------------------------------------------------------
// Buffers.

#[derive(Clone, Copy)]
enum Direction {
    /// From the client (`on_read`).
    Read,
    /// From the broker (`on_write`).
    Write,
}

/// The current hook's buffer with the proxy-wasm edit semantics the core expects
/// ([`HostBuffer::replace`]). Envoy's slices are fetched once and again after an edit.
struct NativeBuffer {
    envoy: FilterEnvoyPtr,
    direction: Direction,
    chunks: Option<Vec<EnvoyBuffer>>,
}

impl NativeBuffer {
    fn new(envoy: FilterEnvoyPtr, direction: Direction) -> Self {
        Self {
            envoy,
            direction,
            chunks: None,
        }
    }

    fn size(&self) -> usize {
        // SAFETY: `envoy` is this connection's filter during a hook.
        unsafe {
            match self.direction {
                Direction::Read => {
                    abi::envoy_dynamic_module_callback_network_filter_get_read_buffer_size(
                        self.envoy,
                    )
                }
                Direction::Write => {
                    abi::envoy_dynamic_module_callback_network_filter_get_write_buffer_size(
                        self.envoy,
                    )
                }
            }
        }
    }

    fn fetch(&self) -> Result<Vec<EnvoyBuffer>, HostError> {
        // SAFETY: `envoy` is this connection's filter during a hook; Envoy fills exactly the
        // number of slices it reported.
        unsafe {
            let (count, ok) = match self.direction {
                Direction::Read => {
                    let n = abi::envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size(self.envoy);
                    let mut chunks = vec![EnvoyBuffer::EMPTY; n];
                    let ok = n == 0
                        || abi::envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks(
                            self.envoy,
                            chunks.as_mut_ptr(),
                        );
                    (chunks, ok)
                }
                Direction::Write => {
                    let n = abi::envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks_size(self.envoy);
                    let mut chunks = vec![EnvoyBuffer::EMPTY; n];
                    let ok = n == 0
                        || abi::envoy_dynamic_module_callback_network_filter_get_write_buffer_chunks(
                            self.envoy,
                            chunks.as_mut_ptr(),
                        );
                    (chunks, ok)
                }
            };
            if ok {
                Ok(count)
            } else {
                Err(HostError::Status {
                    call: "get_buffer_chunks",
                    status: 1,
                })
            }
        }
    }
}

impl ChunkSource for NativeBuffer {
    fn read(&mut self, range: Range<usize>) -> Result<Vec<u8>, HostError> {
        if self.chunks.is_none() {
            self.chunks = Some(self.fetch()?);
        }
        let chunks = self.chunks.as_deref().unwrap_or_default();
        // SAFETY: Envoy's slices, valid during the hook and until the buffer is edited
        // (`replace` forgets them).
        let slices: Vec<&[u8]> = chunks
            .iter()
            .map(|c| unsafe { bytes(c.ptr, c.length) })
            .collect();
        host::read_chunks(&slices, range)
    }
}

impl HostBuffer for NativeBuffer {
    fn replace(&mut self, start: usize, len: usize, bytes: &[u8]) -> Result<(), HostError> {
        self.chunks = None;
        let envoy = self.envoy;
        let data = ModuleBuffer::of(bytes);
        let failed = |call| HostError::Status { call, status: 2 };
        // SAFETY: `envoy` is this connection's filter during a hook; Envoy copies `bytes`
        // during the call.
        unsafe {
            match self.direction {
                Direction::Read if start == 0 => {
                    if len > 0
                        && !abi::envoy_dynamic_module_callback_network_filter_drain_read_buffer(
                            envoy, len,
                        )
                    {
                        return Err(failed("drain_read_buffer"));
                    }
                    if !bytes.is_empty()
                        && !abi::envoy_dynamic_module_callback_network_filter_prepend_read_buffer(
                            envoy, data,
                        )
                    {
                        return Err(failed("prepend_read_buffer"));
                    }
                }
                Direction::Write if start == 0 => {
                    if len > 0
                        && !abi::envoy_dynamic_module_callback_network_filter_drain_write_buffer(
                            envoy, len,
                        )
                    {
                        return Err(failed("drain_write_buffer"));
                    }
                    if !bytes.is_empty()
                        && !abi::envoy_dynamic_module_callback_network_filter_prepend_write_buffer(
                            envoy, data,
                        )
                    {
                        return Err(failed("prepend_write_buffer"));
                    }
                }
                Direction::Read if start >= self.size() => {
                    if !bytes.is_empty()
                        && !abi::envoy_dynamic_module_callback_network_filter_append_read_buffer(
                            envoy, data,
                        )
                    {
                        return Err(failed("append_read_buffer"));
                    }
                }
                Direction::Write if start >= self.size() => {
                    if !bytes.is_empty()
                        && !abi::envoy_dynamic_module_callback_network_filter_append_write_buffer(
                            envoy, data,
                        )
                    {
                        return Err(failed("append_write_buffer"));
                    }
                }
                _ => return Err(failed("replace in the middle of a buffer")),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Connection hooks. Each catches unwinding: a panic refuses and closes that connection only.

/// # Safety
/// `config` is a pointer `config_new` returned and Envoy has not destroyed.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_new(
    config: *const c_void,
    _envoy: FilterEnvoyPtr,
) -> *mut c_void {
    if config.is_null() {
        return std::ptr::null_mut();
    }
    let made = catch_unwind(|| {
        // SAFETY: as the function's contract says.
        let module_config = unsafe { &*config.cast::<ModuleConfig>() };
        let generation = generation(module_config);
        // A new connection uses the configuration Envoy created it with: whatever changed
        // before now is not news to it.
        let seen = LATEST_VERSION.load(Ordering::Acquire);
        let nonce = SystemClock.now_ms().map(|ms| ms << 20).unwrap_or(0)
            ^ CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let mut connection = Connection::new(&generation.config.session, nonce);
        // The worker's issuer and token cache of this configuration: a principal's signed
        // token is reused across its connections for token_reuse_seconds, as in the .wasm
        // (without them every connection would sign its own).
        connection.set_token_issuer(Rc::clone(&generation.tokens));
        connection.set_token_cache(Rc::clone(&generation.token_cache));
        Filter {
            config: module_config,
            connection,
            generation,
            seen,
            current: None,
            timer: None,
            armed_at: None,
            described: Described::default(),
            closed: false,
        }
    });
    match made {
        Ok(filter) => Box::into_raw(Box::new(filter)).cast(),
        Err(panic) => {
            // Null: Envoy refuses this connection.
            log_critical(&format!(
                "kafka-identity: the filter panicked creating a connection: {}",
                panic_message(panic.as_ref())
            ));
            std::ptr::null_mut()
        }
    }
}

/// Runs a hook on a connection's filter: a panic is logged, counted in `panics`, and the
/// connection refused and closed (the core drops every later chunk of it).
fn guarded(
    envoy: FilterEnvoyPtr,
    filter: *mut c_void,
    hook: &str,
    run: impl FnOnce(&mut Filter) -> u32,
) -> u32 {
    if filter.is_null() {
        return abi::STATUS_STOP_ITERATION;
    }
    // SAFETY: `filter` was made by `on_network_filter_new` and Envoy calls one hook of a
    // connection at a time, on its worker.
    let filter = unsafe { &mut *filter.cast::<Filter>() };
    match catch_unwind(AssertUnwindSafe(|| run(filter))) {
        Ok(status) => status,
        Err(panic) => {
            log_critical(&format!(
                "kafka-identity: the filter panicked in {hook}, closing the connection: {}",
                panic_message(panic.as_ref())
            ));
            let _ = catch_unwind(AssertUnwindSafe(|| {
                filter.bump(envoy, Counter::Panics);
                filter.close(envoy);
            }));
            abi::STATUS_STOP_ITERATION
        }
    }
}

/// # Safety
/// Called by Envoy with this connection's pointers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_new_connection(
    envoy: FilterEnvoyPtr,
    filter: *mut c_void,
) -> u32 {
    guarded(envoy, filter, "new_connection", |f| {
        // Too early for the peer certificate: the TLS handshake has not finished.
        f.bump(envoy, Counter::Connections);
        abi::STATUS_CONTINUE
    })
}

/// # Safety
/// Called by Envoy with this connection's pointers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_read(
    envoy: FilterEnvoyPtr,
    filter: *mut c_void,
    data_length: usize,
    _end_stream: bool,
) -> u32 {
    guarded(envoy, filter, "read", |f| {
        if f.closed {
            return abi::STATUS_STOP_ITERATION;
        }
        if data_length == 0 {
            return abi::STATUS_CONTINUE;
        }
        match f.downstream(envoy, data_length) {
            Ok(()) => abi::STATUS_CONTINUE,
            Err(refusal) => {
                f.refuse(envoy, refusal);
                abi::STATUS_STOP_ITERATION
            }
        }
    })
}

/// # Safety
/// Called by Envoy with this connection's pointers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_write(
    envoy: FilterEnvoyPtr,
    filter: *mut c_void,
    data_length: usize,
    _end_stream: bool,
) -> u32 {
    guarded(envoy, filter, "write", |f| {
        // As in the Wasm build: never stop the broker's direction; after a refusal the core
        // drops every chunk, and Envoy flushes what the client has pending before it closes.
        if data_length == 0 {
            return abi::STATUS_CONTINUE;
        }
        if let Err(refusal) = f.upstream(envoy, data_length) {
            f.refuse(envoy, refusal);
        }
        abi::STATUS_CONTINUE
    })
}

/// # Safety
/// Called by Envoy with this connection's pointers, on its worker, while it lives.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_scheduled(
    envoy: FilterEnvoyPtr,
    filter: *mut c_void,
    event_id: u64,
) {
    let _ = guarded(envoy, filter, "scheduled", |f| {
        if event_id == timer::DEADLINE_EVENT {
            f.deadline(envoy);
        }
        abi::STATUS_CONTINUE
    });
}

/// # Safety
/// Called by Envoy with this connection's pointers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_event(
    _envoy: FilterEnvoyPtr,
    _filter: *mut c_void,
    _event: u32,
) {
}

/// # Safety
/// `filter` was made by `on_network_filter_new`; Envoy destroys it once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_destroy(filter: *mut c_void) {
    if filter.is_null() {
        return;
    }
    // SAFETY: as the function's contract says.
    let mut filter = unsafe { Box::from_raw(filter.cast::<Filter>()) };
    let _ = catch_unwind(AssertUnwindSafe(move || {
        // Out of the timer's reach first, then deleted (see `timer`).
        if let Some(scheduler) = filter.timer.take().and_then(|slot| slot.take()) {
            // SAFETY: made by `scheduler_new` for this connection, deleted once.
            unsafe {
                abi::envoy_dynamic_module_callback_network_filter_scheduler_delete(scheduler.0)
            };
        }
        drop(filter);
    }));
}
