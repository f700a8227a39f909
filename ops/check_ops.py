#!/usr/bin/env python3
"""Checks of the deployment files, run by ops/check-ops.sh.

    check_ops.py dashboard DASHBOARD.json
    check_ops.py metrics METRICS.txt DASHBOARD.json ALERTS.yaml
    check_ops.py yaml DIR...            every *.yaml/*.yml outside templates/
    check_ops.py braces TEMPLATES_DIR   every {{ closed by }}
    check_ops.py render CHART_DIR       helm lint + helm template (helm-python-sdk)

Each prints what it checked and exits non-zero on the first kind of problem
it finds (after listing every instance of it).
"""

import json
import pathlib
import re
import sys

# PromQL words that are not metric names.
PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "group", "by", "without",
    # binary operators and vector matching
    "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "atan2",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max",
    "clamp_min", "day_of_month", "day_of_week", "day_of_year", "days_in_month",
    "delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln",
    "log2", "log10", "minute", "month", "predict_linear", "rate", "resets",
    "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp",
    "vector", "year", "avg_over_time", "min_over_time", "max_over_time",
    "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time", "inf", "nan",
}
# Labels every series has from the scrape config.
TARGET_LABELS = {"job", "instance", "service", "namespace", "pod", "container", "endpoint"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def fail(message):
    print(message)
    sys.exit(1)


def load_yaml(path):
    import yaml  # only the subcommands that need it import it

    with open(path, encoding="utf-8") as file:
        return yaml.safe_load(file)


# ---------------------------------------------------------------- dashboard


def dashboard_panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def cmd_dashboard(path):
    try:
        with open(path, encoding="utf-8") as file:
            dashboard = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        fail(f"{path}: not valid JSON: {error}")
    problems = []
    variables = dashboard.get("templating", {}).get("list", [])
    if not any(v.get("name") == "datasource" and v.get("type") == "datasource" for v in variables):
        problems.append("no templating variable `datasource` of type datasource")
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dashboard:
            problems.append(f"no `{key}`")
    ids = set()
    targets = 0
    for panel in dashboard_panels(dashboard):
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            problems.append(f"panel {title!r}: id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        if "gridPos" not in panel:
            problems.append(f"panel {title!r}: no gridPos")
        if panel.get("type") == "row":
            continue
        datasource = json.dumps(panel.get("datasource"))
        if "${datasource}" not in datasource:
            problems.append(f"panel {title!r}: datasource is not ${{datasource}}")
        if not panel.get("targets"):
            problems.append(f"panel {title!r}: no targets")
        for target in panel.get("targets", []):
            targets += 1
            if not target.get("expr"):
                problems.append(f"panel {title!r}: a target without expr")
            if "${datasource}" not in json.dumps(target.get("datasource", "${datasource}")):
                problems.append(f"panel {title!r}: a target's datasource is not ${{datasource}}")
    if problems:
        fail("\n".join(f"{path}: {p}" for p in problems))
    print(f"{path}: {len(ids)} panels, {targets} queries, ${{datasource}} variable")


# ------------------------------------------------------------------ metrics


def read_metric_list(path):
    metrics = {}
    for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, kind, labels = line.split()
        metrics[name] = (kind, set() if labels == "-" else set(labels.split(",")))
    return metrics


def resolve_metric(name, metrics):
    """The listed metric a series name belongs to, and the labels it may have."""
    if name in metrics:
        kind, labels = metrics[name]
        if kind != "histogram":
            return name, labels
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and base in metrics and metrics[base][0] == "histogram":
            labels = set(metrics[base][1])
            if suffix == "_bucket":
                labels.add("le")
            return base, labels
    return None, None


STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)")
IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)")


def expression_problems(expr, metrics):
    """Metric names and label matchers of one PromQL expression not in the list."""
    problems = []
    used = set()
    # Grafana variables and interval macros.
    expr = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_:]*\}?", "1", expr)
    # Selectors: check their label matchers, then blank out the braces.
    protected = STRING.sub('""', expr)

    def selector(match):
        name, body = match.group(1), match.group(2)
        labels = MATCHER.findall(body)
        if name and name not in PROMQL_WORDS:
            base, allowed = resolve_metric(name, metrics)
            if base:
                for label, _ in labels:
                    if label not in allowed and label not in TARGET_LABELS:
                        problems.append(f"{name}: label {label!r} is not one of its labels")
        else:
            for label, _ in labels:
                if label == "__name__":
                    problems.append("selectors by __name__ are not checked; name the metric")
        return (name or "") + " "

    stripped = SELECTOR.sub(selector, protected)
    stripped = GROUPING.sub(" ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)  # ranges and subqueries
    stripped = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]?\b", " ", stripped)
    for name in IDENTIFIER.findall(stripped):
        if name.lower() in PROMQL_WORDS:
            continue
        base, _ = resolve_metric(name, metrics)
        if base is None:
            problems.append(f"metric {name!r} is not in the metric list")
        else:
            used.add(base)
    return problems, used


def dashboard_expressions(path):
    with open(path, encoding="utf-8") as file:
        dashboard = json.load(file)
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel.get('title')!r}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and query:
            query = query.get("query", "") if isinstance(query, dict) else query
            inner = re.match(r"\s*label_values\((.*),\s*[A-Za-z_]+\)\s*$", query)
            if inner:
                yield f"variable {variable.get('name')!r}", inner.group(1)


def alert_expressions(path):
    rules = load_yaml(path)
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            yield f"rule {rule.get('alert') or rule.get('record')!r}", rule["expr"]


def cmd_metrics(metric_list, dashboard, alerts):
    metrics = read_metric_list(metric_list)
    problems = []
    used = set()
    count = 0
    for source, expressions in ((dashboard, dashboard_expressions(dashboard)),
                                (alerts, alert_expressions(alerts))):
        for where, expr in expressions:
            count += 1
            found, names = expression_problems(expr, metrics)
            used |= names
            problems += [f"{pathlib.Path(source).name}: {where}: {p}" for p in found]
    if problems:
        fail("\n".join(sorted(set(problems))))
    print(f"{count} expressions use {len(used)} of the {len(metrics)} listed metrics, all known:")
    print("  " + ", ".join(sorted(used)))


# --------------------------------------------------------------------- yaml


def cmd_yaml(*dirs):
    import yaml

    count = 0
    problems = []
    for directory in dirs:
        for path in sorted(pathlib.Path(directory).rglob("*")):
            if path.suffix not in (".yaml", ".yml") or "templates" in path.parts:
                continue
            count += 1
            try:
                with open(path, encoding="utf-8") as file:
                    list(yaml.safe_load_all(file))
            except yaml.YAMLError as error:
                problems.append(f"{path}: {error}")
    if problems:
        fail("\n".join(problems))
    if count == 0:
        fail("no YAML files found")
    print(f"{count} YAML files parse")


# ------------------------------------------------------------------- braces


def cmd_braces(directory):
    problems = []
    files = sorted(p for p in pathlib.Path(directory).iterdir() if p.is_file())
    for path in files:
        text = path.read_text(encoding="utf-8")
        depth, line = 0, 1
        for token in re.finditer(r"\{\{|\}\}|\n", text):
            if token.group() == "\n":
                line += 1
            elif token.group() == "{{":
                if depth:
                    problems.append(f"{path.name}:{line}: {{{{ inside an open action")
                depth += 1
            else:
                if not depth:
                    problems.append(f"{path.name}:{line}: }}}} without {{{{")
                depth = max(0, depth - 1)
        if depth:
            problems.append(f"{path.name}: an action is never closed")
        opens = len(re.findall(r"\{\{-?\s*(if|range|with|define|block)\b", text))
        ends = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", text))
        if opens != ends:
            problems.append(f"{path.name}: {opens} if/range/with/define blocks but {ends} ends")
    if problems:
        fail("\n".join(problems))
    print(f"{len(files)} template files: actions and blocks balanced")


# ------------------------------------------------------------------- render

SECRET_ENV = {"D2C_DATABASE_URL", "D2C_AUTH_SECRET", "D2C_PAYMENT_PROVIDER_KEY",
              "D2C_PAYMENT_WEBHOOK_SECRET"}
PROCESSORS = ["orders", "inventory", "payments", "catalog", "customers"]

EVERYTHING_ON = {
    "topicPrefix": "prod.",
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "autoscaling": {"enabled": True, "maxReplicas": 100},
    "secrets": {"create": True, "values": {"databaseUrl": "postgres://d2c:pw@db/d2c",
                                           "authSecret": "s3cret",
                                           "paymentProviderKey": "sk_test_x",
                                           "paymentWebhookSecret": "whsec_x"}},
    "gateway": {"replicas": 32, "replyPartitionFrom": "hostname", "preStopSleepSeconds": 5,
                "ingress": {"enabled": True, "className": "nginx", "paymentsWebhook": True,
                            "tls": [{"secretName": "shop-tls", "hosts": ["shop.example.com"]}]}},
    "processors": {"orders": {"state": {"persistent": True, "storageClass": "fast"},
                              "autoscaling": {"maxReplicas": 12, "lagPerReplica": 5000},
                              "env": {"D2C_RESTORE_TIMEOUT_MS": 600000}},
                   "payments": {"provider": "http", "providerUrl": "https://api.stripe.com"},
                   "catalog": {"enabled": False}},
    "topology": {"profile": "local"},
    "kafka": {"brokers": "b-1.msk:9096", "properties": {"security.protocol": "SASL_SSL",
                                                      "sasl.mechanisms": "SCRAM-SHA-512",
                                                      "sasl.username": "d2c"},
              "secretProperties": {"sasl.password": "kafka-sasl-password"}},
    "env": {"RUST_LOG": "info"},
}


def documents(manifests):
    import yaml

    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                yield path, doc


def containers(doc):
    spec = doc.get("spec", {})
    template = spec.get("template", {}).get("spec", {})
    return template.get("containers", [])


MODELS = {("apps/v1", "Deployment"): "V1Deployment", ("apps/v1", "StatefulSet"): "V1StatefulSet",
          ("v1", "Service"): "V1Service", ("v1", "Secret"): "V1Secret",
          ("v1", "ConfigMap"): "V1ConfigMap", ("batch/v1", "Job"): "V1Job",
          ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
          ("networking.k8s.io/v1", "Ingress"): "V1Ingress"}


def schema_problems(value, type_name, where):
    """Fields the Kubernetes API does not know, and values of the wrong type,
    by the models of the kubernetes Python client (its OpenAPI types)."""
    import kubernetes.client as models

    if type_name.startswith("List["):
        if not isinstance(value, list):
            return [f"{where}: a list expected"]
        return [p for i, item in enumerate(value)
                for p in schema_problems(item, type_name[5:-1], f"{where}[{i}]")]
    if type_name.startswith("Dict["):
        if not isinstance(value, dict):
            return [f"{where}: a map expected"]
        inner = type_name[5:-1].split(",", 1)[1].strip()
        return [p for key, item in value.items()
                for p in schema_problems(item, inner, f"{where}.{key}")]
    primitive = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str}
    if type_name in primitive:
        ok = isinstance(value, primitive[type_name]) and not (
            type_name == "int" and isinstance(value, bool))
        return [] if ok else [f"{where}: {type_name} expected, got {value!r}"]
    if type_name == "object":
        return []
    model = getattr(models, type_name)
    if not isinstance(value, dict):
        return [f"{where}: an object ({type_name}) expected"]
    fields = {json_name: attr for attr, json_name in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{where}.{key}: not a field of {type_name}")
        elif item is not None:
            problems += schema_problems(item, model.openapi_types[fields[key]], f"{where}.{key}")
    return problems


def kubernetes_problems(path, doc):
    """The API's own schema, where the kubernetes client is installed."""
    try:
        import kubernetes.client as models
    except ImportError:
        return []
    model = MODELS.get((doc.get("apiVersion"), doc.get("kind")))
    if not model:
        return []
    name = f"{path}: {doc['kind']} {doc.get('metadata', {}).get('name')}"
    problems = schema_problems(doc, model, name)
    if not problems:
        try:  # required fields
            models.ApiClient()._ApiClient__deserialize(doc, model)
        except Exception as error:  # noqa: BLE001
            problems.append(f"{name}: {' '.join(str(error).split())[:300]}")
    return problems


def check_rendered(label, manifests, chart_dir, values):
    problems = []
    docs = list(documents(manifests))
    for path, doc in docs:
        problems += kubernetes_problems(path, doc)
    by_kind = {}
    for path, doc in docs:
        for key in ("apiVersion", "kind", "metadata"):
            if key not in doc:
                problems.append(f"{path}: a document without {key}")
        name = doc.get("metadata", {}).get("name", "")
        if len(name) > 63:
            problems.append(f"{path}: name {name!r} is longer than 63 characters")
        by_kind.setdefault(doc.get("kind"), []).append(doc)
        for container in containers(doc):
            for env in container.get("env", []):
                if env["name"] in SECRET_ENV and "value" in env:
                    problems.append(f"{path}: {env['name']} as a plain value, not from a Secret")
                if "value" in env and not isinstance(env["value"], str):
                    problems.append(f"{path}: env {env['name']} is not a string")
                if isinstance(env.get("value"), str) and re.fullmatch(r"\d+(\.\d+)?e\+\d+", env["value"]):
                    problems.append(f"{path}: env {env['name']} = {env['value']} (exponent)")
            kind = doc.get("kind")
            if kind in ("Deployment", "StatefulSet"):
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in container:
                        problems.append(f"{path}: {name} has no {probe}")
                ready = container.get("readinessProbe", {}).get("httpGet", {}).get("path")
                alive = container.get("livenessProbe", {}).get("httpGet", {}).get("path")
                if (ready, alive) != ("/ready", "/health"):
                    problems.append(f"{path}: {name} probes {ready}, {alive}")
                grace = doc["spec"]["template"]["spec"].get("terminationGracePeriodSeconds")
                if grace is None or grace < 30:
                    problems.append(f"{path}: {name} terminationGracePeriodSeconds {grace}")
    workloads = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
                 for kind in ("Deployment", "StatefulSet") for d in by_kind.get(kind, [])}
    gateway = workloads.get("gateway")
    if not gateway or gateway["kind"] != "StatefulSet":
        problems.append("the gateway is not a StatefulSet")
    else:
        env = {e["name"]: e for e in containers(gateway)[0].get("env", [])}
        command = " ".join(containers(gateway)[0].get("command", []))
        if "D2C_REPLY_PARTITION" not in env and "D2C_REPLY_PARTITION" not in command:
            problems.append("the gateway does not set D2C_REPLY_PARTITION")
    processors = {name: (values.get("processors", {}).get(name, {})) for name in PROCESSORS}
    expected = {name for name, p in processors.items() if p.get("enabled", True)} | {"projector"}
    missing = expected - set(workloads)
    if missing:
        problems.append(f"no workload for {sorted(missing)}")
    prefix = values.get("topicPrefix", "")
    for name in sorted(expected & set(workloads)):
        env = {e["name"]: e for e in containers(workloads[name])[0].get("env", [])}
        if env.get("D2C_GROUP_ID", {}).get("value") != prefix + name:
            problems.append(f"{name}: D2C_GROUP_ID is {env.get('D2C_GROUP_ID')}")
    services = {d["metadata"]["name"] for d in by_kind.get("Service", [])}
    for name in expected:
        if not any(s.endswith("-" + name) for s in services):
            problems.append(f"no Service for {name}")
    jobs = [d for d in by_kind.get("Job", [])]
    if len(jobs) != 1 or "pre-install" not in jobs[0]["metadata"].get("annotations", {}).get("helm.sh/hook", ""):
        problems.append("no topology pre-install/pre-upgrade hook Job")
    elif containers(jobs[0])[0]["command"] != ["topology"] or containers(jobs[0])[0]["args"][0] != "apply":
        problems.append("the hook Job does not run `topology apply`")
    kafka = values.get("kafka", {})
    for path, doc in docs:
        for container in containers(doc):
            env = {e["name"]: e for e in container.get("env", [])}
            if "D2C_KAFKA_BROKERS" not in env:
                continue
            for prop, value in kafka.get("properties", {}).items():
                name = "D2C_KAFKA__" + prop.upper().replace(".", "_")
                if env.get(name, {}).get("value") != str(value):
                    problems.append(f"{path}: {container['name']} lacks {name}={value}")
            for prop, key in kafka.get("secretProperties", {}).items():
                name = "D2C_KAFKA__" + prop.upper().replace(".", "_")
                ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("key") != key:
                    problems.append(f"{path}: {container['name']} does not read {name} from the Secret's {key}")
    pdbs = len(by_kind.get("PodDisruptionBudget", []))
    if pdbs != len(expected) + 1:
        problems.append(f"{pdbs} PodDisruptionBudgets for {len(expected) + 1} workloads")

    on = values is EVERYTHING_ON
    scaled = by_kind.get("ScaledObject", [])
    if on:
        if len(scaled) != len(expected):
            problems.append(f"{len(scaled)} ScaledObjects for {len(expected)} consumers")
        for so in scaled:
            component = so["metadata"]["labels"]["app.kubernetes.io/component"]
            spec = so["spec"]
            if spec["maxReplicaCount"] > 48:
                problems.append(f"ScaledObject {component}: maxReplicaCount {spec['maxReplicaCount']} > 48")
            trigger = spec["triggers"][0]
            want = f'sum(d2c_consumer_lag{{group="{prefix}{component}"}})'
            if trigger["type"] != "prometheus" or trigger["metadata"]["query"] != want:
                problems.append(f"ScaledObject {component}: trigger {trigger}")
            if spec["scaleTargetRef"]["kind"] != workloads[component]["kind"]:
                problems.append(f"ScaledObject {component}: targets a {spec['scaleTargetRef']['kind']}")
            if "replicas" in workloads[component]["spec"]:
                problems.append(f"{component}: replicas set although KEDA scales it")
        if workloads.get("orders", {}).get("kind") != "StatefulSet":
            problems.append("orders with persistent state is not a StatefulSet")
        rule = by_kind.get("PrometheusRule", [{}])[0]
        alerts = load_yaml(pathlib.Path(chart_dir) / "alerts" / "d2c-alerts.yaml")
        if rule.get("spec", {}).get("groups") != alerts["groups"]:
            problems.append("the PrometheusRule's groups differ from alerts/d2c-alerts.yaml")
        config_map = next((c for c in by_kind.get("ConfigMap", [])
                           if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"), None)
        dashboard = json.loads((pathlib.Path(chart_dir) / "dashboards" / "d2c-overview.json").read_text())
        if not config_map or json.loads(config_map["data"]["d2c-overview.json"]) != dashboard:
            problems.append("no grafana_dashboard ConfigMap carrying dashboards/d2c-overview.json")
        monitors = by_kind.get("ServiceMonitor", [])
        if len(monitors) != len(expected) + 1:
            problems.append(f"{len(monitors)} ServiceMonitors for {len(expected) + 1} components")
        for monitor in monitors:
            wanted = monitor["spec"]["selector"]["matchLabels"]
            port = monitor["spec"]["endpoints"][0]["port"]
            matched = [s for s in by_kind.get("Service", [])
                       if wanted.items() <= s["metadata"].get("labels", {}).items()]
            if len(matched) != 1:
                problems.append(f"ServiceMonitor {monitor['metadata']['name']} selects {len(matched)} Services")
            elif not matched[0]["spec"].get("publishNotReadyAddresses"):
                problems.append(f"ServiceMonitor {monitor['metadata']['name']} scrapes ready pods only")
            elif port not in [p["name"] for p in matched[0]["spec"]["ports"]]:
                problems.append(f"ServiceMonitor {monitor['metadata']['name']}: no port {port}")
        if not by_kind.get("Ingress") or not by_kind.get("Secret"):
            problems.append("no Ingress or no Secret although enabled")
    else:
        for kind in ("ScaledObject", "ServiceMonitor", "PrometheusRule", "Ingress", "Secret"):
            if by_kind.get(kind):
                problems.append(f"a {kind} although it is off by default")
    kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    return problems, f"{label}: {len(docs)} objects ({kinds})"


def cmd_render(chart_dir):
    import helm_python as helm

    problems = []
    report = helm.lint(chart_dir, strict=True)
    for message in report.get("messages", []):
        if message.get("severity", 0) >= 2:
            problems.append(f"helm lint: {message.get('path')}: {message.get('error')}")
    problems += [f"helm lint: {e}" for e in report.get("errors", [])]
    print(f"helm lint --strict: {len(report.get('messages', []))} messages "
          f"(Helm SDK {helm.helm_sdk_version()})")
    report = helm.lint(chart_dir, EVERYTHING_ON, strict=True)
    for message in report.get("messages", []):
        if message.get("severity", 0) >= 2:
            problems.append(f"helm lint (every option on): {message.get('path')}: {message.get('error')}")

    try:
        import kubernetes  # noqa: F401
    except ImportError:
        print("the kubernetes client is not installed: objects are not checked against the API schema")
    with helm.Chart.load(chart_dir) as chart:
        for label, values in (("defaults", {}), ("every option on", EVERYTHING_ON)):
            try:
                manifests = chart.render(values, name="d2c", namespace="shop", is_install=True)
            except Exception as error:  # noqa: BLE001 — report whatever the engine raised
                problems.append(f"helm template ({label}): {error}")
                continue
            try:
                found, summary = check_rendered(label, manifests, chart_dir, values)
            except Exception as error:  # noqa: BLE001 — unparsable output, missing objects
                problems.append(f"helm template ({label}): checking the output failed: {error!r}")
                continue
            problems += [f"{label}: {p}" for p in found]
            print(summary)
        # What must be refused.
        for label, values in (
            ("33 gateway replicas", {"gateway": {"replicas": 33}}),
            ("secrets.create without values", {"secrets": {"create": True}}),
        ):
            try:
                chart.render(values, name="d2c", namespace="shop", is_install=True)
                problems.append(f"helm template ({label}) rendered; it should fail")
            except Exception as error:  # noqa: BLE001
                print(f"{label}: refused ({str(error).splitlines()[0][:120]})")
    if problems:
        fail("\n".join(problems))


def main(argv):
    commands = {"dashboard": cmd_dashboard, "metrics": cmd_metrics, "yaml": cmd_yaml,
                "braces": cmd_braces, "render": cmd_render}
    if len(argv) < 2 or argv[1] not in commands:
        fail(__doc__)
    commands[argv[1]](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
