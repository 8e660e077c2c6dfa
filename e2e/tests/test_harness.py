"""The harness's own judgement, without a stack: a check that cannot fail is a defect like any
other. bench/report.py must not call a target met that was not measured, and
Envoy.wait_outcomes (e2e/tests/reliability.py) must fail, not return, when the filter's log
never matches its counters."""

import math

import pytest

import report  # bench/report.py (bench/ is on sys.path through reliability)
from reliability import Envoy

SIZES = (100, 1024, 102400)


def row(path, size, rnd, cpu_s):
    return {"path": path, "size": size, "round": rnd, "envoy_bytes": 10**9, "envoy_cpu_s": cpu_s,
            "mb_s": 100.0, "fetch_mb_s": 100.0, "records_s": 1000, "p50_ms": 1, "p99_ms": 2,
            "fetch_records_s": 1000, "rebalance_ms": 10}


def results(missing_b_size=None):
    """Two rounds of produce/consume where (b) costs exactly what (a) does, except that the
    (b) runs of one size are missing."""
    rows = [row(p, s, r, 1.0) for r in (0, 1) for p in ("a", "b") for s in SIZES
            if not (p == "b" and s == missing_b_size)]
    return {"environment": {"date_utc": "2026-12-07", "git": "test", "git_dirty": False, "nproc": 2,
                            "cpu_model": "test", "mem_gib": 1, "kernel": "test", "envoy": "envoy/1.40.0",
                            "kafka": "4.4.0", "java": "17", "python": "3", "confluent_kafka": "2",
                            "filter_config": {}},
            "loadavg_start": ["0"], "produce": rows, "consume": rows,
            "perf_config": {"paths": ["a", "b"], "records_per_run": {str(s): 10 for s in SIZES}}}


def test_a_target_is_met_only_when_measured():
    _, targets = report.build(results(), "chart.png", None)
    assert targets["cpu_per_gb_b"] is True and targets["throughput"] is True, targets
    # One size of (b) not measured: its ratio is the median of nothing, NaN, which
    # max()/min() pass over when it is not first ...
    assert max([1.0, 1.0, float("nan")]) <= 1.03
    md, targets = report.build(results(missing_b_size=102400), "chart.png", None)
    # ... so the target must read as not measured, not as met.
    assert targets["cpu_per_gb_b"] is False and targets["throughput"] is False, targets
    line = next(ln for ln in md.splitlines() if ln.startswith("| Envoy CPU per GB, (b)/(a)"))
    assert line.endswith("| **not measured** |"), line
    assert not report.met([], lambda v: True)
    assert not report.met([math.inf], lambda v: True)


class LogOnly(Envoy):
    """An Envoy seen only through its log file (no process, no admin)."""

    def __init__(self, log):  # noqa: D107 - deliberately not Envoy's
        self.log = log
        self.reads = 0

    def outcomes(self, offset):
        self.reads += 1
        return super().outcomes(offset)


def line(port, outcome):
    return (f"[info][wasm] wasm log kafka_identity: kafka-identity: source=127.0.0.1:{port} "
            f"identity=x principal=x token=unsecured outcome={outcome} session_lifetime_ms=1\n")


def test_wait_outcomes_fails_when_the_log_never_matches_the_counters(tmp_path):
    log = tmp_path / "envoy.log"
    log.write_text(line(40001, "authenticated") + line(40002, "protocol_error"))
    envoy = LogOnly(log)
    lines = envoy.wait_outcomes(0, {"authenticated": 1, "protocol_errors": 1}, timeout=2, interval=0.2)
    assert lines == [(40001, "authenticated"), (40002, "protocol_error")]
    # A counter moved that the log never shows: an error naming both sides, after the
    # timeout, having read the log every `interval` rather than in a busy loop.
    envoy = LogOnly(log)
    with pytest.raises(AssertionError, match=r"logged \{'authenticated': 1.*counters moved \{'authenticated': 2"):
        envoy.wait_outcomes(0, {"authenticated": 2, "protocol_errors": 1}, timeout=1, interval=0.25)
    assert 2 <= envoy.reads <= 1 / 0.25 + 2, envoy.reads
