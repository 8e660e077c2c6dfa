# kafka-identity — every entry point. `make demo` and `make test` set up what they need.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

WASM_TARGET := wasm32-unknown-unknown
WASM := target/$(WASM_TARGET)/release/kafka_identity_filter.wasm
CARGO_JOBS ?= 2
CARGO := cargo
FUZZ_SECONDS ?= 60
FUZZ_TOOLCHAIN ?= nightly-2026-10-29
ENVOY_MATRIX ?= 1.36.4 1.37.0 1.38.2 1.39.3 1.40.0
SOAK_MINUTES ?= 30

.PHONY: help setup wasm cli bench oci deploy-check e2e-kind lint unit e2e test demo stack-up stack-down fuzz bench-codec e2e-matrix e2e-mesh soak clean

help:
	@echo "make demo        start the local stack and show two identities and their rights"
	@echo "make test        everything: lint, unit/property tests, corpus replay, .wasm, e2e"
	@echo "make wasm        build $(WASM)"
	@echo "make stack-up    start Kafka + Envoy + filter on loopback (writes e2e/.state/stack.env)"
	@echo "make stack-down  stop what stack-up started"
	@echo "make e2e-matrix  run the e2e suite on every Envoy with V8: $(ENVOY_MATRIX)"
	@echo "make oci         OCI image of the .wasm for Istio's WasmPlugin; prints the sha256 to use"
	@echo "make deploy-check validate every Istio/Kafka manifest offline and check the OCI image"
	@echo "make e2e-mesh    Istio mesh end to end: kube-apiserver, istiod, sidecars, 3 brokers (no Docker)"
	@echo "make e2e-kind    kind + Istio end to end (needs a Docker engine)"
	@echo "make fuzz        run every fuzz target for FUZZ_SECONDS each (nightly, cargo-fuzz)"
	@echo "make bench-codec criterion benchmark of the request scanner"
	@echo "make bench       filter cost vs the same path without it; writes docs/benchmarks.md (~12 min)"
	@echo "make soak        producer + consumer through re-authentication for SOAK_MINUTES (default $(SOAK_MINUTES))"

setup:
	scripts/install-deps

wasm:
	$(CARGO) build -j $(CARGO_JOBS) --release --target $(WASM_TARGET) -p kafka-identity-filter
	@echo "built $(WASM): $$(stat -c %s $(WASM)) bytes"

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy -j $(CARGO_JOBS) --workspace --all-targets -- -D warnings
	$(CARGO) clippy -j $(CARGO_JOBS) --release --target $(WASM_TARGET) -p kafka-identity-filter -- -D warnings
	scripts/shell-scripts | xargs -d '\n' shellcheck -x

unit:
	$(CARGO) test -j $(CARGO_JOBS) --workspace

cli:
	$(CARGO) build -j $(CARGO_JOBS) --release -p kafka-identity-cli

e2e: wasm cli
	e2e/run

test: setup lint unit wasm cli e2e deploy-check e2e-mesh

demo: setup wasm
	e2e/demo

stack-up: wasm
	e2e/local/stack-up

stack-down:
	e2e/local/stack-down

e2e-matrix: setup wasm
	scripts/install-deps --envoy-versions "$(ENVOY_MATRIX)"
	e2e/run-matrix $(ENVOY_MATRIX)

fuzz:
	scripts/install-fuzz
	cd kafka-codec/fuzz && for t in requests responses; do \
	  cargo +$(FUZZ_TOOLCHAIN) fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048; done
	cd identity/fuzz && for t in $$(cargo +$(FUZZ_TOOLCHAIN) fuzz list); do \
	  cargo +$(FUZZ_TOOLCHAIN) fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048; done

oci: wasm
	scripts/oci-image

# Offline: istioctl (from the Go module proxy), kubeconform with Kubernetes and Istio
# schemas, envoy --mode validate on the patches, shellcheck; then the OCI image test.
deploy-check: wasm
	scripts/install-deploy-tools
	scripts/validate-manifests --no-install
	.tools/venv/bin/python -m pytest -q -p no:cacheprovider deploy/tests

# The mesh on this machine, in network namespaces of its own (root; see e2e/mesh/README.md).
e2e-mesh: setup wasm
	scripts/install-mesh
	e2e/mesh/run

e2e-kind: wasm
	e2e/kind/run

bench: setup wasm
	bench/run

# Issue #12 scenario 9 (docs/reliability.md): its own side stack (no main stack needed);
# `make test` runs the same test for 2 minutes. Figures: e2e/.state/figures/soak-<n>min.json.
soak: setup wasm
	SOAK_MINUTES=$(SOAK_MINUTES) .tools/venv/bin/pytest -q -s -p no:cacheprovider e2e/tests/test_soak.py

bench-codec:
	$(CARGO) bench -j $(CARGO_JOBS) -p kafka-codec --bench request_scanner

clean:
	e2e/local/stack-down || true
	$(CARGO) clean
