#!/usr/bin/env bash
# Kubernetes benchmark (figures, not assertions): preview, apply, journaled
# re-run and --verify of the runner footprint and of N Deployments (default
# 100) against the API server stand-in. Usage: tests/bench/k8s.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p flowrun -p flowrun-lab
exec target/release/k8s-bench "$@"
