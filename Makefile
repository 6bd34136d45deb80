# xcam: the two commands a new user runs are `make demo` and `make test`.
# Everything they need is provisioned here, idempotently: libtorch (a per-user venv holding the
# PyPI torch wheel), and private Redis and Postgres servers on loopback.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

TORCH_VENV := $(shell . scripts/torch-env.sh && echo $$TORCH_VENV)
# The API contract test runs this schemathesis against a live stack.
export XCAM_SCHEMATHESIS := $(shell . scripts/torch-env.sh && echo $$SCHEMATHESIS_VENV)/bin/schemathesis
# torch-sys asks the venv's Python where libtorch is.
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(TORCH_VENV)/bin:$(PATH)
export CARGO_TERM_COLOR ?= never
SERVICES_ENV = eval "$$(scripts/services.sh env)"
CARGO_JOBS ?= 2

.PHONY: help setup torch services down build test lint manifests demo chaos bench bench-pipeline bench-redis bench-scale fuzz dashboard browser schemathesis

help:
	@echo "make demo    run the whole job end to end on local Redis and Postgres"
	@echo "make test    the whole test suite (lint included)"
	@echo "make bench   every CAM method, faithfulness setting and the OOD score vs forward-only and pytorch-grad-cam, one run"
	@echo "make bench-pipeline  the pipeline vs the engine alone (demo, DenseNet-121), Postgres statements and Redis round trips per image, worker memory over 100 000 images, producer memory on a 1 GiB ZIP"
	@echo "make bench-redis     Redis keys and memory before, during and after a 10 000-image batch"
	@echo "make bench-scale     operator queries, /metrics, stats, a 100 000-entry ingest and CSV over 10M log rows (~15 min)"
	@echo "make chaos   1 000 images through killed workers and Postgres, Redis, blob-store and producer faults (~20 min)"
	@echo "make fuzz    the ZIP and DICOM property tests with 20000 cases each"
	@echo "make down    stop the private Redis and Postgres"

torch:
	@scripts/setup-torch.sh

services:
	@scripts/services.sh up

down:
	@scripts/services.sh down

# Chart.js for the dashboard, from npm through the committed lock file; the binary embeds it.
dashboard: producer/dashboard/node_modules/chart.js/dist/chart.umd.min.js

producer/dashboard/node_modules/chart.js/dist/chart.umd.min.js: producer/dashboard/package-lock.json producer/dashboard/package.json
	npm ci --prefix producer/dashboard --no-audit --no-fund --ignore-scripts
	@touch $@

# Debian's Chromium and ChromeDriver for the dashboard's browser test, and playwright-core to drive it.
browser:
	@scripts/setup-browser.sh

# schemathesis for the API contract test.
schemathesis:
	@scripts/setup-schemathesis.sh

# The Kubernetes manifests against the API schemas (kubernetes-validate, offline).
manifests:
	@scripts/validate-manifests.sh

setup: torch services dashboard

build: torch dashboard
	cargo build --release -j $(CARGO_JOBS) --bins

lint: torch dashboard
	cargo fmt --all --check
	cargo clippy -j $(CARGO_JOBS) --all-targets -- -D warnings

# The test servers' data is thrown away: they may skip fsync (see scripts/services.sh).
test: export XCAM_SERVICES_DURABILITY := fast
test: setup browser schemathesis lint manifests
	cargo build -j $(CARGO_JOBS) --workspace --bins
	$(SERVICES_ENV); cargo test -j $(CARGO_JOBS) --workspace

demo: setup build
	$(SERVICES_ENV); scripts/demo.sh

# The fault campaign (tests/tests/it/chaos.rs): about 20 minutes, on its own Postgres and Redis.
# XCAM_CHAOS_OUTAGE=30s XCAM_CHAOS_BLOB_OUTAGE=10s make chaos gives a quick look.
chaos: export XCAM_SERVICES_DURABILITY := fast
chaos: setup
	cargo build -j $(CARGO_JOBS) --workspace --bins
	$(SERVICES_ENV); cargo test -j $(CARGO_JOBS) -p xcam-tests --test it -- --ignored --nocapture chaos

# The property tests of the ZIP and DICOM ingestion paths, with many more cases than `make test`.
fuzz: torch dashboard
	PROPTEST_CASES=$${PROPTEST_CASES:-20000} cargo test --release -j $(CARGO_JOBS) -p xcam-shared --test fuzz
	PROPTEST_CASES=$${PROPTEST_CASES:-20000} cargo test --release -j $(CARGO_JOBS) -p xcam-producer fuzz

bench: torch build
	scripts/bench.sh

bench-pipeline: setup build
	$(SERVICES_ENV); scripts/bench-pipeline.sh

bench-redis: setup build
	$(SERVICES_ENV); scripts/bench-redis.sh

# The control plane at fleet scale (tests/src/bin/bench-scale.rs): it loads 10 million log rows
# and 1 million items into a database of its own; BENCH_LOG_ROWS=… BENCH_ITEMS=… for a quick look.
bench-scale: setup build
	$(SERVICES_ENV); target/release/bench-scale
