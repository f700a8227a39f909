#!/usr/bin/env bash
# Checks the deployment and operations files (helm/d2c, ops/):
#
#   1. promtool check rules  helm/d2c/alerts/d2c-alerts.yaml
#   2. promtool test rules   ops/alerts-test.yaml (the alerts' unit tests)
#   3. the Grafana dashboard is valid JSON with a ${datasource} variable, and
#      every metric and label matcher of the dashboard and the alerts is one
#      of ops/metrics.txt
#   4. every YAML file of the chart that is not a template parses
#   5. the templates: balanced {{ }} always; with the helm-python-sdk package
#      (Helm's own Go SDK, from PyPI; there is no helm binary here) also
#      `helm lint --strict` and `helm template` of the chart with the default
#      values and with every option on, checks of what they render (secrets
#      only from Secrets, probes, grace period, group ids, KEDA bounds and
#      queries, what the ServiceMonitors select, …), every Kubernetes object
#      against the API schema of the kubernetes Python client's models, and
#      that invalid values (33 gateway replicas, …) are refused
#
# It installs what is missing on first use: promtool (Debian's prometheus
# package), PyYAML, helm-python-sdk and the kubernetes client (into a venv
# under ~/.cache/d2c).
# A part whose tool cannot be installed is skipped with a message, except
# promtool, which is required. D2C_OPS_HELM=0 skips the rendering.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/d2c"
OPS="$ROOT/ops"
CACHE_DIR="${D2C_CACHE_DIR:-$HOME/.cache/d2c}"
VENV="$CACHE_DIR/ops-venv"
HELM_SDK_VERSION="0.2.2"
KUBERNETES_CLIENT_VERSION="37.0.2"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

PASSED=0
FAILED=0
SKIPPED=0
pass() { PASSED=$((PASSED + 1)); printf 'ok    %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$*"; }
skip() { SKIPPED=$((SKIPPED + 1)); printf 'skip  %s\n' "$*"; }

# Runs a named check: its output is shown only when it fails.
check() { # name command...
  local name="$1"; shift
  local output
  if output="$("$@" 2>&1)"; then
    pass "$name"
    [ -z "${VERBOSE:-}" ] || printf '%s\n' "$output" | sed 's/^/      /'
  else
    fail "$name"
    printf '%s\n' "$output" | sed 's/^/      /'
  fi
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $*"; fi
}

apt_install() {
  log "Installing $* (Debian packages)"
  if [ ! -f "$CACHE_DIR/.apt-updated" ]; then
    as_root apt-get update -qq && mkdir -p "$CACHE_DIR" && touch "$CACHE_DIR/.apt-updated"
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# promtool comes with Debian's prometheus package. Its postinst would start
# a Prometheus server; a policy-rc.d that denies every start keeps it from
# doing so while the package installs (removed again afterwards).
ensure_promtool() {
  if command -v promtool >/dev/null; then return; fi
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    created=1
  fi
  local status=0
  apt_install prometheus || status=$?
  if [ "$created" = 1 ]; then as_root rm -f "$policy"; fi
  [ "$status" = 0 ] || die "installing the prometheus package (for promtool) failed"
  command -v promtool >/dev/null || die "promtool is not on the PATH after installing prometheus"
}

# A Python with PyYAML: the system one if it has it, else a venv of our own.
PYTHON=""
ensure_python() {
  command -v python3 >/dev/null || die "python3 is required"
  if python3 -c 'import yaml' 2>/dev/null; then PYTHON=python3; return; fi
  ensure_venv && "$VENV/bin/python" -c 'import yaml' 2>/dev/null && PYTHON="$VENV/bin/python" && return
  log "PyYAML is not installed and could not be installed: the YAML checks are skipped"
  PYTHON=python3
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$CACHE_DIR"
    python3 -m venv "$VENV" >/dev/null 2>&1 || { rm -rf "$VENV"; return 1; }
  fi
  "$VENV/bin/python" -c 'import yaml' 2>/dev/null \
    || "$VENV/bin/pip" install -q pyyaml >/dev/null 2>&1 || return 1
}

# helm-python-sdk bundles Helm's Go SDK (libhelm_c) for linux x86_64 and
# more: the chart renders with the real template engine, no helm binary.
HELM_PYTHON=""
ensure_helm_sdk() {
  [ "${D2C_OPS_HELM:-1}" != 0 ] || return 1
  ensure_venv || return 1
  if ! "$VENV/bin/python" -c 'import helm_python' 2>/dev/null; then
    log "Installing helm-python-sdk $HELM_SDK_VERSION into $VENV (once; about 75 MB)"
    "$VENV/bin/pip" install -q "helm-python-sdk==$HELM_SDK_VERSION" >/dev/null 2>&1 || return 1
  fi
  "$VENV/bin/python" -c 'import helm_python' 2>/dev/null || return 1
  # The kubernetes client's models: the API schema the output is checked against.
  if ! "$VENV/bin/python" -c 'import kubernetes' 2>/dev/null; then
    log "Installing the kubernetes Python client into $VENV (once)"
    "$VENV/bin/pip" install -q "kubernetes==$KUBERNETES_CLIENT_VERSION" >/dev/null 2>&1 \
      || log "the kubernetes client could not be installed: rendered objects are not schema-checked"
  fi
  HELM_PYTHON="$VENV/bin/python"
}

cd "$ROOT"

ensure_promtool
ensure_python

log "Alert rules ($(promtool --version 2>&1 | head -1))"
check "promtool check rules helm/d2c/alerts/d2c-alerts.yaml" \
  promtool check rules helm/d2c/alerts/d2c-alerts.yaml
check "promtool test rules ops/alerts-test.yaml" \
  promtool test rules ops/alerts-test.yaml

log "Dashboard and metric names"
check "dashboard is valid JSON with a \${datasource} variable" \
  "$PYTHON" "$OPS/check_ops.py" dashboard "$CHART/dashboards/d2c-overview.json"
if "$PYTHON" -c 'import yaml' 2>/dev/null; then
  check "every metric and label matcher in the dashboard and the alerts is in ops/metrics.txt" \
    "$PYTHON" "$OPS/check_ops.py" metrics "$OPS/metrics.txt" \
    "$CHART/dashboards/d2c-overview.json" "$CHART/alerts/d2c-alerts.yaml"
  log "YAML files"
  check "every non-template YAML file of helm/d2c (and ops/) parses" \
    "$PYTHON" "$OPS/check_ops.py" yaml "$CHART" "$OPS"
else
  skip "metric names (needs PyYAML to read the alert rules)"
  skip "YAML files parse (PyYAML could not be installed)"
fi

log "Templates"
check "every {{ in helm/d2c/templates has its }}" \
  "$PYTHON" "$OPS/check_ops.py" braces "$CHART/templates"
if ensure_helm_sdk; then
  check "helm lint --strict, helm template (defaults, every option on, refused values), API schema of the output" \
    "$HELM_PYTHON" "$OPS/check_ops.py" render "$CHART"
else
  skip "helm lint/template: helm-python-sdk could not be installed (or D2C_OPS_HELM=0); no helm binary is available here"
fi

printf '\ncheck-ops: %d passed, %d failed, %d skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
[ "$FAILED" = 0 ]
