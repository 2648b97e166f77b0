#!/bin/sh
# Test the lab's apt repository and its stand-in packages, for real:
#
# - build-repo.sh builds and signs the repository;
# - apt-get update, in a private state directory, accepts it with `Signed-By`
#   pointing at the generated key, and refuses it once the index is tampered with;
# - the packages apt downloads unpack, and their programs behave as the
#   workflows expect: `gitlab-runner verify` against a tiny stand-in of
#   GitLab's POST /api/v4/runners/verify (valid and invalid tokens), `run`
#   serving gitlab_runner_* metrics and checking in with a system_id,
#   `docker info` before and after the "daemon" starts, cAdvisor's /metrics;
# - no runner token appears in any output.
#
# Touches only loopback and temporary directories; every wait is bounded.
# Usage: tests/lab/check-repo.sh   (exit status non-zero on any failure)

set -eu

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
pass() { echo "ok: $*"; }

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait (at most 10 s) until URL answers 200; print its body.
fetch() {
    /usr/bin/python3 - "$1" <<'EOF'
import sys, time, urllib.request
deadline = time.time() + 10
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            sys.stdout.write(r.read().decode())
            sys.exit(0)
    except Exception as e:
        if time.time() > deadline:
            sys.exit(f"{sys.argv[1]} did not answer: {e}")
        time.sleep(0.2)
EOF
}

# 1. Build.
"$here/build-repo.sh" "$tmp/repo" >/dev/null || fail "build-repo.sh failed"
pass "repository built"

# 2. apt accepts the signed repository (private state; nothing of this machine's apt changes).
arch=$(dpkg --print-architecture)
mkdir -p "$tmp/apt/lists/partial" "$tmp/apt/cache/archives/partial" "$tmp/apt/etc/sources.list.d" \
    "$tmp/apt/etc/preferences.d" "$tmp/dl"
cp "$tmp/repo/flowrun-lab.asc" "$tmp/apt/flowrun-lab.asc"
cat >"$tmp/apt/etc/sources.list.d/flowrun-lab.sources" <<EOF
Types: deb
URIs: file://$tmp/repo
Suites: lab
Components: main
Architectures: $arch
Signed-By: $tmp/apt/flowrun-lab.asc
EOF
: >"$tmp/apt/etc/sources.list"
apt_opts="-o Dir::Etc=$tmp/apt/etc -o Dir::Etc::sourcelist=$tmp/apt/etc/sources.list
    -o Dir::Etc::sourceparts=$tmp/apt/etc/sources.list.d -o Dir::State::Lists=$tmp/apt/lists
    -o Dir::Cache=$tmp/apt/cache -o Dir::State::status=/var/lib/dpkg/status
    -o APT::Sandbox::User=root -o Debug::NoLocking=1"
# shellcheck disable=SC2086 # apt_opts is a list of options
apt-get $apt_opts -q update >"$tmp/update.log" 2>&1 || { cat "$tmp/update.log" >&2; fail "apt-get update refused the repository"; }
grep -Eq "^(W|E):" "$tmp/update.log" && { cat "$tmp/update.log" >&2; fail "apt-get update warned"; }
pass "apt-get update accepts the signed repository"
for p in gitlab-runner flowrun-lab-docker flowrun-lab-cadvisor; do
    # shellcheck disable=SC2086
    (cd "$tmp/dl" && apt-get $apt_opts -q download "$p" >/dev/null 2>&1) || fail "apt-get download $p failed"
done
pass "apt-get downloads the three packages"

# 2b. A tampered index is refused: the signature check is real.
cp -R "$tmp/repo" "$tmp/bad"
# Change a hash in the signed InRelease, as an attacker swapping the index would have to.
sed -i '0,/^ [0-9a-f]\{64\} /s//  0000000000000000000000000000000000000000000000000000000000000000 /' "$tmp/bad/dists/lab/InRelease"
rm -f "$tmp/bad/dists/lab/Release" "$tmp/bad/dists/lab/Release.gpg"
sed -i "s#file://$tmp/repo#file://$tmp/bad#" "$tmp/apt/etc/sources.list.d/flowrun-lab.sources"
rm -rf "$tmp/apt/lists"/*lab* 2>/dev/null || true
# shellcheck disable=SC2086
if apt-get $apt_opts -q update >"$tmp/bad.log" 2>&1 && ! grep -Eq "^(W|E):" "$tmp/bad.log"; then
    fail "apt-get accepted a tampered repository"
fi
pass "apt-get refuses a tampered index"

# 3. Unpack and look at the packages.
root="$tmp/root"
for deb in "$tmp"/dl/*.deb; do
    dpkg-deb -x "$deb" "$root"
    dpkg-deb -f "$deb" Description | grep -qi "stand-in" || fail "$(basename "$deb") does not say it is a stand-in"
done
pass "every package description says it is a stand-in"

runner="$root/usr/bin/gitlab-runner"
"$runner" --version | grep -q "stand-in" || fail "gitlab-runner --version does not say it is a stand-in"
pass "gitlab-runner --version says it is a stand-in"

# 4. A stand-in of GitLab's runner verification endpoint.
gl_port=$(free_port)
valid="glrt-validTOKENabcdefghij0123"
cat >"$tmp/gitlab.py" <<'EOF'
import sys, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
port, valid, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        p = urllib.parse.parse_qs(body)
        ok = self.path == "/api/v4/runners/verify" and p.get("token") == [valid]
        with open(log, "a") as f:
            f.write(f"{self.path} ok={ok} system_id={p.get('system_id', [''])[0]}\n")
        self.send_response(200 if ok else 403)
        self.end_headers()
        self.wfile.write(b'{"id": 1}' if ok else b'{"message": "403 Forbidden"}')
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
/usr/bin/python3 "$tmp/gitlab.py" "$gl_port" "$valid" "$tmp/gitlab.log" &
pids="$pids $!"
fetch "http://127.0.0.1:$gl_port/" >/dev/null 2>&1 || true # (501 for GET; wait until it listens)

metrics_port=$(free_port)
mkdir -p "$tmp/etc"
write_config() {
    cat >"$tmp/etc/config.toml" <<EOF
concurrent = 4
check_interval = 3
listen_address = "127.0.0.1:$metrics_port"

[[runners]]
  name = "lab-runner"
  url = "http://127.0.0.1:$gl_port"
  token = "$1"
  executor = "docker"
  [runners.docker]
    image = "debian:bookworm"
EOF
}

write_config "$valid"
out=$("$runner" verify --config "$tmp/etc/config.toml" 2>&1) || fail "verify of a valid token failed: $out"
echo "$out" | grep -q "is valid" || fail "verify did not say the runner is valid: $out"
echo "$out" | grep -q "$valid" && fail "verify printed the token"
pass "gitlab-runner verify accepts a valid token (and does not print it)"
[ -s "$tmp/etc/.runner_system_id" ] || fail "no system id was kept beside config.toml"

write_config "glrt-notTHEtokenXXXXXXXXXXXX"
if out=$("$runner" verify --config "$tmp/etc/config.toml" 2>&1); then
    fail "verify of an invalid token succeeded: $out"
fi
echo "$out" | grep -q "is not valid" || fail "verify did not say the runner is not valid: $out"
pass "gitlab-runner verify fails on an invalid token"

# 5. `run`: metrics and check-in.
write_config "$valid"
"$runner" run --config "$tmp/etc/config.toml" >"$tmp/run.log" 2>&1 &
pids="$pids $!"
metrics=$(fetch "http://127.0.0.1:$metrics_port/metrics") || fail "gitlab-runner run serves no metrics"
for m in 'gitlab_runner_concurrent 4' 'gitlab_runner_jobs{' 'gitlab_runner_limit{' 'gitlab_runner_version_info{' \
    'gitlab_runner_job_duration_seconds_bucket{' 'gitlab_runner_request_concurrency_exceeded_total{' \
    'flowrun_lab_standin_info{component="gitlab-runner"} 1'; do
    echo "$metrics" | grep -qF "$m" || fail "metrics lack \`$m\`"
done
echo "$metrics" | grep -q "$valid" && fail "metrics show the token"
i=0
until grep -q "ok=True system_id=s_" "$tmp/gitlab.log" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 50 ] && fail "gitlab-runner run did not check in with a system_id"
    sleep 0.1
done
grep -q "$valid" "$tmp/run.log" && fail "gitlab-runner run logged the token"
pass "gitlab-runner run serves gitlab_runner_* metrics and checks in with a system_id"

# 6. docker stand-in.
docker="$root/usr/bin/docker"
export FLOWRUN_LAB_DOCKER_STATE="$tmp/docker.started"
if "$docker" info >/dev/null 2>&1; then fail "docker info succeeded before the daemon started"; fi
sh "$root/etc/init.d/docker" start >/dev/null
"$docker" info | grep -q "stand-in" || fail "docker info does not say it is a stand-in"
[ "$("$docker" info --format '{{.ServerVersion}}')" = "0.1.0~lab" ] || fail "docker info --format is wrong"
"$docker" version | grep -q "stand-in" || fail "docker version does not say it is a stand-in"
sh "$root/etc/init.d/docker" status >/dev/null || fail "docker status after start is not 0"
pass "docker stand-in answers info/version once started"

# 7. cAdvisor stand-in.
ca_port=$(free_port)
"$root/usr/bin/cadvisor" --listen_ip=127.0.0.1 --port="$ca_port" 2>/dev/null &
pids="$pids $!"
cm=$(fetch "http://127.0.0.1:$ca_port/metrics") || fail "cadvisor serves no metrics"
for m in 'container_cpu_usage_seconds_total{' 'container_memory_working_set_bytes{' 'machine_cpu_cores '; do
    echo "$cm" | grep -qF "$m" || fail "cadvisor metrics lack \`$m\`"
done
pass "cadvisor stand-in serves container_* metrics"

echo "check-repo: all checks passed"
