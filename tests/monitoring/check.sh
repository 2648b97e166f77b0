#!/bin/sh
# Check the monitoring content the GitLab and GitHub runner workflows ship,
# with the real promtool: the alert rules (`promtool check rules`), their
# unit tests (`promtool test rules`), the Prometheus configuration template
# with a targets file in the shape monitor-gitlab-runner.yml writes
# (`promtool check config`, which also parses the file_sd file), and the
# Grafana dashboards (valid JSON, schemaVersion, the named panels, and every
# panel query parsed by promtool as a recording rule).
#
# Usage: tests/monitoring/check.sh   (needs promtool and python3; exit status
# non-zero on any failure)

set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
files="$root/workflows/files"
templates="$root/workflows/templates"
PROMTOOL=${PROMTOOL:-promtool}
PYTHON=${PYTHON:-python3}

command -v "$PROMTOOL" >/dev/null 2>&1 || { echo "check: promtool is required (Debian package prometheus)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
failed=0
step() {
    name=$1
    shift
    if "$@" >"$tmp/out" 2>&1; then
        echo "ok: $name"
    else
        echo "FAIL: $name" >&2
        sed 's/^/    /' "$tmp/out" >&2
        failed=1
    fi
}

# 1. Alert rules and their unit tests.
step "promtool check rules gitlab-runner-alerts.yml" "$PROMTOOL" check rules "$files/gitlab-runner-alerts.yml"
step "promtool test rules gitlab-runner-alerts.test.yml" \
    sh -c "cd '$here' && '$PROMTOOL' test rules gitlab-runner-alerts.test.yml"

# 2. The Prometheus configuration template, rendered with the workflow's
#    defaults into a temporary directory, with the rules and a targets file.
mkdir -p "$tmp/prom/rules" "$tmp/prom/file_sd"
cp "$files/gitlab-runner-alerts.yml" "$tmp/prom/rules/"
cp "$here/targets.sample.json" "$tmp/prom/file_sd/gitlab-runners.json"
sed -e "s#{{prometheus_scrape_interval}}#30s#g" \
    -e "s#{{prometheus_rules_dir}}#$tmp/prom/rules#g" \
    -e "s#{{prometheus_file_sd_dir}}#$tmp/prom/file_sd#g" \
    "$templates/prometheus.yml.hbs" >"$tmp/prom/prometheus.yml"
step "prometheus.yml.hbs uses only the variables this check renders" \
    sh -c "! grep -n '{{' '$tmp/prom/prometheus.yml'"
step "promtool check config (prometheus.yml.hbs + targets file + rules)" \
    "$PROMTOOL" check config "$tmp/prom/prometheus.yml"
step "the targets sample has node, cadvisor and gitlab-runner targets per runner" \
    "$PYTHON" - "$here/targets.sample.json" <<'EOF'
import json, sys
groups = json.load(open(sys.argv[1]))
by_instance = {}
for g in groups:
    assert set(g) == {"targets", "labels"}, g
    by_instance.setdefault(g["labels"]["instance"], set()).add(g["labels"]["job"])
assert by_instance, "no targets"
for inst, jobs in by_instance.items():
    assert jobs == {"node", "cadvisor", "gitlab-runner"}, (inst, jobs)
EOF

# 3. The Grafana dashboards: JSON, schemaVersion, uid, the named panels, and
#    every panel query parsed by promtool (as a recording rule).
check_dashboard() {
    dash=$1 want=$2 base=$(basename "$1" .json)
    step "$base is valid JSON" "$PYTHON" -m json.tool "$dash"
    step "$base has schemaVersion, uid and the named panels" "$PYTHON" - "$dash" "$want" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
assert isinstance(d.get("schemaVersion"), int) and d["schemaVersion"] >= 36, "schemaVersion"
assert d.get("uid") and d.get("title"), "uid/title"
titles = {p["title"] for p in d["panels"]}
missing = set(sys.argv[2].split(",")) - titles
assert not missing, f"missing panels: {sorted(missing)}"
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
for p in d["panels"]:
    assert p["targets"], f"panel {p['title']} has no query"
    assert p["datasource"]["uid"] == "${datasource}", f"panel {p['title']} does not use $datasource"
EOF
    "$PYTHON" - "$dash" "$tmp/$base-rules.yml" <<'EOF'
import json, re, sys
d = json.load(open(sys.argv[1]))
rules = []
for p in d["panels"]:
    for t in p["targets"]:
        expr = re.sub(r"\$[a-z_]+", ".*", t["expr"])
        rules.append(f"      - record: dashboard:panel_{p['id']}_{t['refId']}\n        expr: {json.dumps(expr)}\n")
open(sys.argv[2], "w").write("groups:\n  - name: dashboard\n    rules:\n" + "".join(rules))
EOF
    step "every $base query parses (promtool check rules)" "$PROMTOOL" check rules "$tmp/$base-rules.yml"
}
check_dashboard "$files/gitlab-runner-dashboard.json" \
    "Runner status,CPU usage,Memory usage,Disk usage,Jobs,Container CPU,Container memory,Job duration"
check_dashboard "$files/github-runner-dashboard.json" \
    "Runner online,Healthy for production,Runner service active,Busy,Healthy runners,Free disk,Deploy duration,Last deploy,Time since last deploy,Deploy runs"

# 4. The GitHub runner alert rules and their unit tests.
step "promtool check rules github-runner-alerts.yml" "$PROMTOOL" check rules "$files/github-runner-alerts.yml"
step "promtool test rules github-runner-alerts.test.yml" \
    sh -c "cd '$here' && '$PROMTOOL' test rules github-runner-alerts.test.yml"

if [ "$failed" -ne 0 ]; then
    echo "monitoring checks: FAILED" >&2
    exit 1
fi
echo "monitoring checks: all passed"
