# Everyday commands. `make test` is exactly the README's test command; `make lint` what CI runs first.
.PHONY: deps build test coverage bench bench-api run lint smoke demo

deps: ## Tools the checks and benchmarks use (Debian): Redis, promtool, systemd-analyze, wrk, nginx
	apt-get update && apt-get install -y redis-server prometheus systemd wrk nginx-light curl util-linux
	rustup component add rustfmt clippy llvm-tools-preview
	cargo install cargo-llvm-cov --locked

build:
	cargo build --release --locked -p proxy-checker

test:
	cargo test --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

coverage: ## Line coverage of the whole test suite; summary printed, HTML in target/llvm-cov/html
	cargo llvm-cov --workspace --summary-only
	cargo llvm-cov report --html

bench: ## Check engine benchmarks -> bench-out/results.md (see docs/BENCHMARKS.md)
	python3 bench/run.py

bench-api: ## API under wrk next to nginx -> bench-out/api.md
	python3 bench/api.py

run: ## The service on its embedded default (file store under ./data, API on 127.0.0.1:8080)
	cargo run --release -p proxy-checker -- serve

demo: ## An offline first check: a loopback farm of 300 proxies of every kind, one check against it
	./demo.sh

smoke: build
	cargo build --release -p proxy-farm
	tests/e2e/smoke_test.sh target/release/proxy-checker target/release/proxy-farm
