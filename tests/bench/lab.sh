#!/usr/bin/env bash
# Lab benchmark (figures, not assertions): the shipped workflows against the
# lab with 1 and 5 runner VMs (or the counts given). Needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p flowrun -p flowrun-lab
exec target/release/flowrun-lab bench "$@"
