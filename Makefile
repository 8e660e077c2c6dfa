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
KAFKA_MATRIX ?= 3.9.2 4.0.2 4.4.0
# The non-default Kafka version: make test runs the broker-dependent e2e tests on it (e2e-native-short).
KAFKA_TEST_VERSION ?= 3.9.2
SOAK_MINUTES ?= 30
SOAK_HOURS ?= 6

.PHONY: help setup prebuild-tools rust-target wasm native native-1.38 native-panic-test native-probe native-smoke e2e-native e2e-native-short cli bench oci release reproducible deploy-check e2e-kind lint unit e2e e2e-kafka-3.9 test demo stack-up stack-down fuzz bench-codec bench-filter e2e-matrix e2e-kafka-matrix e2e-mesh e2e-mesh-faults soak soak-mesh completions clean

help:
	@echo "make demo        start the local stack and show two identities and their rights"
	@echo "make test        everything: lint, unit/property tests, corpus replay, .wasm, the native probe, e2e (.wasm on Kafka 4.4.0, native module on 3.9.2), deploy-check, the mesh (root)"
	@echo "make help        this list"
	@echo "make wasm        build $(WASM)"
	@echo "make e2e         the end-to-end suite on the local stack (part of make test)"
	@echo "make e2e-kafka-3.9 the broker-dependent e2e tests on Kafka $(KAFKA_TEST_VERSION) with the .wasm"
	@echo "make native      build the Envoy dynamic module $(NATIVE) (Envoy 1.40, ABI v0.2.0)"
	@echo "make native-1.38 the same for Envoy 1.38 and 1.39 (ABI v0.1.0): $(NATIVE_138)"
	@echo "make native-probe the module in Envoy $(NATIVE_ENVOY) on ephemeral ports: injection, refusal, a caught panic"
	@echo "make native-smoke the module in Envoy $(NATIVE_ENVOY) in front of the local stack's broker (fixed ports)"
	@echo "make e2e-native  the e2e suite with the native module on Envoy $(NATIVE_E2E_ENVOYS)"
	@echo "make e2e-native-short the broker-dependent e2e tests with the native module on Kafka $(KAFKA_TEST_VERSION) (part of make test)"
	@echo "make stack-up    start Kafka + Envoy + filter on loopback (writes e2e/.state/stack.env)"
	@echo "make stack-down  stop what stack-up started"
	@echo "make e2e-matrix  run the e2e suite on every Envoy with V8: $(ENVOY_MATRIX)"
	@echo "make e2e-kafka-matrix run the whole e2e suite on Kafka $(KAFKA_MATRIX)"
	@echo "make oci         OCI image of the .wasm for Istio's WasmPlugin; prints the sha256 to use"
	@echo "make release     .wasm, OCI layout, CLI, Helm chart, SBOMs and SHA256SUMS in target/release-artifacts/"
	@echo "make reproducible build the .wasm again from nothing and require the same bytes"
	@echo "make deploy-check validate every Istio/Kafka/Strimzi manifest, the Helm chart, the dashboard and alerts offline; check the OCI image and one version everywhere"
	@echo "make e2e-mesh    Istio mesh end to end: kube-apiserver, istiod, sidecars, 3 brokers (no Docker)"
	@echo "make e2e-mesh-faults  the mesh's fault, ambient-fault and filter-upgrade scenarios, FAULT_REPEATS times, with a summary"
	@echo "make soak-mesh   the mesh soak: sidecars then waypoint, a fault every 20-40 min, for SOAK_HOURS (default $(SOAK_HOURS))"
	@echo "make cli         build target/release/kafka-identity; make completions: its bash/zsh/fish completions"
	@echo "make e2e-kind    kind + Istio end to end: its own Docker engine, every image built here (root)"
	@echo "make fuzz        run every fuzz target for FUZZ_SECONDS each (nightly, cargo-fuzz)"
	@echo "make bench-codec criterion benchmark of the request scanner"
	@echo "make bench-filter criterion benchmark of what a connection costs the filter's code"
	@echo "make bench       filter cost vs the same path without it; writes docs/benchmarks.md (~15 min)"
	@echo "make soak        producer + consumer through re-authentication for SOAK_MINUTES (default $(SOAK_MINUTES))"

setup:
	scripts/install-deps --kafka-versions "$(KAFKA_TEST_VERSION)"

# What `make wasm` needs on a fresh clone (idempotent, seconds when there): the .wasm target and
# the pinned wasm-opt, whose version decides the .wasm's bytes.
rust-target:
	rustup target add $(WASM_TARGET)
	scripts/install-deps --only-wasm-opt

# Dependencies' panic locations name their source files by absolute path, the builder's cargo
# home included (~150 of them, ~10 KB): mapped to the crate's own directory, the .wasm is
# smaller and has the same bytes wherever it is built (its sha256 goes into WasmPlugins;
# make reproducible checks it). Only for the wasm target: with --target, cargo leaves build
# scripts and proc macros alone.
CARGO_HOME_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)
export WASM_RUSTFLAGS := --remap-path-prefix=$(CARGO_HOME_DIR)/registry/src/= \
  --remap-path-prefix=$(CARGO_HOME_DIR)/registry/src/index.crates.io-1949cf8c6b5b557f/=

# cargo's own output (deps/) is shrunk by binaryen's wasm-opt into $(WASM): under 1 MiB, so
# a plain ConfigMap carries it (docs/deploy.md). The release profile builds for size.
wasm: rust-target
	RUSTFLAGS="$(WASM_RUSTFLAGS)" $(CARGO) build -j $(CARGO_JOBS) --release --target $(WASM_TARGET) -p kafka-identity-filter
	scripts/optimize-wasm target/$(WASM_TARGET)/release/deps/kafka_identity_filter.wasm $(WASM)
	@echo "built $(WASM): $$(stat -c %s $(WASM)) bytes"

# The same filter as an Envoy dynamic module (native/, issue 22): a shared library Envoy loads
# with dlopen. Profile `native`: release, optimized for speed, panics unwind to the hooks that
# catch them. make test builds it (native-probe, e2e-native-short).
NATIVE := target/native/libkafka_identity_native.so
NATIVE_ENVOY ?= 1.40.0
native:
	$(CARGO) build -j $(CARGO_JOBS) --profile native -p kafka-identity-native
	@echo "built $(NATIVE): $$(stat -c %s $(NATIVE)) bytes"

# The same for Envoy 1.38 and 1.39 (dynamic-module ABI v0.1.0), in its own target directory.
NATIVE_138 := target/native-1.38/native/libkafka_identity_native.so
native-1.38:
	$(CARGO) build -j $(CARGO_JOBS) --profile native -p kafka-identity-native --features envoy-1-38 --target-dir target/native-1.38
	@echo "built $(NATIVE_138): $$(stat -c %s $(NATIVE_138)) bytes"

# A build whose read hook panics on PANIC! (never shipped). Unoptimized (the dev profile, whose
# panics unwind too): it proves the hooks catch a panic, which needs no speed, and reuses what
# `cargo test` compiled instead of a second optimized build of every dependency (~2.5 min cold).
# Never target/native/, so it cannot be mistaken for $(NATIVE).
NATIVE_PANIC := target/debug/libkafka_identity_native.so
native-panic-test:
	$(CARGO) build -j $(CARGO_JOBS) -p kafka-identity-native --features panic-test

# One Envoy $(NATIVE_ENVOY) on ephemeral ports in front of a recording server (no Kafka, no
# fixed ports): identity injected, a refusal, a panic caught (e2e/native_probe.py).
native-probe: setup native native-panic-test
	.tools/venv/bin/python e2e/native_probe.py --envoy .tools/envoy/$(NATIVE_ENVOY)/envoy \
	  --module $(NATIVE) --panic-module $(NATIVE_PANIC) --state target/native-probe

# The module in Envoy $(NATIVE_ENVOY) in front of the local stack's real broker (e2e/native-smoke;
# fixed ports: one at a time on a shared machine).
native-smoke: setup native native-panic-test
	KAFKA_IDENTITY_NATIVE_PANIC=$(NATIVE_PANIC) e2e/native-smoke

# The e2e suite with the dynamic module in place of the .wasm (KAFKA_IDENTITY_FILTER_KIND=native),
# on each Envoy of NATIVE_E2E_ENVOYS, but for the proxy-only tests (their probes read the Wasm
# VM's memory). e2e-native-short is make test's second pass: the broker-dependent tests, the
# waypoint and the module's ABI, with the native module on Envoy $(NATIVE_ENVOY) in front of Kafka
# $(KAFKA_TEST_VERSION) -- one pass for the second filter build and the second Kafka, whose
# effects are independent (the filter does not depend on the broker's version); each axis in
# full: make e2e-native, make e2e-kafka-3.9 / e2e-kafka-matrix.
NATIVE_E2E_ENVOYS ?= 1.38.2 1.40.0
e2e-native: setup native native-1.38 cli
	scripts/install-deps --envoy-versions "$(NATIVE_E2E_ENVOYS)"
	for v in $(NATIVE_E2E_ENVOYS); do \
	  case $$v in 1.38.*|1.39.*) so=$(NATIVE_138) ;; *) so=$(NATIVE) ;; esac; \
	  ENVOY_VERSION=$$v KAFKA_IDENTITY_FILTER_KIND=native KAFKA_IDENTITY_NATIVE=$$so \
	    e2e/run $(addprefix --ignore=e2e/tests/,$(PROXY_ONLY_TESTS)) || exit 1; done

e2e-native-short: setup native cli
	ENVOY_VERSION=$(NATIVE_ENVOY) KAFKA_IDENTITY_FILTER_KIND=native KAFKA_IDENTITY_KAFKA_VERSION=$(KAFKA_TEST_VERSION) e2e/run $(addprefix e2e/tests/,$(BROKER_DEPENDENT_TESTS) test_waypoint_identity.py test_native_module.py)

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy -j $(CARGO_JOBS) --workspace --all-targets -- -D warnings
	$(CARGO) clippy -j $(CARGO_JOBS) --release --target $(WASM_TARGET) -p kafka-identity-filter -- -D warnings
	scripts/shell-scripts | xargs -d '\n' shellcheck -x
	.tools/venv/bin/ruff check .
	.tools/venv/bin/python scripts/doc_log_lines.py
	cd e2e/clients/go && test -z "$$(gofmt -l .)" && GOFLAGS=-mod=readonly go vet ./...

unit: setup
	$(CARGO) test -j $(CARGO_JOBS) --workspace

# The CLI users get is the release build. make test runs its tests with the dev build `cargo test`
# has already compiled (same code, and the RSA crates optimized in dev too, see Cargo.toml):
# a release build of it costs ~3.5 min on a cold machine. Tests find it as KAFKA_IDENTITY_CLI.
CLI_PROFILE ?= release
cli:
	$(CARGO) build -j $(CARGO_JOBS) $(if $(filter release,$(CLI_PROFILE)),--release) -p kafka-identity-cli
export KAFKA_IDENTITY_CLI = $(CURDIR)/target/$(CLI_PROFILE)/kafka-identity

e2e: setup wasm cli
	e2e/run

# make test's short pass on Kafka $(KAFKA_TEST_VERSION) (~4 min): the tests whose outcome depends on
# the broker -- what its SASL, OAUTHBEARER validators, KIP-368 and authorizer do with our tokens
# (clients allowed and denied, refusals, signed tokens and key rotation, re-authentication, a
# refused token, configuration changes). Load, quotas, placement behind other filters, the
# dashboard's metrics, kafkajs and the proxy-only tests measure Envoy and the filter, which the
# broker's version does not change; they run on 4.4.0 in `make e2e`, and the whole suite runs on
# every Kafka in `make e2e-kafka-matrix`.
# The proxy's own load, hostile-bytes and soak tests of docs/reliability.md: they measure Envoy
# and the filter, and run once, in `make e2e`.
PROXY_ONLY_TESTS := test_connections_at_scale.py test_hostile_streams.py test_soak.py
BROKER_DEPENDENT_TESTS := test_clients.py test_refusals.py test_signed_tokens.py \
  test_reauthentication.py test_config_changes.py
e2e-kafka-3.9: setup wasm cli
	KAFKA_IDENTITY_KAFKA_VERSION=$(KAFKA_TEST_VERSION) e2e/run $(addprefix e2e/tests/,$(BROKER_DEPENDENT_TESTS))

# prebuild-tools: deploy-check's and the mesh's Go builds start in the background, at the lowest
# priority, and compile while the e2e suites mostly wait (a no-op when they are installed).
# native-probe: the dynamic module (native/, a first slice) in a real Envoy on ephemeral ports
# (~2.5 min of build, seconds of test).
test: CLI_PROFILE = debug
test: setup prebuild-tools lint unit wasm cli reproducible native-probe e2e e2e-native-short deploy-check e2e-mesh

prebuild-tools:
	scripts/prebuild-tools

demo: setup wasm
	e2e/demo

stack-up: setup wasm
	e2e/local/stack-up

stack-down:
	e2e/local/stack-down

e2e-matrix: setup wasm cli
	scripts/install-deps --envoy-versions "$(ENVOY_MATRIX)"
	e2e/run-matrix $(ENVOY_MATRIX)

e2e-kafka-matrix: setup wasm cli
	scripts/install-deps --kafka-versions "$(KAFKA_MATRIX)"
	e2e/run-kafka-matrix $(KAFKA_MATRIX)

# Shell completions of the CLI: target/completions/kafka-identity.{bash,zsh,fish}
completions: cli
	mkdir -p target/completions
	for sh in bash zsh fish; do target/release/kafka-identity completions $$sh > target/completions/kafka-identity.$$sh; done
	@echo "wrote target/completions/kafka-identity.{bash,zsh,fish}"

fuzz:
	scripts/install-fuzz
	cd kafka-codec/fuzz && for t in requests responses; do \
	  cargo +$(FUZZ_TOOLCHAIN) fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048; done
	cd identity/fuzz && for t in $$(cargo +$(FUZZ_TOOLCHAIN) fuzz list); do \
	  cargo +$(FUZZ_TOOLCHAIN) fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048; done

oci: wasm
	scripts/oci-image

# A second build of the .wasm from an empty target directory must give the same bytes.
reproducible: wasm
	CARGO_JOBS=$(CARGO_JOBS) scripts/check-reproducible

# Everything a release ships, versioned, with checksums and SBOMs (scripts/release).
release: setup wasm cli
	scripts/install-deploy-tools
	scripts/install-release-tools
	scripts/release

# Offline: istioctl (from the Go module proxy), kubeconform with Kubernetes, Istio, Strimzi and
# PrometheusRule schemas, envoy --mode validate on the patches (the native EnvoyFilter with the built
# module: hence `native`), shellcheck; promtool on the alerts
# and the dashboard's queries; then the OCI image, the Helm chart (lint, kubeconform, the same
# objects as the overlays, its pluginConfigs through `kafka-identity config check`, its schema's
# refusals) and the one-version tests.
deploy-check: setup wasm cli native
	scripts/install-deploy-tools
	scripts/validate-manifests --no-install
	scripts/install-promtool
	scripts/validate-observability --no-install
	.tools/venv/bin/python -m pytest -q -p no:cacheprovider deploy/tests

# The mesh on this machine, in network namespaces of its own (root; see e2e/mesh/README.md).
# install-deploy-tools: helm, for the pass that installs the chart (a no-op after deploy-check).
e2e-mesh: setup wasm
	scripts/install-mesh
	scripts/install-deploy-tools
	e2e/mesh/run

FAULT_REPEATS ?= 5
# Broker kill, rolling restart and sidecar restart FAULT_REPEATS times each (spread of the
# recovery times for docs/reliability.md), then istiod away and a config push; the ambient
# faults (test_ambient.py::test_fault_*) and the filter upgrades (test_upgrades.py), with the
# long ones that make test's mesh pass skips (KAFKA_IDENTITY_MESH_LONG=1).
e2e-mesh-faults: setup wasm
	scripts/install-mesh
	KAFKA_IDENTITY_MESH_FAULT_REPEATS=$(FAULT_REPEATS) KAFKA_IDENTITY_MESH_LONG=1 \
	  e2e/mesh/run -k "test_reliability or test_fault_ or test_upgrades"
	.tools/venv/bin/python e2e/mesh/reliability_report.py

# The mesh soak (tests/test_soak_mesh.py): SOAK_HOURS, half with sidecars, half through the
# waypoint, one fault every 20-40 minutes; figures in e2e/.state/figures/soak-mesh-<h>h.json.
soak-mesh: setup wasm
	scripts/install-mesh
	KAFKA_IDENTITY_MESH_SOAK_HOURS=$(SOAK_HOURS) e2e/mesh/run -s -k test_soak_mesh

# kind + Istio end to end on this machine: its own Docker engine and every image built here from
# pinned parts (e2e/kind/local; root). KIND_ARGS go to e2e/kind/run, e.g. --delivery envoyfilter.
# With internet and a Docker engine of your own, e2e/kind/run alone pulls everything instead.
KIND_ARGS ?=
e2e-kind: setup wasm
	scripts/install-mesh
	scripts/install-deploy-tools
	scripts/install-kind
	e2e/kind/local/run-here $(KIND_ARGS)

# bench/null-filter: a Wasm filter that does nothing, the benchmark's path (n).
bench: setup wasm cli native
	RUSTFLAGS="$(WASM_RUSTFLAGS)" $(CARGO) build -j $(CARGO_JOBS) --release --target $(WASM_TARGET) -p kafka-identity-bench-null-filter
	bench/run

# Issue #12 scenario 9 (docs/reliability.md): its own side stack (no main stack needed);
# `make test` runs the same test for 2 minutes. Figures: e2e/.state/figures/soak-<n>min.json.
soak: setup wasm
	SOAK_MINUTES=$(SOAK_MINUTES) .tools/venv/bin/pytest -q -s -p no:cacheprovider e2e/tests/test_soak.py

bench-codec:
	$(CARGO) bench -j $(CARGO_JOBS) -p kafka-codec --bench request_scanner

# What a connection costs the filter's own code, natively (identify, tokens, the driver).
bench-filter:
	$(CARGO) bench -j $(CARGO_JOBS) -p kafka-identity-filter --bench connection

clean:
	e2e/local/stack-down || true
	$(CARGO) clean
