#!/usr/bin/env bash
# SSH benchmark (figures, not assertions): real sshd hosts on loopback, the
# ten-step workflow of tests/data/web.yml. Usage: tests/bench/ssh.sh [N...]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p flowrun -p flowrun-lab
exec target/release/ssh-bench "$@"
