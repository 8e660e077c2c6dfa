"""The native build as Envoy loads it (runs with KAFKA_IDENTITY_FILTER_KIND=native only):
built for the ABI of the Envoy that runs it, so Envoy does not call it deprecated (a module
is promised to work only in the Envoy minor it was built for, and the next one)."""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import wait_until


def test_the_module_was_built_for_this_envoys_abi(stack):
    if stack.env.get("KAFKA_IDENTITY_FILTER_KIND") != "native":
        pytest.skip("the stack runs the .wasm")
    startup = re.compile(r"kafka-identity: version \S+ \(native, dynamic-module ABI (v\d+\.\d+\.\d+)\)")
    # Envoy flushes its log file every few seconds.
    assert wait_until(lambda: startup.search(stack.envoy_log.read_text(errors="replace"))), \
        "the module's startup line is missing"
    log = stack.envoy_log.read_text(errors="replace")
    ours = startup.search(log)
    assert f"Dynamic module ABI version {ours.group(1)} matched" in log, \
        [ln for ln in log.splitlines() if "ABI version" in ln][:3]
    assert "is deprecated" not in log, [ln for ln in log.splitlines() if "deprecated" in ln][:3]


def test_the_module_is_never_unloaded(stack):
    """Envoy dlcloses a module when its last configuration goes away; the module's timer thread
    would then run unmapped code. Linked with -z nodelete (native/build.rs), it stays mapped."""
    if stack.env.get("KAFKA_IDENTITY_FILTER_KIND") != "native":
        pytest.skip("the stack runs the .wasm")
    loaded = Path(stack.env["KAFKA_IDENTITY_STATE"]) / "envoy" / "native" / "libkafka_identity_native.so"
    dynamic = subprocess.run(["readelf", "-d", str(loaded)], capture_output=True, text=True, check=True).stdout
    flags = [ln for ln in dynamic.splitlines() if "FLAGS_1" in ln]
    assert flags and "NODELETE" in flags[0], flags
