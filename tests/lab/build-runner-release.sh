#!/bin/sh
# Build the lab's stand-in of the GitHub Actions runner release.
#
#   tests/lab/build-runner-release.sh OUTDIR
#
# Why: provision-github-runner.yml downloads the runner release from
# `actions_runner_url`, checks its sha256 and unpacks it, then runs its
# config.sh, svc.sh and run.sh. In the lab that release is this tarball of
# tests/lab/actions-runner/ (a python3 stand-in that talks to the lab's
# GitHub emulator; see its bin/Runner.Listener), laid out like the real
# actions-runner-linux-x64-VERSION.tar.gz: config.sh and run.sh at the top,
# the listener and the service templates in bin/.
#
# OUTDIR afterwards:
#   actions-runner-linux-x64-VERSION.tar.gz
#   actions-runner-linux-x64-VERSION.tar.gz.sha256   its sha256, hex, one line
#
# Needs tar, gzip, sha256sum, python3 (to read the version). Exit status is
# non-zero on any failure.

set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
src="$here/actions-runner"
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=$(python3 "$src/bin/Runner.Listener" --version | cut -d' ' -f1)
name="actions-runner-linux-x64-$version.tar.gz"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
cp -R "$src" "$work/root"
# git keeps only the executable bit: set modes as the real release has them.
find "$work/root" -type d -exec chmod 0755 {} +
find "$work/root" -type f -exec chmod 0644 {} +
chmod 0755 "$work/root/config.sh" "$work/root/run.sh" "$work/root/bin/Runner.Listener" \
    "$work/root/bin/runsvc.sh"
tar -C "$work/root" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -czf "$work/$name" .
mv "$work/$name" "$out/$name"
sha256sum "$out/$name" | cut -c1-64 >"$out/$name.sha256"
echo "$out/$name"
