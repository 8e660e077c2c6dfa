// Runs the filter's .wasm outside Envoy, in Node's V8, through the host calls Envoy would
// make for one connection after another (a new context, the client's ApiVersions, the
// broker's SASL answers, a Metadata and a Produce round trip, the close), and reports the
// time per connection spent inside the VM plus this script's host functions. With
// `node --perf-basic-prof` and `perf record`, a profile names the filter's Rust functions
// (build the .wasm with its name section: see bench/vm/README.md).
//
//   node bench/vm/connections.mjs FILTER.wasm [--connections N] [--signed] [--log-level N]
//                                             [--distinct-certs N]
//
// The host functions answer from memory (no Envoy), so this measures the filter's code in
// V8, not Envoy's side of the calls; docs/design.md "Cost per connection" puts both together.

import { readFileSync } from "node:fs";
import { createHash, generateKeyPairSync } from "node:crypto";

const args = process.argv.slice(2);
if (args.length < 1 || args[0].startsWith("-")) {
  console.error("usage: node bench/vm/connections.mjs FILTER.wasm [--connections N] [--signed] [--log-level N] [--distinct-certs N]");
  process.exit(2);
}
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const CONNECTIONS = Number(opt("--connections", "20000"));
const SIGNED = args.includes("--signed");
const LOG_LEVEL = Number(opt("--log-level", "2")); // proxy-wasm: 2 info, 3 warn
const DISTINCT_CERTS = Number(opt("--distinct-certs", "1"));

const BUF = { DOWNSTREAM: 2, UPSTREAM: 3, PLUGIN_CONFIGURATION: 7, VM_CONFIGURATION: 6 };
const HANDSHAKE_ID = 2147483640;
const AUTHENTICATE_ID = 2147483641;
const PRODUCER = "spiffe://cluster.local/ns/apps/sa/producer";

// ---- Kafka frames (hand-encoded like bench/kafka_raw.py) ---------------------------------
const i16 = (v) => { const b = Buffer.alloc(2); b.writeInt16BE(v); return b; };
const i32 = (v) => { const b = Buffer.alloc(4); b.writeInt32BE(v); return b; };
const i64 = (v) => { const b = Buffer.alloc(8); b.writeBigInt64BE(BigInt(v)); return b; };
const str = (s) => Buffer.concat([i16(s.length), Buffer.from(s)]);
const frame = (...parts) => { const body = Buffer.concat(parts); return Buffer.concat([i32(body.length), body]); };
const request = (key, version, corr, body) => frame(i16(key), i16(version), i32(corr), str("bench"), body);

const apiVersions = request(18, 2, 1, Buffer.alloc(0));
const metadata = request(3, 8, 2, Buffer.concat([i32(1), str("bench-churn"), Buffer.from([0, 0, 0])]));
const produce = request(0, 8, 3, Buffer.concat([i16(-1), i16(-1), i32(30000), i32(1), str("bench-churn"),
  i32(1), i32(0), i32(120), Buffer.alloc(120, 0x5a)]));
const saslAnswers = Buffer.concat([
  // SaslHandshake v1: error 0, mechanisms ["OAUTHBEARER"]
  frame(i32(HANDSHAKE_ID), i16(0), i32(1), str("OAUTHBEARER")),
  // SaslAuthenticate v2 (flexible): header tag section, error 0, null message, empty auth
  // bytes, session lifetime 1 h, tag section
  frame(i32(AUTHENTICATE_ID), Buffer.from([0]), i16(0), Buffer.from([0]), Buffer.from([1]),
    i64(3_600_000), Buffer.from([0])),
]);
const apiVersionsAnswer = frame(i32(1), i16(0), i32(0), i32(0));
const metadataAnswer = frame(i32(2), Buffer.alloc(60, 0));
const produceAnswer = frame(i32(3), Buffer.alloc(40, 0));

// ---- certificates: Istio-style (empty subject, SPIFFE URI SAN), from Python's cryptography
// would need a subprocess; a fixed test certificate from the e2e stack is read instead.
function certificates() {
  const dir = new URL("../.state/certs/", import.meta.url);
  const pem = readFileSync(new URL("apps.producer.crt", dir));
  const out = [];
  for (let i = 0; i < DISTINCT_CERTS; i++) {
    // The digest is what the filter caches by; the same PEM under distinct digests makes
    // every connection a cache miss when --distinct-certs is the connection count.
    const digest = createHash("sha256").update(pem).update(String(i)).digest("hex");
    out.push({ pem, digest: Buffer.from(digest) });
  }
  return out;
}

function filterConfig() {
  const config = { stat_prefix: "kafka_identity",
    identity: { sources: ["spiffe"], spiffe: { trust_domains: ["cluster.local"] } } };
  if (SIGNED) {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    config.signing = { algorithm: "ES256", key_id: "k1", issuer: "kafka-identity", audience: "kafka",
      private_key_pem: privateKey.export({ type: "pkcs8", format: "pem" }) };
  }
  return Buffer.from(JSON.stringify(config));
}

// ---- the host --------------------------------------------------------------------------
let instance;
let memory;
const bufs = { [BUF.PLUGIN_CONFIGURATION]: filterConfig(), [BUF.VM_CONFIGURATION]: Buffer.alloc(0) };
let props = {};
const counts = { hostCalls: 0, logs: 0, closes: 0 };
const view = () => new DataView(memory.buffer);
const bytes = () => new Uint8Array(memory.buffer);

function giveToVm(data, ptrPtr, sizePtr) {
  const ptr = data.length ? instance.exports.malloc(data.length) : 0;
  if (data.length) bytes().set(data, ptr);
  view().setUint32(ptrPtr, ptr, true);
  view().setUint32(sizePtr, data.length, true);
}

const env = new Proxy({
  proxy_log: (level, ptr, len) => {
    counts.hostCalls++;
    counts.logs++;
    if (level >= 3) console.error(`[vm ${level}] ${Buffer.from(bytes().slice(ptr, ptr + len))}`);
    return 0;
  },
  proxy_get_log_level: (p) => { counts.hostCalls++; view().setUint32(p, LOG_LEVEL, true); return 0; },
  proxy_get_current_time_nanoseconds: (p) => {
    counts.hostCalls++;
    view().setBigUint64(p, BigInt(Date.now()) * 1000000n, true);
    return 0;
  },
  proxy_get_buffer_bytes: (type, start, max, pp, sp) => {
    counts.hostCalls++;
    [start, max] = [start >>> 0, max >>> 0]; // usize arrives as a signed i32
    const b = bufs[type];
    if (!b) return 1;
    giveToVm(b.subarray(start, Math.min(b.length, start + max)), pp, sp);
    return 0;
  },
  proxy_set_buffer_bytes: (type, start, size, ptr, len) => {
    counts.hostCalls++;
    [start, size, ptr, len] = [start >>> 0, size >>> 0, ptr >>> 0, len >>> 0];
    const b = bufs[type];
    const data = Buffer.from(bytes().slice(ptr, ptr + len));
    if (start === 0) bufs[type] = Buffer.concat([data, b.subarray(Math.min(size, b.length))]);
    else if (start >= b.length) bufs[type] = Buffer.concat([b, data]);
    else return 2;
    return 0;
  },
  proxy_get_property: (ptr, len, pp, sp) => {
    counts.hostCalls++;
    [ptr, len] = [ptr >>> 0, len >>> 0];
    const key = Buffer.from(bytes().slice(ptr, ptr + len)).toString().split("\0").join(".");
    const value = props[key];
    if (value === undefined) return 1;
    giveToVm(value, pp, sp);
    return 0;
  },
  proxy_define_metric: (type, ptr, len, idp) => { view().setUint32(idp, 1, true); return 0; },
  proxy_increment_metric: () => { counts.hostCalls++; return 0; },
  proxy_close_stream: () => { counts.closes++; return 0; },
  proxy_set_tick_period_milliseconds: () => 0,
  proxy_set_effective_context: () => 0,
  proxy_done: () => 0,
}, { get: (target, name) => target[name] ?? (() => 0) });

const wasi = {
  environ_sizes_get: (countPtr, sizePtr) => { view().setUint32(countPtr, 0, true); view().setUint32(sizePtr, 0, true); return 0; },
  environ_get: () => 0,
};

const module = new WebAssembly.Module(readFileSync(args[0]));
instance = new WebAssembly.Instance(module, { env, wasi_snapshot_preview1: wasi });
memory = instance.exports.memory;
const x = instance.exports;
if (x._initialize) x._initialize();
props = { plugin_name: Buffer.from("kafka_identity"), plugin_root_id: Buffer.from("kafka_identity") };
x.proxy_on_context_create(1, 0);
if (!x.proxy_on_vm_start(1, 0)) throw new Error("on_vm_start refused");
if (!x.proxy_on_configure(1, bufs[BUF.PLUGIN_CONFIGURATION].length)) throw new Error("on_configure refused");

const certs = certificates();
function connection(id) {
  const cert = certs[id % certs.length];
  props = {
    "connection.sha256_peer_certificate_digest": cert.digest,
    "connection.peer_certificate": cert.pem,
    "connection.mtls": Buffer.from([1]),
    "source.address": Buffer.from("127.0.0.1:40000"),
  };
  x.proxy_on_context_create(id, 1);
  x.proxy_on_new_connection(id);
  const exchanges = [[apiVersions, Buffer.concat([saslAnswers, apiVersionsAnswer])],
    [metadata, metadataAnswer], [produce, produceAnswer]];
  for (const [req, resp] of exchanges) {
    bufs[BUF.DOWNSTREAM] = req;
    x.proxy_on_downstream_data(id, req.length, 0);
    bufs[BUF.UPSTREAM] = resp;
    x.proxy_on_upstream_data(id, resp.length, 0);
  }
  x.proxy_on_downstream_connection_close(id, 1);
  x.proxy_on_done(id);
  x.proxy_on_delete(id);
}

// Warm up (V8 compiles the module eagerly; this settles caches and the allocator), then time.
for (let i = 0; i < 2000; i++) connection(2 + i);
const before = { ...counts };
const t0 = process.hrtime.bigint();
for (let i = 0; i < CONNECTIONS; i++) connection(100000 + i);
const ns = Number(process.hrtime.bigint() - t0);
if (counts.closes) throw new Error(`the filter closed ${counts.closes} connections: check the frames`);
const per = (k) => ((counts[k] - before[k]) / CONNECTIONS).toFixed(1);
console.log(JSON.stringify({
  wasm: args[0], connections: CONNECTIONS, signed: SIGNED, log_level: LOG_LEVEL,
  distinct_certs: DISTINCT_CERTS, us_per_connection: +(ns / CONNECTIONS / 1000).toFixed(2),
  host_calls_per_connection: +per("hostCalls"), log_lines_per_connection: +per("logs"),
}));
