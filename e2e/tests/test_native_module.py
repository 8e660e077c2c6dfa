"""The native build as Envoy loads it (runs with KAFKA_IDENTITY_FILTER_KIND=native only):
built for the ABI of the Envoy that runs it, so Envoy does not call it deprecated (a module
is promised to work only in the Envoy minor it was built for, and the next one)."""

import re

import pytest


def test_the_module_was_built_for_this_envoys_abi(stack):
    if stack.env.get("KAFKA_IDENTITY_FILTER_KIND") != "native":
        pytest.skip("the stack runs the .wasm")
    log = stack.envoy_log.read_text(errors="replace")
    ours = re.search(r"kafka-identity: version \S+ \(native, dynamic-module ABI (v\d+\.\d+\.\d+)\)", log)
    assert ours, "the module's startup line is missing"
    assert f"Dynamic module ABI version {ours.group(1)} matched" in log, \
        [ln for ln in log.splitlines() if "ABI version" in ln][:3]
    assert "is deprecated" not in log, [ln for ln in log.splitlines() if "deprecated" in ln][:3]
