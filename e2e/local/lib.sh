# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Shared helpers for e2e/local/{stack-up,stack-down,envoy-restart,issue-cert}.
# Sourced, not executed. Everything runs on 127.0.0.1.

KI_LOCAL="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KI_REPO="$(cd "${KI_LOCAL}/../.." && pwd)"
KI_TOOLS="${KAFKA_IDENTITY_TOOLS:-${KI_REPO}/.tools}"
KI_STATE="${KAFKA_IDENTITY_STATE:-${KI_REPO}/e2e/.state}"

KI_HOST=127.0.0.1
KI_MESH_PORT="${KAFKA_IDENTITY_MESH_PORT:-19092}"
KI_CONTROLLER_PORT="${KAFKA_IDENTITY_CONTROLLER_PORT:-19093}"
KI_DIRECT_PORT="${KAFKA_IDENTITY_DIRECT_PORT:-19094}"
KI_PLAINTEXT_PORT="${KAFKA_IDENTITY_PLAINTEXT_PORT:-19095}"   # PLAINTEXT listener, only with KAFKA_IDENTITY_BENCH=1
KI_ENVOY_PLAIN_PORT="${KAFKA_IDENTITY_ENVOY_PLAIN_PORT:-19444}"   # Envoy TLS -> PLAINTEXT, no filter; only with KAFKA_IDENTITY_BENCH=1
# KAFKA_IDENTITY_BENCH=1 (bench/): adds the broker PLAINTEXT listener and a second Envoy listener
# (TLS + tcp_proxy, never the wasm filter) that it is advertised as.
KI_BENCH="${KAFKA_IDENTITY_BENCH:-0}"
# With KAFKA_IDENTITY_BENCH=1 and KAFKA_IDENTITY_BENCH_SIGNING=DIR (key.pem, jwks.json,
# filter-config.json; bench/run makes them): a broker SIGNED listener that checks tokens against
# the JWKS, behind a third Envoy listener whose filter signs (ES256), for the signed-mode benchmark.
KI_BENCH_SIGNING="${KAFKA_IDENTITY_BENCH_SIGNING:-}"
KI_SIGNED_PORT="${KAFKA_IDENTITY_SIGNED_PORT:-19096}"
KI_ENVOY_SIGNED_PORT="${KAFKA_IDENTITY_ENVOY_SIGNED_PORT:-19445}"
# With KAFKA_IDENTITY_BENCH=1 and KAFKA_IDENTITY_BENCH_NULL_WASM=FILE: two more Envoy listeners,
# TLS + that Wasm filter (one that does nothing) + tcp_proxy, to PLAINTEXT (port
# KAFKA_IDENTITY_ENVOY_NULL_PORT) and to MESH (the next port; the client does SASL itself):
# what any Wasm network filter costs per connection, with and without the broker's SASL.
# KAFKA_IDENTITY_BENCH_NULL_CALLS=N makes it do N host calls and N property reads per
# connection (calibration).
KI_BENCH_NULL_WASM="${KAFKA_IDENTITY_BENCH_NULL_WASM:-}"
KI_ENVOY_NULL_PORT="${KAFKA_IDENTITY_ENVOY_NULL_PORT:-19446}"
# The broker's PLAINTEXT listener advertised as the (n) listener, so that clients that
# bootstrap through (n) stay on it (the other PLAINTEXT listener is advertised as (a)).
KI_NULL_PLAINTEXT_PORT="${KAFKA_IDENTITY_NULL_PLAINTEXT_PORT:-19097}"
# With KAFKA_IDENTITY_BENCH=1 and KAFKA_IDENTITY_BENCH_NATIVE=FILE (the dynamic module, make
# native): the filter as the module beside the .wasm in the same Envoy, on its own Envoy
# listener (KAFKA_IDENTITY_ENVOY_NATIVE_PORT) to a broker listener configured like MESH
# (KAFKA_IDENTITY_NATIVE_PORT) and, with KAFKA_IDENTITY_BENCH_SIGNING, signing on another
# (KAFKA_IDENTITY_ENVOY_NATIVE_SIGNED_PORT) to one configured like SIGNED
# (KAFKA_IDENTITY_NATIVE_SIGNED_PORT). Own broker listeners, advertised as their Envoy
# listeners, so that perf tools that bootstrap through a path stay on it.
KI_BENCH_NATIVE="${KAFKA_IDENTITY_BENCH_NATIVE:-}"
KI_NATIVE_PORT="${KAFKA_IDENTITY_NATIVE_PORT:-19098}"
KI_NATIVE_SIGNED_PORT="${KAFKA_IDENTITY_NATIVE_SIGNED_PORT:-19099}"
KI_ENVOY_NATIVE_PORT="${KAFKA_IDENTITY_ENVOY_NATIVE_PORT:-19448}"
KI_ENVOY_NATIVE_SIGNED_PORT="${KAFKA_IDENTITY_ENVOY_NATIVE_SIGNED_PORT:-19449}"
KI_ENVOY_PORT="${KAFKA_IDENTITY_ENVOY_PORT:-19443}"
KI_ENVOY_ADMIN_PORT="${KAFKA_IDENTITY_ENVOY_ADMIN_PORT:-19901}"

# KAFKA_IDENTITY_KAFKA_VERSION picks .tools/kafka/<v>/libs (scripts/install-deps --kafka-versions).
KI_KAFKA_VERSION="${KAFKA_IDENTITY_KAFKA_VERSION:-4.4.0}"
ki_kafka_settings() { # derives the paths from KI_KAFKA_VERSION (again after ki_load_stack_ports)
  KI_KAFKA_MAJOR="${KI_KAFKA_VERSION%%.*}"
  KI_KAFKA_LIBS="${KI_TOOLS}/kafka/${KI_KAFKA_VERSION}/libs"
  KI_KAFKA_CP="${KI_KAFKA_LIBS}/*"
}
ki_kafka_settings
KI_KAFKA_DIR="${KI_STATE}/kafka"
KI_KAFKA_PID="${KI_STATE}/kafka.pid"
KI_KAFKA_HEAP="${KAFKA_IDENTITY_KAFKA_HEAP:--Xmx512m -Xms256m}"
KI_AUTHORIZER_LOG_LEVEL="${KAFKA_IDENTITY_AUTHORIZER_LOG_LEVEL:-DEBUG}"   # DEBUG = allowed + denied, INFO = denied only

KI_ENVOY_DIR="${KI_STATE}/envoy"
KI_ENVOY_PID="${KI_STATE}/envoy.pid"
KI_CA_DIR="${KI_STATE}/ca"
KI_CA="${KI_CA_DIR}/ca.crt"
KI_CERTS="${KI_STATE}/certs"
KI_STACK_ENV="${KI_STATE}/stack.env"
KI_ADMIN_CONFIG="${KI_STATE}/admin.properties"

KI_PYTHON="${KI_TOOLS}/venv/bin/python"

ki_log() { printf '[%s] %s\n' "${KI_SCRIPT:-e2e}" "$*"; }
ki_die() { printf '[%s] ERROR: %s\n' "${KI_SCRIPT:-e2e}" "$*" >&2; exit 1; }

ki_require_python() {
  [[ -x "${KI_PYTHON}" ]] || ki_die "${KI_PYTHON} missing: run scripts/install-deps first"
}

ki_require_tools() {
  ki_require_python
  command -v java >/dev/null 2>&1 || ki_die "java not found (Kafka ${KI_KAFKA_VERSION} needs Java 17+)"
  [[ "${KI_KAFKA_VERSION}" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
    || ki_die "KAFKA_IDENTITY_KAFKA_VERSION=${KI_KAFKA_VERSION} is not a Kafka version (e.g. 3.9.2)"
  compgen -G "${KI_KAFKA_LIBS}/kafka_2.13-${KI_KAFKA_VERSION}.jar" >/dev/null \
    || ki_die "Kafka ${KI_KAFKA_VERSION} jars missing in ${KI_KAFKA_LIBS}: run scripts/install-deps --kafka-versions \"${KI_KAFKA_VERSION}\""
}

# ---- environment for Envoy (read at every (re)start) -------------------------
ki_envoy_settings() {
  KI_ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
  KI_ENVOY_BIN="${KI_TOOLS}/envoy/${KI_ENVOY_VERSION}/envoy"
  KI_WASM="${KAFKA_IDENTITY_WASM:-${KI_REPO}/target/wasm32-unknown-unknown/release/kafka_identity_filter.wasm}"
  # Which build of the filter Envoy runs: the .wasm, or the dynamic module (make native).
  KI_FILTER_KIND="${KAFKA_IDENTITY_FILTER_KIND:-wasm}"
  KI_NATIVE="${KAFKA_IDENTITY_NATIVE:-${KI_REPO}/target/native/libkafka_identity_native.so}"
  case "${KI_FILTER_KIND}" in
    wasm) KI_FILTER_FILE="${KI_WASM}"; KI_FILTER_LOGGER=wasm ;;
    native) KI_FILTER_FILE="${KI_NATIVE}"; KI_FILTER_LOGGER=dynamic_modules ;;
    *) ki_die "KAFKA_IDENTITY_FILTER_KIND: expected wasm or native, got '${KI_FILTER_KIND}'" ;;
  esac
  # Envoy loads the module from here (a copy: a rebuild never changes a running Envoy's file).
  KI_NATIVE_DIR="${KI_ENVOY_DIR}/native"
  KI_ECDS="${KAFKA_IDENTITY_ECDS:-0}"
  KI_FILTER_CONFIG="${KAFKA_IDENTITY_FILTER_CONFIG:-${KI_LOCAL}/filter-config.json}"
  KI_NO_FILTER="${KAFKA_IDENTITY_NO_FILTER:-0}"
  KI_ENVOY_LOG="${KI_ENVOY_DIR}/envoy.log"
  KI_ENVOY_WASM_LOG_LEVEL="${KAFKA_IDENTITY_ENVOY_WASM_LOG_LEVEL:-debug}"
  # Worker threads (each runs its own Wasm VM); an Istio sidecar has 2 by default.
  KI_ENVOY_CONCURRENCY="${KAFKA_IDENTITY_ENVOY_CONCURRENCY:-1}"
  [[ "${KI_ENVOY_CONCURRENCY}" =~ ^[1-9][0-9]*$ ]] \
    || ki_die "KAFKA_IDENTITY_ENVOY_CONCURRENCY: expected a number of worker threads (1, 2, ...), got '${KI_ENVOY_CONCURRENCY}'"
  KI_VM_ENV_FILES="${KAFKA_IDENTITY_VM_ENV_FILES:-}"
  KI_EXT_AUTHZ="${KAFKA_IDENTITY_EXT_AUTHZ:-none}"
  KI_EXT_AUTHZ_PORT="${KAFKA_IDENTITY_EXT_AUTHZ_PORT:-}"
  KI_ECDS_FILE="${KI_ENVOY_DIR}/kafka-identity-ecds.json"
  KI_VM_ENV_NAMES_FILE="${KI_ENVOY_DIR}/vm-env-names"
}

# ki_vm_env_parse: KAFKA_IDENTITY_VM_ENV_FILES="NAME=FILE ..." -> KI_VM_ENV_NAMES (the VM's
# environment variable names, host_env_keys) and KI_VM_ENV_ASSIGN (NAME=<file contents>, for
# Envoy's own environment). The values never enter the Envoy configuration.
ki_vm_env_parse() {
  KI_VM_ENV_NAMES=()
  KI_VM_ENV_ASSIGN=()
  local item name file
  for item in ${KI_VM_ENV_FILES}; do
    name="${item%%=*}"
    file="${item#*=}"
    [[ "${item}" == *=* && "${name}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] \
      || ki_die "KAFKA_IDENTITY_VM_ENV_FILES: expected NAME=FILE items, got '${item}'"
    [[ -f "${file}" ]] || ki_die "KAFKA_IDENTITY_VM_ENV_FILES: ${name}: no file ${file}"
    KI_VM_ENV_NAMES+=("${name}")
    KI_VM_ENV_ASSIGN+=("${name}=$(cat "${file}")")
  done
}

# ki_vm_env_args: --vm-env NAME for each name in KI_VM_ENV_NAMES (for envoy_config.py).
ki_vm_env_args() {
  local name
  KI_VM_ENV_ARGS=()
  for name in "${KI_VM_ENV_NAMES[@]}"; do KI_VM_ENV_ARGS+=(--vm-env "${name}"); done
}

# ---- processes ---------------------------------------------------------------
# ki_pid_alive PIDFILE MARKER: true if the pid in PIDFILE runs and its command line
# contains MARKER (so a recycled pid is never mistaken for ours).
ki_pid_alive() {
  local pidfile="$1" marker="$2" pid
  [[ -f "${pidfile}" ]] || return 1
  pid="$(cat "${pidfile}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/${pid}/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -qF -- "${marker}"
}

# ki_stop PIDFILE MARKER NAME: SIGTERM, wait up to 20 s, then SIGKILL; removes PIDFILE.
ki_stop() {
  local pidfile="$1" marker="$2" name="$3" pid i
  if ! [[ -f "${pidfile}" ]]; then
    ki_log "${name}: not running (no pid file)"
    return 0
  fi
  pid="$(cat "${pidfile}")"
  if ! ki_pid_alive "${pidfile}" "${marker}"; then
    ki_log "${name}: pid ${pid} from ${pidfile} is not running (or is not ours); removing stale pid file"
    rm -f "${pidfile}"
    return 0
  fi
  ki_log "${name}: stopping pid ${pid}"
  kill -TERM "${pid}" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    ki_pid_alive "${pidfile}" "${marker}" || break
    sleep 0.1
  done
  if ki_pid_alive "${pidfile}" "${marker}"; then
    ki_log "${name}: still running after 20 s, sending SIGKILL"
    kill -KILL "${pid}" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "${pidfile}"
}

# Markers used to recognise our processes (their command lines contain these paths).
ki_kafka_marker() { printf '%s' "${KI_KAFKA_DIR}/server.properties"; }
ki_envoy_marker() { printf '%s' "${KI_ENVOY_DIR}/envoy.yaml"; }

ki_port_free() { # port -> 0 if nothing listens on 127.0.0.1:port and it can be bound
  "${KI_PYTHON}" - "$1" <<'PY'
import socket, sys
s = socket.socket()
# SO_REUSEADDR like the servers themselves: TIME_WAIT leftovers do not count, listeners do.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

ki_check_ports() { # name=port ...
  local kv name port busy=0
  for kv in "$@"; do
    name="${kv%%=*}"; port="${kv#*=}"
    if ! ki_port_free "${port}"; then
      printf '[%s] ERROR: port %s (%s) on 127.0.0.1 is busy:\n' "${KI_SCRIPT:-e2e}" "${port}" "${name}" >&2
      ss -ltnp "sport = :${port}" 2>/dev/null | tail -n +2 >&2 || true
      busy=1
    fi
  done
  [[ "${busy}" -eq 0 ]] || ki_die "free the port(s) above or override them (KAFKA_IDENTITY_*_PORT, see e2e/local/README.md)"
}

# ---- Kafka tools ---------------------------------------------------------------
# ki_kafka_class TOOL: the main class of one of Kafka's tools in KI_KAFKA_VERSION. Kafka 4.0
# moved AclCommand and ConsoleProducer from Scala (kafka.*) to org.apache.kafka.tools.
ki_kafka_class() {
  case "$1:${KI_KAFKA_MAJOR}" in
    StorageTool:*) echo kafka.tools.StorageTool ;;
    AclCommand:3) echo kafka.admin.AclCommand ;;
    AclCommand:*) echo org.apache.kafka.tools.AclCommand ;;
    ConsoleProducer:3) echo kafka.tools.ConsoleProducer ;;
    ConsoleProducer:*) echo org.apache.kafka.tools.ConsoleProducer ;;
    ConsoleConsumer:*) echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    TopicCommand:*) echo org.apache.kafka.tools.TopicCommand ;;
    *) ki_die "ki_kafka_class: unknown tool $1" ;;
  esac
}

# ki_kafka_log_opts broker|tools: the JVM flag that points Kafka's logging at our config:
# Kafka 3.x logs through reload4j (log4j 1.x properties), 4.x through log4j2 (XML).
ki_kafka_log_opts() {
  if [[ "${KI_KAFKA_MAJOR}" -lt 4 ]]; then
    printf '%s' "-Dlog4j.configuration=file:${KI_LOCAL}/$([[ "$1" == broker ]] && echo kafka || echo tools)-log4j.properties"
  else
    printf '%s' "-Dlog4j2.configurationFile=${KI_LOCAL}/$([[ "$1" == broker ]] && echo kafka || echo tools)-log4j2.xml"
  fi
}

# ki_kafka_tool TOOL ARGS...: runs one of Kafka's tools (a name for ki_kafka_class, or a main
# class) with the installed classpath, logging to stderr at WARN.
ki_kafka_tool() {
  local cls="$1"; shift
  [[ "${cls}" == *.* ]] || cls="$(ki_kafka_class "${cls}")"
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    "$(ki_kafka_log_opts tools)" \
    -cp "${KI_KAFKA_CP}" "${cls}" "$@"
}

# ---- Envoy -------------------------------------------------------------------
# The configuration is rendered from data by envoy_config.py (see its --help).

# ki_envoy_write_ecds CONFIG.json: (re)writes the extension config Envoy watches, atomically.
# The VM's environment variable names are the ones Envoy was started with.
ki_envoy_write_ecds() {
  ki_vm_env_args
  "${KI_PYTHON}" "${KI_LOCAL}/envoy_config.py" ecds --out "${KI_ECDS_FILE}" \
    --kind "${KI_FILTER_KIND}" --wasm "${KI_WASM}" --filter-config "$1" "${KI_VM_ENV_ARGS[@]}" \
    || ki_die "cannot render the filter's extension config from $1"
}

ki_envoy_write_config() {
  ki_envoy_settings
  ki_vm_env_parse
  ki_vm_env_args
  mkdir -p "${KI_ENVOY_DIR}"
  local args=(bootstrap --out "${KI_ENVOY_DIR}/envoy.yaml" --version "${KI_ENVOY_VERSION}"
    --host "${KI_HOST}" --envoy-port "${KI_ENVOY_PORT}" --admin-port "${KI_ENVOY_ADMIN_PORT}"
    --mesh-port "${KI_MESH_PORT}" --certs "${KI_CERTS}" --ca "${KI_CA}"
    --peer-cert-filter-state "${KAFKA_IDENTITY_PEER_CERT_FILTER_STATE:-auto}")
  if [[ -n "${KAFKA_IDENTITY_WAYPOINT_PEER:-}" ]]; then
    args+=(--waypoint-peer "${KAFKA_IDENTITY_WAYPOINT_PEER}")
  fi
  if [[ "${KI_NO_FILTER}" == "1" ]]; then
    args+=(--filter none)
  else
    ki_check_filter_file
    [[ -f "${KI_FILTER_CONFIG}" ]] || ki_die "filter config not found: ${KI_FILTER_CONFIG}"
    if [[ "${KI_FILTER_KIND}" == "native" ]]; then
      ki_native_install "${KI_NATIVE}"
      args+=(--kind native)
    fi
    "${KI_PYTHON}" -c 'import json,sys; json.load(open(sys.argv[1]))' "${KI_FILTER_CONFIG}" 2>/dev/null \
      || ki_die "filter config ${KI_FILTER_CONFIG} is not valid JSON"
    # The names of the VM's environment variables, for filter-update (values stay in Envoy's
    # environment and cannot change while it runs).
    : >"${KI_VM_ENV_NAMES_FILE}"
    if ((${#KI_VM_ENV_NAMES[@]})); then printf '%s\n' "${KI_VM_ENV_NAMES[@]}" >"${KI_VM_ENV_NAMES_FILE}"; fi
    if [[ "${KI_ECDS}" == "1" ]]; then
      ki_envoy_write_ecds "${KI_FILTER_CONFIG}"
      args+=(--filter ecds --ecds-file "${KI_ECDS_FILE}")
    else
      args+=(--filter inline --wasm "${KI_WASM}" --filter-config "${KI_FILTER_CONFIG}" "${KI_VM_ENV_ARGS[@]}")
    fi
    case "${KI_EXT_AUTHZ}" in
      none) ;;
      before|after)
        [[ "${KI_EXT_AUTHZ_PORT}" =~ ^[0-9]+$ ]] || ki_die "KAFKA_IDENTITY_EXT_AUTHZ=${KI_EXT_AUTHZ} needs KAFKA_IDENTITY_EXT_AUTHZ_PORT (the authorization server's port)"
        args+=(--ext-authz "${KI_EXT_AUTHZ}" --ext-authz-port "${KI_EXT_AUTHZ_PORT}") ;;
      *) ki_die "KAFKA_IDENTITY_EXT_AUTHZ: expected none, before or after, got '${KI_EXT_AUTHZ}'" ;;
    esac
  fi
  if [[ "${KI_BENCH}" == "1" ]]; then
    args+=(--bench-plain-port "${KI_ENVOY_PLAIN_PORT}" --plaintext-port "${KI_PLAINTEXT_PORT}")
    if [[ -n "${KI_BENCH_SIGNING}" ]]; then
      # Signed mode: the same filter in its own VM, signing with the bench key (from Envoy's
      # environment, see ki_envoy_start), to the broker's SIGNED listener.
      args+=(--bench-signed-port "${KI_ENVOY_SIGNED_PORT}" --signed-port "${KI_SIGNED_PORT}"
        --signed-wasm "${KI_WASM}" --signed-filter-config "${KI_BENCH_SIGNING}/filter-config.json"
        --signed-vm-env KAFKA_IDENTITY_BENCH_SIGNING_KEY)
    fi
    if [[ -n "${KI_BENCH_NULL_WASM}" ]]; then
      [[ -f "${KI_BENCH_NULL_WASM}" ]] || ki_die "KAFKA_IDENTITY_BENCH_NULL_WASM: no file ${KI_BENCH_NULL_WASM}"
      args+=(--bench-null-port "${KI_ENVOY_NULL_PORT}" --null-wasm "${KI_BENCH_NULL_WASM}"
        --null-plaintext-port "${KI_NULL_PLAINTEXT_PORT}"
        --null-calls "${KAFKA_IDENTITY_BENCH_NULL_CALLS:-0}")
    fi
    if [[ -n "${KI_BENCH_NATIVE}" ]]; then
      [[ -f "${KI_BENCH_NATIVE}" ]] || ki_die "KAFKA_IDENTITY_BENCH_NATIVE: no file ${KI_BENCH_NATIVE} (make native)"
      # One module file per Envoy: a main listener on the native kind must run the same build.
      if [[ "${KI_FILTER_KIND}" == "native" && "${KI_NO_FILTER}" != "1" ]] && ! cmp -s "${KI_NATIVE}" "${KI_BENCH_NATIVE}"; then
        ki_die "KAFKA_IDENTITY_BENCH_NATIVE (${KI_BENCH_NATIVE}) differs from KAFKA_IDENTITY_NATIVE (${KI_NATIVE}): Envoy loads one module file"
      fi
      ki_native_install "${KI_BENCH_NATIVE}"
      args+=(--bench-native-port "${KI_ENVOY_NATIVE_PORT}" --native-port "${KI_NATIVE_PORT}"
        --native-filter-config "${KI_FILTER_CONFIG}")
      if [[ -n "${KI_BENCH_SIGNING}" ]]; then
        # The module reads the key named by signing.private_key_env from Envoy's own
        # environment, where ki_bench_env puts it for the signed path's VM.
        args+=(--bench-native-signed-port "${KI_ENVOY_NATIVE_SIGNED_PORT}" --native-signed-port "${KI_NATIVE_SIGNED_PORT}")
      fi
    fi
  fi
  "${KI_PYTHON}" "${KI_LOCAL}/envoy_config.py" "${args[@]}" || ki_die "cannot render ${KI_ENVOY_DIR}/envoy.yaml"
}

# ki_native_install FILE: copies the dynamic module to where Envoy finds it by name
# (ENVOY_DYNAMIC_MODULES_SEARCH_PATH=KI_NATIVE_DIR), atomically.
ki_native_install() {
  mkdir -p "${KI_NATIVE_DIR}"
  cp "$1" "${KI_NATIVE_DIR}/libkafka_identity_native.so.tmp"
  mv "${KI_NATIVE_DIR}/libkafka_identity_native.so.tmp" "${KI_NATIVE_DIR}/libkafka_identity_native.so"
}

# ki_check_filter_file: the build of the filter KAFKA_IDENTITY_FILTER_KIND picks exists.
ki_check_filter_file() {
  if [[ "${KI_FILTER_KIND}" == "native" ]]; then
    [[ -f "${KI_NATIVE}" ]] || ki_die "native filter not found: ${KI_NATIVE} (make native, or set KAFKA_IDENTITY_NATIVE)"
  else
    [[ -f "${KI_WASM}" ]] || ki_die "wasm filter not found: ${KI_WASM} (build it, set KAFKA_IDENTITY_WASM, or set KAFKA_IDENTITY_NO_FILTER=1)"
  fi
}

# ki_envoy_prepare: write envoy.yaml from the current env and check it with --mode validate
# (a running Envoy is not affected: it has read its config already).
ki_envoy_prepare() {
  ki_envoy_settings
  [[ -x "${KI_ENVOY_BIN}" ]] || ki_die "envoy ${KI_ENVOY_VERSION} not installed at ${KI_ENVOY_BIN}: run scripts/install-deps --envoy-versions \"${KI_ENVOY_VERSION}\""
  ki_envoy_write_config
  ki_log "envoy ${KI_ENVOY_VERSION}: validating config"
  # The filter parses its configuration (and reads its VM environment) during validation.
  ki_bench_env
  if ! env "${KI_VM_ENV_ASSIGN[@]}" "${KI_BENCH_ENV_ASSIGN[@]}" ENVOY_DYNAMIC_MODULES_SEARCH_PATH="${KI_NATIVE_DIR}" \
        "${KI_ENVOY_BIN}" --mode validate -c "${KI_ENVOY_DIR}/envoy.yaml" \
        --disable-hot-restart >"${KI_ENVOY_DIR}/validate.log" 2>&1; then
    tail -n 30 "${KI_ENVOY_DIR}/validate.log" >&2
    ki_die "envoy ${KI_ENVOY_VERSION} rejected ${KI_ENVOY_DIR}/envoy.yaml (see above; full output in ${KI_ENVOY_DIR}/validate.log)"
  fi
}

ki_envoy_start() {
  if ki_pid_alive "${KI_ENVOY_PID}" "$(ki_envoy_marker)"; then
    ki_die "envoy already running (pid $(cat "${KI_ENVOY_PID}")); use e2e/local/envoy-restart"
  fi
  ki_envoy_prepare
  ki_check_ports "envoy=${KI_ENVOY_PORT}" "envoy-admin=${KI_ENVOY_ADMIN_PORT}"
  [[ "${KI_BENCH}" != "1" ]] || ki_check_ports "envoy-plain=${KI_ENVOY_PLAIN_PORT}"
  [[ "${KI_BENCH}" != "1" || -z "${KI_BENCH_SIGNING}" ]] || ki_check_ports "envoy-signed=${KI_ENVOY_SIGNED_PORT}"
  [[ "${KI_BENCH}" != "1" || -z "${KI_BENCH_NULL_WASM}" ]] \
    || ki_check_ports "envoy-null=${KI_ENVOY_NULL_PORT}" "envoy-null-sasl=$((KI_ENVOY_NULL_PORT + 1))"
  [[ "${KI_BENCH}" != "1" || -z "${KI_BENCH_NATIVE}" ]] || ki_check_ports "envoy-native=${KI_ENVOY_NATIVE_PORT}"
  [[ "${KI_BENCH}" != "1" || -z "${KI_BENCH_NATIVE}" || -z "${KI_BENCH_SIGNING}" ]] \
    || ki_check_ports "envoy-native-signed=${KI_ENVOY_NATIVE_SIGNED_PORT}"
  # Both filters' loggers when the bench runs the module beside the .wasm.
  local log_levels="${KI_FILTER_LOGGER}:${KI_ENVOY_WASM_LOG_LEVEL}"
  [[ "${KI_BENCH}" != "1" || -z "${KI_BENCH_NATIVE}" || "${KI_FILTER_LOGGER}" == dynamic_modules ]] \
    || log_levels+=",dynamic_modules:${KI_ENVOY_WASM_LOG_LEVEL}"
  local filter_desc="${KI_FILTER_KIND} ${KI_FILTER_FILE}, config ${KI_FILTER_CONFIG}"
  [[ "${KI_NO_FILTER}" == "1" ]] && filter_desc="NO filter (KAFKA_IDENTITY_NO_FILTER=1)"
  ki_log "envoy ${KI_ENVOY_VERSION}: starting on ${KI_HOST}:${KI_ENVOY_PORT} (admin ${KI_ENVOY_ADMIN_PORT}, ${KI_ENVOY_CONCURRENCY} worker(s)), ${filter_desc}"
  : >"${KI_ENVOY_LOG}"
  # VM environment variables (e.g. a signing key) reach the VM from Envoy's environment.
  ki_bench_env
  setsid env "${KI_VM_ENV_ASSIGN[@]}" "${KI_BENCH_ENV_ASSIGN[@]}" ENVOY_DYNAMIC_MODULES_SEARCH_PATH="${KI_NATIVE_DIR}" \
      "${KI_ENVOY_BIN}" -c "${KI_ENVOY_DIR}/envoy.yaml" \
      --disable-hot-restart --concurrency "${KI_ENVOY_CONCURRENCY}" \
      -l info --component-log-level "${log_levels}" \
      --log-path "${KI_ENVOY_LOG}" \
      </dev/null >"${KI_ENVOY_DIR}/stdout.log" 2>&1 &
  echo $! >"${KI_ENVOY_PID}"
  local i t0=${SECONDS}
  # Until the background child has exec'd setsid and Envoy, its command line is this
  # script's, without the marker: ki_pid_alive would call a starting Envoy dead, and the
  # pid file would be removed with Envoy still running. Wait for the exec (bounded).
  for ((i = 0; i < 100; i++)); do
    ki_pid_alive "${KI_ENVOY_PID}" "$(ki_envoy_marker)" && break
    kill -0 "$(cat "${KI_ENVOY_PID}")" 2>/dev/null || break
    sleep 0.1
  done
  for ((i = 0; i < 300; i++)); do
    if ! ki_pid_alive "${KI_ENVOY_PID}" "$(ki_envoy_marker)"; then
      tail -n 40 "${KI_ENVOY_LOG}" "${KI_ENVOY_DIR}/stdout.log" >&2 || true
      rm -f "${KI_ENVOY_PID}"
      ki_die "envoy exited during startup (log tail above)"
    fi
    if [[ "$(curl -s -m 1 "http://${KI_HOST}:${KI_ENVOY_ADMIN_PORT}/ready" 2>/dev/null)" == LIVE* ]]; then
      ki_log "envoy ${KI_ENVOY_VERSION}: ready after $((SECONDS - t0)) s (pid $(cat "${KI_ENVOY_PID}"))"
      return 0
    fi
    sleep 0.1
  done
  tail -n 40 "${KI_ENVOY_LOG}" >&2 || true
  ki_die "envoy not ready after 30 s (log tail above)"
}

# ki_bench_env: KI_BENCH_ENV_ASSIGN, the bench signing key for Envoy's environment (the signed
# path's VM reads it as KAFKA_IDENTITY_BENCH_SIGNING_KEY, host_env_keys).
ki_bench_env() {
  KI_BENCH_ENV_ASSIGN=()
  if [[ "${KI_BENCH}" == "1" && -n "${KI_BENCH_SIGNING}" ]]; then
    KI_BENCH_ENV_ASSIGN+=("KAFKA_IDENTITY_BENCH_SIGNING_KEY=$(cat "${KI_BENCH_SIGNING}/key.pem")")
  fi
}

ki_envoy_stop() { ki_stop "${KI_ENVOY_PID}" "$(ki_envoy_marker)" envoy; }

# ---- stack.env -----------------------------------------------------------------
ki_write_stack_env() {
  ki_envoy_settings
  local wasm="${KI_WASM}" fcfg="${KI_FILTER_CONFIG}"
  [[ "${KI_FILTER_KIND}" == "native" ]] && wasm=""
  if [[ "${KI_NO_FILTER}" == "1" ]]; then wasm=""; fcfg=""; fi
  cat >"${KI_STACK_ENV}.tmp" <<EOF
# written by e2e/local (stack-up / envoy-restart); source it: set -a; . ${KI_STACK_ENV}; set +a
KAFKA_IDENTITY_BOOTSTRAP=${KI_HOST}:${KI_ENVOY_PORT}
KAFKA_IDENTITY_BROKER=${KI_HOST}:${KI_DIRECT_PORT}
KAFKA_IDENTITY_MESH_LISTENER=${KI_HOST}:${KI_MESH_PORT}
KAFKA_IDENTITY_CONTROLLER=${KI_HOST}:${KI_CONTROLLER_PORT}
KAFKA_IDENTITY_PLAINTEXT_RESERVED=${KI_HOST}:${KI_PLAINTEXT_PORT}
KAFKA_IDENTITY_CA=${KI_CA}
KAFKA_IDENTITY_CERTS=${KI_CERTS}
KAFKA_IDENTITY_ADMIN_CONFIG=${KI_ADMIN_CONFIG}
KAFKA_IDENTITY_CLIENT_CONFIGS=${KI_STATE}/clients
KAFKA_IDENTITY_KAFKA_CLASSPATH=${KI_KAFKA_CP}
KAFKA_IDENTITY_KAFKA_VERSION=${KI_KAFKA_VERSION}
KAFKA_IDENTITY_KAFKA_LOG_OPTS=$(ki_kafka_log_opts tools)
KAFKA_IDENTITY_KAFKA_CONSOLE_PRODUCER=$(ki_kafka_class ConsoleProducer)
KAFKA_IDENTITY_KAFKA_CONSOLE_CONSUMER=$(ki_kafka_class ConsoleConsumer)
KAFKA_IDENTITY_KAFKA_LOG=${KI_KAFKA_DIR}/logs/server.log
KAFKA_IDENTITY_AUTHORIZER_LOG=${KI_KAFKA_DIR}/authorizer.log
KAFKA_IDENTITY_ENVOY_ADMIN=${KI_HOST}:${KI_ENVOY_ADMIN_PORT}
KAFKA_IDENTITY_ENVOY_LOG=${KI_ENVOY_LOG}
KAFKA_IDENTITY_ENVOY_VERSION=${KI_ENVOY_VERSION}
KAFKA_IDENTITY_ENVOY_CONCURRENCY=${KI_ENVOY_CONCURRENCY}
KAFKA_IDENTITY_ENVOY_CONFIG=${KI_ENVOY_DIR}/envoy.yaml
KAFKA_IDENTITY_FILTER_ENABLED=$([[ "${KI_NO_FILTER}" == "1" ]] && echo 0 || echo 1)
KAFKA_IDENTITY_WASM_LOADED=${wasm}
KAFKA_IDENTITY_FILTER_KIND=${KI_FILTER_KIND}
KAFKA_IDENTITY_FILTER_CONFIG_LOADED=${fcfg}
KAFKA_IDENTITY_TOPIC=orders
KAFKA_IDENTITY_GROUP=orders-readers
KAFKA_IDENTITY_STATE=${KI_STATE}
KAFKA_IDENTITY_MESH_PORT=${KI_MESH_PORT}
KAFKA_IDENTITY_CONTROLLER_PORT=${KI_CONTROLLER_PORT}
KAFKA_IDENTITY_DIRECT_PORT=${KI_DIRECT_PORT}
KAFKA_IDENTITY_PLAINTEXT_PORT=${KI_PLAINTEXT_PORT}
KAFKA_IDENTITY_ENVOY_PORT=${KI_ENVOY_PORT}
KAFKA_IDENTITY_ENVOY_ADMIN_PORT=${KI_ENVOY_ADMIN_PORT}
EOF
  if [[ "${KI_BENCH}" == "1" ]]; then
    cat >>"${KI_STACK_ENV}.tmp" <<EOF
KAFKA_IDENTITY_BENCH=1
KAFKA_IDENTITY_BOOTSTRAP_NOFILTER=${KI_HOST}:${KI_ENVOY_PLAIN_PORT}
KAFKA_IDENTITY_PLAINTEXT_LISTENER=${KI_HOST}:${KI_PLAINTEXT_PORT}
KAFKA_IDENTITY_ENVOY_PLAIN_PORT=${KI_ENVOY_PLAIN_PORT}
EOF
    if [[ -n "${KI_BENCH_NULL_WASM}" ]]; then
      cat >>"${KI_STACK_ENV}.tmp" <<EOF
KAFKA_IDENTITY_BENCH_NULL_WASM=${KI_BENCH_NULL_WASM}
KAFKA_IDENTITY_BOOTSTRAP_NULL=${KI_HOST}:${KI_ENVOY_NULL_PORT}
KAFKA_IDENTITY_BOOTSTRAP_NULL_SASL=${KI_HOST}:$((KI_ENVOY_NULL_PORT + 1))
KAFKA_IDENTITY_ENVOY_NULL_PORT=${KI_ENVOY_NULL_PORT}
KAFKA_IDENTITY_NULL_PLAINTEXT_PORT=${KI_NULL_PLAINTEXT_PORT}
EOF
    fi
    if [[ -n "${KI_BENCH_NATIVE}" ]]; then
      cat >>"${KI_STACK_ENV}.tmp" <<EOF
KAFKA_IDENTITY_BENCH_NATIVE=${KI_BENCH_NATIVE}
KAFKA_IDENTITY_BOOTSTRAP_NATIVE=${KI_HOST}:${KI_ENVOY_NATIVE_PORT}
KAFKA_IDENTITY_NATIVE_LISTENER=${KI_HOST}:${KI_NATIVE_PORT}
KAFKA_IDENTITY_NATIVE_PORT=${KI_NATIVE_PORT}
KAFKA_IDENTITY_ENVOY_NATIVE_PORT=${KI_ENVOY_NATIVE_PORT}
EOF
      if [[ -n "${KI_BENCH_SIGNING}" ]]; then
        cat >>"${KI_STACK_ENV}.tmp" <<EOF
KAFKA_IDENTITY_BOOTSTRAP_NATIVE_SIGNED=${KI_HOST}:${KI_ENVOY_NATIVE_SIGNED_PORT}
KAFKA_IDENTITY_NATIVE_SIGNED_LISTENER=${KI_HOST}:${KI_NATIVE_SIGNED_PORT}
KAFKA_IDENTITY_NATIVE_SIGNED_PORT=${KI_NATIVE_SIGNED_PORT}
KAFKA_IDENTITY_ENVOY_NATIVE_SIGNED_PORT=${KI_ENVOY_NATIVE_SIGNED_PORT}
EOF
      fi
    fi
    if [[ -n "${KI_BENCH_SIGNING}" ]]; then
      cat >>"${KI_STACK_ENV}.tmp" <<EOF
KAFKA_IDENTITY_BENCH_SIGNING=${KI_BENCH_SIGNING}
KAFKA_IDENTITY_BOOTSTRAP_SIGNED=${KI_HOST}:${KI_ENVOY_SIGNED_PORT}
KAFKA_IDENTITY_SIGNED_LISTENER=${KI_HOST}:${KI_SIGNED_PORT}
KAFKA_IDENTITY_SIGNED_PORT=${KI_SIGNED_PORT}
KAFKA_IDENTITY_ENVOY_SIGNED_PORT=${KI_ENVOY_SIGNED_PORT}
EOF
    fi
  fi
  mv -f "${KI_STACK_ENV}.tmp" "${KI_STACK_ENV}"
}

# ki_load_stack_ports: take the ports of the running stack from stack.env (envoy-restart
# must reuse them even when the caller's environment does not repeat the overrides).
ki_load_stack_ports() {
  [[ -f "${KI_STACK_ENV}" ]] || return 0
  local key val
  while IFS='=' read -r key val; do
    case "${key}" in
      KAFKA_IDENTITY_MESH_PORT) KI_MESH_PORT="${val}" ;;
      KAFKA_IDENTITY_CONTROLLER_PORT) KI_CONTROLLER_PORT="${val}" ;;
      KAFKA_IDENTITY_DIRECT_PORT) KI_DIRECT_PORT="${val}" ;;
      KAFKA_IDENTITY_PLAINTEXT_PORT) KI_PLAINTEXT_PORT="${val}" ;;
      KAFKA_IDENTITY_ENVOY_PORT) KI_ENVOY_PORT="${val}" ;;
      KAFKA_IDENTITY_ENVOY_ADMIN_PORT) KI_ENVOY_ADMIN_PORT="${val}" ;;
      KAFKA_IDENTITY_ENVOY_PLAIN_PORT) KI_ENVOY_PLAIN_PORT="${val}" ;;
      KAFKA_IDENTITY_BENCH) KI_BENCH="${val}" ;;
      KAFKA_IDENTITY_KAFKA_VERSION) KI_KAFKA_VERSION="${val}" ;;
      KAFKA_IDENTITY_BENCH_SIGNING) KI_BENCH_SIGNING="${val}" ;;
      KAFKA_IDENTITY_SIGNED_PORT) KI_SIGNED_PORT="${val}" ;;
      KAFKA_IDENTITY_ENVOY_SIGNED_PORT) KI_ENVOY_SIGNED_PORT="${val}" ;;
      KAFKA_IDENTITY_BENCH_NULL_WASM) KI_BENCH_NULL_WASM="${val}" ;;
      KAFKA_IDENTITY_ENVOY_NULL_PORT) KI_ENVOY_NULL_PORT="${val}" ;;
      KAFKA_IDENTITY_NULL_PLAINTEXT_PORT) KI_NULL_PLAINTEXT_PORT="${val}" ;;
      KAFKA_IDENTITY_BENCH_NATIVE) KI_BENCH_NATIVE="${val}" ;;
      KAFKA_IDENTITY_NATIVE_PORT) KI_NATIVE_PORT="${val}" ;;
      KAFKA_IDENTITY_NATIVE_SIGNED_PORT) KI_NATIVE_SIGNED_PORT="${val}" ;;
      KAFKA_IDENTITY_ENVOY_NATIVE_PORT) KI_ENVOY_NATIVE_PORT="${val}" ;;
      KAFKA_IDENTITY_ENVOY_NATIVE_SIGNED_PORT) KI_ENVOY_NATIVE_SIGNED_PORT="${val}" ;;
    esac
  done <"${KI_STACK_ENV}"
  ki_kafka_settings
}
