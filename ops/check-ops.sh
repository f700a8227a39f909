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
#   6. helm/d2c/files/topics.yaml (the Strimzi KafkaTopics' list) is what
#      ops/strimzi-topics.py renders from topology/topology.toml now
#   7. kubeconform -strict on everything step 5 rendered, offline: the
#      Kubernetes API from the JSON schemas the kubernetes-validate wheel
#      (PyPI) ships per release (the defaults against 1.25, the chart's
#      oldest, and 1.37; every option on against 1.30, for preStop.sleep, and
#      1.37), KEDA's and the Prometheus Operator's CRDs from their Go modules
#      (config/crd/bases, example/prometheus-operator-crd). Strimzi's kinds are
#      skipped with the reason: no package registry ships their CRDs; step 5
#      checks the KafkaTopics against topology.toml instead.
#
# It installs what is missing on first use: promtool (Debian's prometheus
# package), PyYAML, helm-python-sdk and the kubernetes client (into a venv
# under ~/.cache/d2c), kubeconform (go install, GOBIN under ~/.cache/d2c), the
# kubernetes-validate wheel and the two Go modules (pip download and go mod
# download, cached there too).
# A part whose tool cannot be installed is skipped with a message, except
# promtool, which is required. D2C_OPS_HELM=0 skips the rendering (and so
# kubeconform).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/d2c"
OPS="$ROOT/ops"
CACHE_DIR="${D2C_CACHE_DIR:-$HOME/.cache/d2c}"
VENV="$CACHE_DIR/ops-venv"
HELM_SDK_VERSION="0.2.2"
KUBERNETES_CLIENT_VERSION="37.0.2"
KUBECONFORM_VERSION="v0.8.0"
KUBERNETES_VALIDATE_VERSION="1.37.0"  # its wheel: Kubernetes 1.25 to 1.37's JSON schemas
# Rendering (check_ops.py render) -> the Kubernetes releases it is validated against.
KUBECONFORM_RUNS=("defaults:1.25.0 1.37.0" "every-option-on:1.30.0 1.37.0")
# Go modules with CRDs, and the folder of each that holds them.
CRD_MODULES=("github.com/kedacore/keda/v2@v2.20.2:config/crd/bases"
             "github.com/prometheus-operator/prometheus-operator@v0.85.0:example/prometheus-operator-crd")
# Kinds with no schema to be had (reported as skipped).
STRIMZI_KINDS="kafka.strimzi.io/v1beta2/KafkaTopic,kafka.strimzi.io/v1beta2/Kafka,kafka.strimzi.io/v1beta2/KafkaNodePool"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

PASSED=0
FAILED=0
SKIPPED=0
pass() { PASSED=$((PASSED + 1)); printf 'ok    %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$*"; }
skip() { SKIPPED=$((SKIPPED + 1)); printf 'skip  %s\n' "$*"; }

# Runs a named check: its output is shown only when it fails (its last line
# also when it passes, with SUMMARY=1).
check() { # name command...
  local name="$1"; shift
  local output
  if output="$("$@" 2>&1)"; then
    pass "$name"
    [ -z "${VERBOSE:-}" ] || printf '%s\n' "$output" | sed 's/^/      /'
    [ -n "${VERBOSE:-}" ] || [ -z "${SUMMARY:-}" ] || printf '%s\n' "$output" | tail -1 | sed 's/^/      /'
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

# kubeconform, built by `go install` from the Go module proxy into the cache.
KUBECONFORM=""
ensure_kubeconform() {
  local dir="$CACHE_DIR/kubeconform-$KUBECONFORM_VERSION"
  if [ ! -x "$dir/kubeconform" ]; then
    command -v go >/dev/null || return 1
    mkdir -p "$CACHE_DIR"
    log "Installing kubeconform $KUBECONFORM_VERSION into $dir (go install, once)"
    (cd "$CACHE_DIR" && GOBIN="$dir" GOMODCACHE="$CACHE_DIR/go-mod" GOFLAGS=-modcacherw \
      go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION") >/dev/null 2>&1 \
      || return 1
  fi
  KUBECONFORM="$dir/kubeconform"
}

# The JSON schemas kubeconform reads, made once per set of inputs (see
# check_ops.py schemas): Kubernetes' from the kubernetes-validate wheel, the
# CRDs from Go module zips. CRD_SOURCES_MISSING names the modules that could
# not be downloaded (their kinds are then skipped).
SCHEMAS="$CACHE_DIR/kube-schemas"
CRD_SOURCES_MISSING=""
ensure_schemas() {
  local versions wheel_dir="$CACHE_DIR/downloads" sources=() entry module zip key
  versions="$(printf '%s\n' "${KUBECONFORM_RUNS[@]#*:}" | tr ' ' '\n' | sort -uV | paste -sd, -)"
  local wheel="$wheel_dir/kubernetes_validate-$KUBERNETES_VALIDATE_VERSION-py3-none-any.whl"
  if [ ! -f "$wheel" ]; then
    log "Downloading the kubernetes-validate $KUBERNETES_VALIDATE_VERSION wheel (Kubernetes' JSON schemas; once)"
    "$VENV/bin/pip" download -q --no-deps -d "$wheel_dir" \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >/dev/null 2>&1 || return 1
  fi
  for entry in "${CRD_MODULES[@]}"; do
    module="${entry%%:*}"
    # Where go mod download keeps it (these module paths have no upper case to escape).
    zip="$CACHE_DIR/go-mod/cache/download/${module%@*}/@v/${module#*@}.zip"
    [ -f "$zip" ] || zip="$(cd "$CACHE_DIR" && GOMODCACHE="$CACHE_DIR/go-mod" GOFLAGS=-modcacherw \
      go mod download -json "$module" 2>/dev/null | "$HELM_PYTHON" -c \
      'import json, sys; d = json.load(sys.stdin); print("" if d.get("Error") else d["Zip"])' 2>/dev/null)" || zip=""
    if [ -n "$zip" ] && [ -f "$zip" ]; then
      sources+=("$zip:${entry#*:}")
    else
      CRD_SOURCES_MISSING="$CRD_SOURCES_MISSING $module"
    fi
  done
  key="$KUBERNETES_VALIDATE_VERSION $versions ${sources[*]} $(sha256sum "$OPS/check_ops.py" | cut -c1-16)"
  if [ "$(cat "$SCHEMAS/.key" 2>/dev/null)" = "$key" ]; then return; fi
  log "Writing JSON schemas for kubeconform into $SCHEMAS"
  rm -rf "$SCHEMAS" "$SCHEMAS.new"
  "$HELM_PYTHON" "$OPS/check_ops.py" schemas "$SCHEMAS.new" "$wheel" "$versions" "${sources[@]}" >&2 \
    || { rm -rf "$SCHEMAS.new"; return 1; }
  mv "$SCHEMAS.new" "$SCHEMAS" && printf '%s' "$key" > "$SCHEMAS/.key"
}

# Is helm/d2c/files/topics.yaml what ops/strimzi-topics.py makes of topology.toml now?
topics_file_current() {
  local fresh status=0
  fresh="$(mktemp)"
  python3 "$OPS/strimzi-topics.py" --profiles-from "$CHART/files/topics.yaml" --output "$fresh" \
    || { rm -f "$fresh"; return 1; }
  diff -u "$CHART/files/topics.yaml" "$fresh" || status=$?
  rm -f "$fresh"
  [ "$status" = 0 ] || printf 'stale: run python3 ops/strimzi-topics.py and commit helm/d2c/files/topics.yaml\n'
  return "$status"
}

RENDERED="$(mktemp -d)"
trap 'rm -rf "$RENDERED"' EXIT

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
    "$HELM_PYTHON" "$OPS/check_ops.py" render "$CHART" "$RENDERED"
else
  skip "helm lint/template: helm-python-sdk could not be installed (or D2C_OPS_HELM=0); no helm binary is available here"
fi

log "Strimzi topics"
if python3 -c 'import tomllib' 2>/dev/null; then
  check "helm/d2c/files/topics.yaml is ops/strimzi-topics.py's rendering of topology/topology.toml" \
    topics_file_current
else
  skip "helm/d2c/files/topics.yaml against topology.toml: needs Python 3.11+ (tomllib)"
fi

log "kubeconform"
if [ -z "$HELM_PYTHON" ]; then
  skip "kubeconform: nothing rendered (helm-python-sdk missing or D2C_OPS_HELM=0)"
elif ! ensure_kubeconform; then
  skip "kubeconform: go install github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION failed (no Go, or no module proxy)"
elif ! ensure_schemas; then
  skip "kubeconform: the kubernetes-validate wheel (Kubernetes' JSON schemas) could not be downloaded or converted"
else
  skip_kinds="$STRIMZI_KINDS"
  skip "kubeconform: Strimzi's KafkaTopic, Kafka and KafkaNodePool are not schema-checked: no package registry ships Strimzi's CRDs (Maven Central's io.strimzi:api has the model classes, not the CRDs, and its crd-generator is not published); the render check compares the KafkaTopics with topology.toml"
  for module in $CRD_SOURCES_MISSING; do
    case "$module" in
      *keda*) kinds="keda.sh/v1alpha1/ScaledObject" ;;
      *) kinds="monitoring.coreos.com/v1/ServiceMonitor,monitoring.coreos.com/v1/PrometheusRule" ;;
    esac
    skip_kinds="$skip_kinds,$kinds"
    skip "kubeconform: ${kinds//,/, } not schema-checked: go mod download $module failed"
  done
  for run in "${KUBECONFORM_RUNS[@]}"; do
    rendering="${run%%:*}"
    for version in ${run#*:}; do
      SUMMARY=1 check "kubeconform -strict: $rendering against Kubernetes $version and the CRDs" \
        "$KUBECONFORM" -strict -summary -kubernetes-version "$version" \
        -schema-location "$SCHEMAS/kubernetes/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
        -schema-location "$SCHEMAS/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
        -skip "$skip_kinds" "$RENDERED/$rendering.yaml"
    done
  done
fi

printf '\ncheck-ops: %d passed, %d failed, %d skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
[ "$FAILED" = 0 ]
