# Switchboard developer entry points. The README's two commands are `make demo`
# and `make test`; everything they need is installed by the scripts in hack/.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# The test and demo builds are one-shot: incremental compilation only costs time and
# disk there (its cache is as large as the build). A developer's own setting wins.
export CARGO_INCREMENTAL ?= 0

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: cluster-up cluster-down cluster-env cluster-status binaries
binaries: ## build (or reuse from cache) the control plane, kubectl, kwok, helm and etcd
	@hack/build-binaries.sh
cluster-up: ## start etcd, the control plane, kwok nodes and Postgres on loopback
	@hack/cluster.sh up
cluster-down: ## stop exactly what cluster-up started and remove its state
	@hack/cluster.sh down
cluster-env: ## print shell exports: eval "$$(make -s cluster-env)"
	@hack/cluster.sh env
cluster-status: ## say whether the local cluster is up
	@hack/cluster.sh status

.PHONY: test unit
test: ## fmt, clippy, CRD drift, unit and end-to-end tests against the local cluster
	@hack/test.sh
unit: ## the tests that need no cluster and no Postgres (unit, CRD validation, runtime on SQLite)
	@hack/unit.sh

.PHONY: crds
crds: ## regenerate config/crd from the Rust types
	@source hack/lib/env.sh && cargo run -q -p crds --bin crdgen

.PHONY: demo demo-down
demo: ## run the whole platform on this machine
	@hack/demo.sh up
demo-down: ## stop the demo
	@hack/demo.sh down

.PHONY: images
images: ## build the operator and runtime images (release, offline, buildah from scratch)
	@hack/images.sh build --profile release

.PHONY: bench bench-instructions bench-operator bench-compare
bench: ## benchmarks: runtime vs. calling the mock upstream directly (table with aims and ratios)
	@hack/bench.sh
bench-compare: ## the runtime side by side with the LiteLLM proxy and LangDB's AI Gateway, all in front of mock-llm
	@hack/python-env.sh .switchboard/litellm tools/litellm-requirements.txt && langdb=$$(hack/langdb-gateway.sh) && hack/bench.sh --litellm .switchboard/litellm/bin/litellm --langdb "$$langdb"
bench-instructions: ## instructions per chat under callgrind only (the stable figure, a few minutes)
	@hack/bench.sh --instructions-only
bench-operator: ## operator at scale: N agents to Available, memory, idle writes, cleanup (N=100)
	@operator/bench/scale.sh $(or $(N),100) $(or $(REPLICAS),1) $(or $(MODE),Managed)
