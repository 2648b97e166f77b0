#!/usr/bin/env bash
# GitHub runner benchmark (figures, not assertions): the health gate's
# decision with two runners, a full deploy with and without failover, and
# the journaled re-run of provisioning (target under 50 ms), each repeated R
# times (min / median / max), against the GitHub lab. Needs root.
# Usage: sudo tests/bench/github.sh [--repeat R]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p flowrun -p flowrun-lab
exec target/release/github-bench "$@"
