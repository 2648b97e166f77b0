#!/usr/bin/env bash
# Side-by-side benchmark (figures, not assertions): flowrun, Ansible and
# pyinfra on the same N real sshd hosts on loopback and the same ten-step
# workload. Usage: tests/bench/peers.sh [--flowrun-only] [--repeat R] [--ssh-kex ALG] [N...]
# (default: 10 hosts, once). The peers are installed from PyPI into a private
# virtualenv under the cache directory (not in the repository) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p flowrun -p flowrun-lab
args=("$@")
if [[ " ${args[*]} " != *" --flowrun-only "* ]]; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/flowrun-bench/venv"
  if [[ ! -x "$venv/bin/ansible-playbook" || ! -x "$venv/bin/pyinfra" ]]; then
    # The system Python, not a shim: the venv must outlive shell setups.
    py=/usr/bin/python3
    [[ -x $py ]] || py=python3
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q ansible-core pyinfra
  fi
  args=(--venv "$venv" "${args[@]}")
fi
exec target/release/peers-bench "${args[@]}"
