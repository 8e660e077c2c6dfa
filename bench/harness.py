#!/usr/bin/env python3
"""Runs the benchmarks of docs/benchmarks.md against a bench stack (bench/run starts it).

Paths: (a) Envoy TLS + tcp_proxy -> PLAINTEXT listener, no filter; (b) Envoy TLS + filter
(.wasm) + tcp_proxy -> OAUTHBEARER listener (unsecured tokens); (s) the same with the filter
signing ES256 tokens -> SIGNED listener (JWKS validator); (d) and (e): (b) and (s) with the
filter as the native Envoy dynamic module, in the same Envoy, to broker listeners configured
like MESH and SIGNED; (n) a Wasm filter that does nothing -> PLAINTEXT; (c) DIRECT listener
(SASL_PLAINTEXT, OAUTHBEARER as admin). Connection churn adds the floor: raw clients straight
to the broker, (p) PLAINTEXT, (f) MESH and (g) SIGNED doing the SASL exchange themselves.
Paths whose listeners the stack lacks (no KAFKA_IDENTITY_BENCH_NATIVE: (d), (e); no null
filter: (n), (m)) are left out.
Writes one JSON file with every raw sample; bench/report.py turns it into the report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kafka_raw  # noqa: E402
import envoy_probe  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIZES = [100, 1024, 102400]
# Bytes per producer/consumer run at BENCH_SCALE=1: each run takes a few seconds on 2 cores.
RUN_BYTES = {100: 10_000_000, 1024: 30_000_000, 102400: 30_000_000}
PATHS = ["a", "b", "s", "d", "e", "n", "c"]
# every round of the throughput runs; (n) and (c) in the first ones
ENVOY_PATHS = ["a", "b", "s", "d", "e"]
OBSERVED_PATHS = ["a", "b", "s", "d", "e", "n"]  # Envoy's CPU and bytes observed
TLS_PATHS = ["a", "n", "m", "b", "s", "d", "e"]  # through Envoy (TLS)
# One cluster per path, so that its upstream bytes are counted apart.
ENVOY_CLUSTER = {"a": "kafka_plain", "b": "kafka_mesh", "s": "kafka_signed", "n": "kafka_null_plain",
                 "d": "kafka_native", "e": "kafka_native_signed"}
# Connection churn: Envoy paths (TLS; (n) is Envoy with a Wasm filter that does nothing, to
# PLAINTEXT, (m) the same to MESH with the client doing SASL itself, pipelined as the filter
# does; (d), (e) the native module, as (b), (s)) and the floor, raw clients straight to the broker:
#   p  PLAINTEXT listener, no SASL
#   f  MESH listener (unsecured validator): SaslHandshake + SaslAuthenticate + ApiVersions in one
#      write, as the filter sends them; g: the same with a signed token to the SIGNED listener
#   fq, gq  the same exchanges one request at a time, as Kafka's clients do (reference)
CHURN_PATHS = ["a", "n", "m", "b", "s", "d", "e", "p", "f", "g", "fq", "gq"]
CHURN_BLOCKS = 5  # the churn samples are split into this many blocks for the spread of differences
SETTLE_S = 0.003  # after close: Envoy tears the connection down inside its own CPU window
PRODUCER_ID = "spiffe://cluster.local/ns/apps/sa/producer"
CONSUMER_ID = "spiffe://cluster.local/ns/apps/sa/consumer"
LAT_RATE, LAT_SECONDS, LAT_SIZE = 300, 5, 1024
STATS_FLUSH_S = 5.5


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    return env


class Stack:
    def __init__(self, env: dict[str, str]):
        self.env = env
        if env.get("KAFKA_IDENTITY_BENCH") != "1":
            sys.exit("stack.env has no KAFKA_IDENTITY_BENCH=1: start the stack with bench/run")
        state = Path(env["KAFKA_IDENTITY_STATE"])
        self.envoy_pid = int((state / "envoy.pid").read_text().strip())
        self.admin = env["KAFKA_IDENTITY_ENVOY_ADMIN"]
        self.clients = Path(env["KAFKA_IDENTITY_CLIENT_CONFIGS"])
        self.certs = Path(env["KAFKA_IDENTITY_CERTS"])
        if not env.get("KAFKA_IDENTITY_BOOTSTRAP_SIGNED"):
            sys.exit("stack.env has no signed path (KAFKA_IDENTITY_BENCH_SIGNING): start the stack with bench/run")
        self.signing = Path(env["KAFKA_IDENTITY_BENCH_SIGNING"])
        self.bootstrap = {
            "a": env["KAFKA_IDENTITY_BOOTSTRAP_NOFILTER"],
            "b": env["KAFKA_IDENTITY_BOOTSTRAP"],
            "s": env["KAFKA_IDENTITY_BOOTSTRAP_SIGNED"],
            "c": env["KAFKA_IDENTITY_BROKER"],
            "n": env.get("KAFKA_IDENTITY_BOOTSTRAP_NULL", ""),
            "m": env.get("KAFKA_IDENTITY_BOOTSTRAP_NULL_SASL", ""),
            "d": env.get("KAFKA_IDENTITY_BOOTSTRAP_NATIVE", ""),
            "e": env.get("KAFKA_IDENTITY_BOOTSTRAP_NATIVE_SIGNED", ""),
            # straight to the broker, for the floor
            "p": env["KAFKA_IDENTITY_PLAINTEXT_LISTENER"],
            "f": env["KAFKA_IDENTITY_MESH_LISTENER"],
            "g": env["KAFKA_IDENTITY_SIGNED_LISTENER"],
        }
        self.bootstrap["fq"], self.bootstrap["gq"] = self.bootstrap["f"], self.bootstrap["g"]
        admin_cfg = env["KAFKA_IDENTITY_ADMIN_CONFIG"]
        self.producer_cfg = {p: str(self.clients / "apps.producer.ssl.properties") for p in OBSERVED_PATHS}
        self.producer_cfg["c"] = admin_cfg
        self.consumer_cfg = {p: str(self.clients / "apps.consumer.ssl.properties") for p in OBSERVED_PATHS}
        self.consumer_cfg["c"] = admin_cfg

    def has(self, path: str) -> bool:
        """The stack has this path's listener (the optional ones: (n), (m), (d), (e))."""
        return bool(self.bootstrap.get(path))

    def paths(self, paths: list[str]) -> list[str]:
        return [p for p in paths if self.has(p)]

    # ---- Envoy observations ------------------------------------------------------
    def stats(self, regex: str) -> dict[str, int]:
        return envoy_probe.stats(self.admin, regex)

    def cpu_seconds(self) -> float:
        """Envoy's CPU time, all threads, in ns resolution (schedstat: time on a CPU)."""
        total = 0
        for t in Path(f"/proc/{self.envoy_pid}/task").iterdir():
            try:
                total += int((t / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that just ended
        return total / 1e9

    def cluster_bytes(self, path: str) -> int:
        c = ENVOY_CLUSTER[path]
        s = self.stats(f"^cluster\\.{c}\\.upstream_cx_(rx|tx)_bytes_total$")
        return sum(s.values())

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.envoy_pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def wasm_linear_memory_kib(self) -> tuple[int, int]:
        return envoy_probe.wasm_linear_memory_kib(self.envoy_pid)


def machine_cpu_busy() -> tuple[int, int]:
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


# ---- set-up: topics and ACLs ---------------------------------------------------------
def setup(stack: Stack) -> None:
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                       NewTopic, ResourcePatternType, ResourceType)

    admin = AdminClient({
        "bootstrap.servers": stack.bootstrap["c"],
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "OAUTHBEARER",
        "enable.sasl.oauthbearer.unsecure.jwt": True,
        "sasl.oauthbearer.config": "principal=admin",
    })
    topics = [NewTopic(f"bench-{s}", 3, 1) for s in SIZES] + [NewTopic("bench-churn", 1, 1)]
    for _topic, fut in admin.create_topics(topics, request_timeout=30).items():
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001
            if "TOPIC_ALREADY_EXISTS" not in str(e) and "already exists" not in str(e):
                raise
    P = ResourcePatternType.PREFIXED
    allow = AclPermissionType.ALLOW
    bindings = []
    for principal, ops in [
        ("User:ANONYMOUS", [AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE]),
        (f"User:{PRODUCER_ID}", [AclOperation.WRITE, AclOperation.DESCRIBE]),
        (f"User:{CONSUMER_ID}", [AclOperation.READ, AclOperation.DESCRIBE]),
    ]:
        for op in ops:
            bindings.append(AclBinding(ResourceType.TOPIC, "bench-", P, principal, "*", op, allow))
    for principal in ["User:ANONYMOUS", f"User:{CONSUMER_ID}"]:
        bindings.append(AclBinding(ResourceType.GROUP, "bench-", P, principal, "*", AclOperation.READ, allow))
    for fut in admin.create_acls(bindings, request_timeout=30).values():
        fut.result()
    time.sleep(1.0)  # ACLs and topic metadata propagate (single KRaft node: quick)
    log("topics bench-100/-1024/-102400 (3 partitions), bench-churn; ACLs for ANONYMOUS, producer, consumer")


# ---- Kafka's perf tools ----------------------------------------------------------------
def java(cls: str, args: list[str], cp: str, timeout: float = 180) -> str:
    cmd = ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC",
           f"-Dlog4j2.configurationFile={REPO / 'e2e/local/tools-log4j2.xml'}",
           "-cp", cp, cls, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{cls} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout


PROD_RE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, ([\d.]+) ms 50th, ([\d.]+) ms 95th, ([\d.]+) ms 99th, ([\d.]+) ms 99.9th")


def producer_perf(stack: Stack, path: str, topic: str, size: int, n: int, throughput: int = -1,
                  extra_props: tuple[str, ...] = ()) -> dict:
    out = java("org.apache.kafka.tools.ProducerPerformance", [
        "--bootstrap-server", stack.bootstrap[path], "--topic", topic, "--num-records", str(n),
        "--record-size", str(size), "--throughput", str(throughput),
        "--producer-props", "acks=all", *extra_props,
        "--command-config", stack.producer_cfg[path]], stack.env["KAFKA_IDENTITY_KAFKA_CLASSPATH"])
    # The last match is the summary line (the earlier ones are progress lines).
    matches = list(PROD_RE.finditer(out))
    m = matches[-1] if matches else None
    if m is None:
        raise RuntimeError(f"no summary line in ProducerPerformance output:\n{out[-2000:]}")
    return {"records": int(m[1]), "records_s": float(m[2]), "mb_s": float(m[3]), "avg_ms": float(m[4]),
            "max_ms": float(m[5]), "p50_ms": float(m[6]), "p95_ms": float(m[7]), "p99_ms": float(m[8]),
            "p999_ms": float(m[9])}


def consumer_perf(stack: Stack, path: str, topic: str, n: int, group: str) -> dict:
    out = java("org.apache.kafka.tools.ConsumerPerformance", [
        "--bootstrap-server", stack.bootstrap[path], "--topic", topic, "--num-records", str(n),
        "--group", group, "--timeout", "60000", "--command-config", stack.consumer_cfg[path]],
        stack.env["KAFKA_IDENTITY_KAFKA_CLASSPATH"])
    lines = [ln for ln in out.splitlines() if ln.count(",") >= 9]
    head = [h.strip() for h in lines[-2].split(",")]
    vals = [v.strip() for v in lines[-1].split(",")]
    row = dict(zip(head, vals, strict=True))
    got = int(float(row["data.consumed.in.nMsg"]))
    if got < n:
        raise RuntimeError(f"consumer read {got} of {n} records on {topic} via ({path})")
    return {"records": got, "mb": float(row["data.consumed.in.MB"]), "mb_s": float(row["MB.sec"]),
            "records_s": float(row["nMsg.sec"]), "fetch_mb_s": float(row["fetch.MB.sec"]),
            "fetch_records_s": float(row["fetch.nMsg.sec"]), "rebalance_ms": float(row["rebalance.time.ms"]),
            "fetch_ms": float(row["fetch.time.ms"])}


def observed(stack: Stack, path: str, fn):
    """Runs fn(); for (a)/(b) adds Envoy CPU seconds and the cluster's bytes (rx+tx) during it."""
    if path == "c":
        return fn()
    b0, c0 = stack.cluster_bytes(path), stack.cpu_seconds()
    r = fn()
    r["envoy_cpu_s"] = stack.cpu_seconds() - c0
    r["envoy_bytes"] = stack.cluster_bytes(path) - b0
    return r


def run_perf(stack: Stack, pairs: int, scale: float, results: dict, save, ref_rounds: int,
             deadline: float) -> None:
    counts = {s: max(1000, int(RUN_BYTES[s] * scale / s)) for s in SIZES}
    lat_n = max(500, int(LAT_RATE * LAT_SECONDS * min(1.0, scale * 2)))
    results["perf_config"] = {"records_per_run": counts, "pairs": pairs, "ref_rounds": ref_rounds,
                              "paths": stack.paths(PATHS),
                              "latency_run": {
        "record_size": LAT_SIZE, "records_s": LAT_RATE, "records": lat_n, "props": "acks=all linger.ms=0"}}
    prod, cons, lat = (results.setdefault(k, []) for k in ("produce", "consume", "latency"))
    for r in range(pairs):
        if r > 0 and time.time() > deadline:
            log(f"time budget used up: stopping after {r} rounds (BENCH_BUDGET_S)")
            results["perf_config"]["truncated_after_rounds"] = r
            break
        paths = stack.paths(PATHS if r < ref_rounds else ENVOY_PATHS)
        for s in SIZES:
            for p in paths:
                res = observed(stack, p, lambda p=p, s=s: producer_perf(stack, p, f"bench-{s}", s, counts[s]))
                prod.append({"round": r, "path": p, "size": s, **res})
                log(f"round {r + 1}/{pairs} produce {s:>6} B ({p}): {res['mb_s']:.1f} MB/s "
                    f"{res['records_s']:.0f} rec/s p99 {res['p99_ms']} ms")
        for s in SIZES:
            for p in paths:
                grp = f"bench-{p}-{s}-{r}-{int(time.time())}"
                res = observed(stack, p, lambda p=p, s=s, grp=grp: consumer_perf(
                    stack, p, f"bench-{s}", counts[s], grp))
                cons.append({"round": r, "path": p, "size": s, **res})
                log(f"round {r + 1}/{pairs} consume {s:>6} B ({p}): {res['fetch_mb_s']:.1f} MB/s (fetch)")
        for p in paths:
            res = observed(stack, p, lambda p=p: producer_perf(
                stack, p, f"bench-{LAT_SIZE}", LAT_SIZE, lat_n, LAT_RATE, ("linger.ms=0",)))
            lat.append({"round": r, "path": p, "size": LAT_SIZE, **res})
            log(f"round {r + 1}/{pairs} latency at {LAT_RATE} rec/s ({p}): "
                f"p50 {res['p50_ms']} ms p99 {res['p99_ms']} ms")
        save()


# ---- connection churn and open-connection memory (raw sockets) -------------------------
class RawPaths:
    def __init__(self, stack: Stack):
        self.stack = stack
        self.ctx = kafka_raw.tls_context(stack.env["KAFKA_IDENTITY_CA"], str(stack.certs / "apps.producer.crt"),
                                         str(stack.certs / "apps.producer.key"))
        # The floor's clients present the producer's principal, like the filter does; each token
        # is made once (the broker still validates it on every connection).
        self.tokens = {"f": kafka_raw.unsecured_jwt(PRODUCER_ID), "g": signed_token(stack)}
        self.tokens["fq"], self.tokens["gq"], self.tokens["m"] = self.tokens["f"], self.tokens["g"], self.tokens["f"]

    def addr(self, path: str) -> tuple[str, int]:
        host, port = self.stack.bootstrap[path].rsplit(":", 1)
        return host, int(port)

    def open(self, path: str) -> kafka_raw.Conn:
        """Connected and ready for requests other than ApiVersions: TLS for the Envoy paths,
        TCP + ApiVersions + SASL for (c) and the floor paths, TCP + ApiVersions for (p)."""
        host, port = self.addr(path)
        if path == "c":
            conn = kafka_raw.connect(host, port, None)
            conn.api_versions()
            conn.sasl_oauthbearer("admin")
            return conn
        if path == "m":
            conn = kafka_raw.connect(host, port, self.ctx)
            conn.sasl_pipelined_api_versions(self.tokens[path])
            return conn
        if path in TLS_PATHS:
            return kafka_raw.connect(host, port, self.ctx)
        conn = kafka_raw.connect(host, port, None)
        if path in ("f", "g"):
            conn.sasl_pipelined_api_versions(self.tokens[path])
        elif path in ("fq", "gq"):
            conn.api_versions()
            conn.sasl_oauthbearer(PRODUCER_ID, self.tokens[path])
        else:
            conn.api_versions()
        return conn


def signed_token(stack: Stack) -> str:
    """A token for the producer signed with the bench key, by the filter's own code (the CLI)."""
    cli = os.environ.get("KAFKA_IDENTITY_CLI") or REPO / "target/release/kafka-identity"
    p = subprocess.run([str(cli), "token", "--cert", str(stack.certs / "apps.producer.crt"),
                        "--config", str(stack.signing / "filter-config.json")],
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                            "KAFKA_IDENTITY_BENCH_SIGNING_KEY": (stack.signing / "key.pem").read_text()},
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"kafka-identity token failed ({p.returncode}): {p.stderr}")
    return p.stdout.strip()


def run_churn(stack: Stack, n: int, results: dict, paths: list[str] | None = None) -> None:
    wanted = paths or CHURN_PATHS
    paths = stack.paths(wanted)
    if len(paths) < len(wanted):
        log(f"churn: the stack has no listener for {', '.join(p for p in wanted if p not in paths)}: left out")
    raw = RawPaths(stack)
    batch = kafka_raw.record_batch(b"x" * 100, int(time.time() * 1000))
    samples = {p: [] for p in paths}
    tls = {p: [] for p in paths}
    cpu = {p: [] for p in paths}

    def one(p: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        conn = raw.open(p)
        t1 = time.perf_counter()
        if p in TLS_PATHS and p != "m":
            conn.api_versions()  # the others sent ApiVersions while opening (with or before SASL)
        conn.metadata("bench-churn")
        conn.produce("bench-churn", 0, batch)
        t2 = time.perf_counter()
        conn.close()
        return t1 - t0, t2 - t0

    for _ in range(20):  # warm-up, not recorded
        for p in paths:
            one(p)
    for i in range(n):
        # Rotate the order so that no path always follows the same one.
        k = i % len(paths)
        for p in paths[k:] + paths[:k]:
            c0 = stack.cpu_seconds()
            t_tls, t_ack = one(p)
            time.sleep(SETTLE_S)
            cpu[p].append((stack.cpu_seconds() - c0) * 1000)
            tls[p].append(t_tls * 1000)
            samples[p].append(t_ack * 1000)
    results["churn"] = {"connections_per_path": n, "blocks": CHURN_BLOCKS, "paths": paths, "setup_ms": samples,
                        "connect_ms": tls, "envoy_cpu_ms": cpu, "settle_ms": SETTLE_S * 1000}
    for p in paths:
        log(f"churn ({p}): median {statistics.median(samples[p]):.2f} ms, p99 {pct(samples[p], 99):.2f} ms, "
            f"Envoy CPU {statistics.mean(cpu[p]):.3f} ms/conn (open median {statistics.median(tls[p]):.2f} ms)")


def run_memory(stack: Stack, n: int, reps: int, results: dict) -> None:
    raw = RawPaths(stack)
    out = []
    for rep in range(reps):
        for p in ["a", "b"]:
            # server.memory_* gauges are refreshed at Envoy's stats flush (every 5 s)
            time.sleep(STATS_FLUSH_S)
            before = snapshot(stack)
            conns = []
            try:
                for _ in range(n):
                    c = raw.open(p)
                    c.api_versions()  # (b): the filter has authenticated this connection
                    conns.append(c)
                time.sleep(STATS_FLUSH_S)
                after = snapshot(stack)
            finally:
                for c in conns:
                    c.close()
            d = {k: after[k] - before[k] for k in before}
            out.append({"rep": rep, "path": p, "connections": n, "before": before, "after": after, "delta": d})
            log(f"memory ({p}) with {n} open connections: RSS +{d['rss_kib'] / n:.2f} KiB/conn, "
                f"allocated +{d['allocated'] / n / 1024:.2f} KiB/conn, wasm linear memory +{d['wasm_rss_kib']} KiB "
                f"(size +{d['wasm_size_kib']} KiB)")
    results["memory"] = out


def snapshot(stack: Stack) -> dict:
    s = stack.stats(r"^(server\.memory_allocated|server\.memory_heap_size|"
                    r"listener\.127\.0\.0\.1_\d+\.downstream_cx_active|wasmcustom\.kafka_identity\.authenticated)$")
    w_rss, w_size = stack.wasm_linear_memory_kib()
    return {"rss_kib": stack.rss_kib(), "allocated": s.get("server.memory_allocated", 0),
            "heap": s.get("server.memory_heap_size", 0), "wasm_rss_kib": w_rss, "wasm_size_kib": w_size,
            "active_cx": sum(v for k, v in s.items() if k.endswith("downstream_cx_active")),
            "authenticated": s.get("wasmcustom.kafka_identity.authenticated", 0)}


def pct(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    if not ys:
        return float("nan")
    k = (len(ys) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ys) - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * (k - lo)


def wasm_sections(wasm: Path) -> dict[str, int]:
    """Sizes of the .wasm's sections (a small reader of the binary format, no tools needed)."""
    path = wasm if wasm.is_absolute() else REPO / wasm
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    names = {0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
             7: "export", 8: "start", 9: "element", 10: "code", 11: "data", 12: "datacount"}
    out: dict[str, int] = {}
    pos = 8
    while pos < len(data):
        sid = data[pos]
        pos += 1
        size = shift = 0
        while True:
            b = data[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        key = names.get(sid, f"id{sid}")
        out[key] = out.get(key, 0) + size
        pos += size
    return out


# ---- the machine and versions ----------------------------------------------------------
def sh(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable: {e}"


def environment(stack: Stack) -> dict:
    env = stack.env
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    wasm = Path(env.get("KAFKA_IDENTITY_WASM_LOADED") or "")
    native = Path(env["KAFKA_IDENTITY_BENCH_NATIVE"]) if env.get("KAFKA_IDENTITY_BENCH_NATIVE") else None
    envoy_bin = REPO / ".tools/envoy" / env["KAFKA_IDENTITY_ENVOY_VERSION"] / "envoy"
    import confluent_kafka
    return {
        "nproc": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "envoy": sh([str(envoy_bin), "--version"]).split("version:")[-1].strip(),
        "envoy_concurrency": 1,
        "kafka": env["KAFKA_IDENTITY_KAFKA_VERSION"],
        "java": sh(["java", "-version"]).splitlines()[0] if sh(["java", "-version"]) else "",
        "confluent_kafka": confluent_kafka.__version__,
        "wasm_path": str(wasm.relative_to(REPO)) if wasm.is_relative_to(REPO) else str(wasm),
        "wasm_bytes": wasm.stat().st_size if wasm.is_file() else None,
        "wasm_sha256": hashlib.sha256(wasm.read_bytes()).hexdigest() if wasm.is_file() else None,
        "native_path": (str(native.relative_to(REPO)) if native.is_relative_to(REPO) else str(native))
        if native else None,
        "native_bytes": native.stat().st_size if native and native.is_file() else None,
        "native_sha256": hashlib.sha256(native.read_bytes()).hexdigest() if native and native.is_file() else None,
        "filter_config": Path(env["KAFKA_IDENTITY_FILTER_CONFIG_LOADED"]).read_text().strip()
        if env.get("KAFKA_IDENTITY_FILTER_CONFIG_LOADED") else None,
        "signed_filter_config": (stack.signing / "filter-config.json").read_text().strip(),
        "git": sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(sh(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stack-env", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--only", default="perf,churn,memory", help="comma list of perf,churn,memory")
    ap.add_argument("--churn-paths", default=",".join(CHURN_PATHS), help="comma list of churn paths")
    a = ap.parse_args()
    pairs = int(os.environ.get("BENCH_PAIRS", "4"))
    scale = float(os.environ.get("BENCH_SCALE", "1.0"))
    churn_n = int(os.environ.get("BENCH_CHURN", "300"))
    conns = int(os.environ.get("BENCH_CONNS", "1000"))
    mem_reps = int(os.environ.get("BENCH_MEM_REPS", "2"))
    ref_rounds = int(os.environ.get("BENCH_REF_ROUNDS", "1"))  # rounds that also run (c)
    budget = float(os.environ.get("BENCH_BUDGET_S", "840"))  # no new perf round after this
    only = set(a.only.split(","))

    stack = Stack(load_env(a.stack_env))
    t0 = time.time()
    busy0 = machine_cpu_busy()
    results: dict = {"environment": environment(stack), "scale": scale,
                     "loadavg_start": Path("/proc/loadavg").read_text().split()[:3]}

    def save() -> None:
        busy1 = machine_cpu_busy()
        results["elapsed_s"] = round(time.time() - t0, 1)
        results["machine_cpu_busy"] = round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3)
        results["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        tmp = a.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(a.out)

    setup(stack)
    # Memory first, while the VM heap holds no freed sessions that new ones could reuse.
    if "memory" in only:
        run_memory(stack, conns, mem_reps, results)
        save()
    if "churn" in only:
        run_churn(stack, churn_n, results, a.churn_paths.split(","))
        save()
    if "perf" in only:
        run_perf(stack, pairs, scale, results, save, ref_rounds, t0 + budget)
    results["filter_counters"] = stack.stats(r"^wasmcustom\.kafka_identity\.")
    # The native module's, under its own stat_prefix per path (kafka_identity_native[_signed]).
    results["native_counters"] = stack.stats(r"^dynamicmodulescustom\.kafka_identity_native")
    results["wasm_sections"] = wasm_sections(Path(results["environment"]["wasm_path"]))
    save()
    log(f"done in {time.time() - t0:.0f} s, machine CPU busy {results['machine_cpu_busy'] * 100:.0f}% "
        f"(all processes), load {results['loadavg_start']} -> {results['loadavg_end']}")


if __name__ == "__main__":
    main()
