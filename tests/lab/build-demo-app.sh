#!/bin/sh
# Build releases of the lab's demo app (the deploy target of
# deploy-with-failover.yml in the lab).
#
#   tests/lab/build-demo-app.sh OUTDIR VERSION [broken]
#
# OUTDIR afterwards: demo-app-VERSION.tar.gz (app.py, VERSION, index.html, a
# payload, MANIFEST of their sha256 sums) and demo-app-VERSION.tar.gz.sha256.
# A `broken` release has a BROKEN file: it starts, but its /health answers 500.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 OUTDIR VERSION [broken]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
out=$1 version=$2 broken=${3:-}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
r="$work/release"
mkdir -p "$r/static"
cp "$here/demo-app/app.py" "$r/app.py"
printf '%s\n' "$version" >"$r/VERSION"
printf '<h1>demo-app %s</h1>\n' "$version" >"$r/index.html"
# Some bulk, so that unpacking a release takes a moment (a deploy can be cut in the middle).
head -c 2000000 /dev/urandom >"$r/static/payload.bin"
[ "$broken" = broken ] && echo "this release fails its health check" >"$r/BROKEN"
(cd "$r" && find . -type f ! -name MANIFEST | sed 's#^\./##' | sort | xargs sha256sum >MANIFEST)
chmod -R u=rwX,go=rX "$r"
name="demo-app-$version.tar.gz"
tar -C "$r" --sort=name --owner=0 --group=0 --numeric-owner -czf "$out/$name" .
sha256sum "$out/$name" | cut -c1-64 >"$out/$name.sha256"
echo "$out/$name"
