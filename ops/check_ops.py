#!/usr/bin/env python3
"""Checks of the deployment files, run by ops/check-ops.sh.

    check_ops.py dashboard DASHBOARD.json
    check_ops.py metrics METRICS.txt DASHBOARD.json ALERTS.yaml
    check_ops.py yaml DIR...            every *.yaml/*.yml outside templates/
    check_ops.py braces TEMPLATES_DIR   every {{ closed by }}
    check_ops.py render CHART_DIR [OUT] helm lint + helm template (helm-python-sdk);
                                        OUT: also write each rendering there
    check_ops.py schemas OUT WHEEL VERSIONS [ZIP:DIR]...
                                        JSON schemas for kubeconform (see below)

Each prints what it checked and exits non-zero on the first kind of problem
it finds (after listing every instance of it).
"""

import importlib.util
import json
import pathlib
import re
import sys
import zipfile

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
                                           "paymentWebhookSecret": "whsec_x",
                                           "extra": {"kafka-client-properties": "sasl.jaas.config=x"}}},
    "gateway": {"replicas": 32, "replyPartitionFrom": "hostname", "preStopSleepSeconds": 5,
                "ingress": {"enabled": True, "className": "nginx", "paymentsWebhook": True,
                            "tls": [{"secretName": "shop-tls", "hosts": ["shop.example.com"]}]}},
    "processors": {"orders": {"state": {"persistent": True, "storageClass": "fast"}, "standby": "all",
                              "autoscaling": {"maxReplicas": 12, "lagPerReplica": 5000},
                              "env": {"D2C_RESTORE_TIMEOUT_MS": 600000}},
                   "payments": {"provider": "http", "providerUrl": "https://api.stripe.com"},
                   "catalog": {"enabled": False}},
    "topology": {"profile": "local"},
    "kafka": {"brokers": "b-1.msk:9096", "properties": {"security.protocol": "SASL_SSL",
                                                      "sasl.mechanisms": "SCRAM-SHA-512",
                                                      "sasl.username": "d2c"},
              "secretProperties": {"sasl.password": "kafka-sasl-password"},
              "strimzi": {"clusterName": "shop-kafka", "namespace": "kafka",
                          "topics": {"enabled": True},
                          "cluster": {"enabled": True, "version": "4.1.0",
                                      "nodePool": {"storage": {"class": "fast"},
                                                   "resources": {"requests": {"memory": "4Gi"}}},
                                      "config": {"num.network.threads": 8}}}},
    "env": {"RUST_LOG": "info"},
    "sweeper": {"clientProperties": {"security.protocol": "SASL_SSL"},
                "clientPropertiesSecretKey": "kafka-client-properties"},
}


def sweeper_problems(sweeper, by_kind, values):
    """The hanging-transaction sweeper: one replica, on a Kafka image's JVM,
    the source from its ConfigMap, credentials from the Secret only."""
    settings = values.get("sweeper", {})
    if settings.get("enabled", True) is False:
        return ["a sweeper although sweeper.enabled is false"] if sweeper else []
    if not sweeper:
        return ["no sweeper Deployment"]
    problems = []
    container = containers(sweeper)[0]
    if sweeper["spec"].get("replicas") != 1:
        problems.append(f"sweeper: {sweeper['spec'].get('replicas')} replicas, not 1")
    if container["command"] != ["java"] or not container["args"][-1].endswith("/HangingTransactions.java"):
        problems.append(f"sweeper runs {container['command']} {container['args']}")
    source = next((c for c in by_kind.get("ConfigMap", [])
                   if "HangingTransactions.java" in c.get("data", {})), None)
    wanted = (pathlib.Path(__file__).resolve().parent.parent / "kafka" / "HangingTransactions.java").read_text()
    if not source or source["data"]["HangingTransactions.java"].rstrip() != wanted.rstrip():
        problems.append("the sweeper's ConfigMap does not carry kafka/HangingTransactions.java")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in sweeper["spec"]["template"]["spec"].get("volumes", [])}
    path = env.get("D2C_KAFKA_CLIENT_PROPERTIES", "")
    volume = volumes.get(mounts.get(str(pathlib.PurePosixPath(path).parent), ""), {})
    key = settings.get("clientPropertiesSecretKey")
    if key:
        if [i["key"] for i in volume.get("secret", {}).get("items", [])] != [key]:
            problems.append(f"sweeper: {path} is not the Secret's {key}")
    elif "configMap" not in volume:
        problems.append(f"sweeper: {path} is not its ConfigMap's client.properties")
    for prop, value in settings.get("clientProperties", {}).items():
        if source and f"{prop}={value}" not in source["data"].get("client.properties", ""):
            problems.append(f"sweeper: client.properties lacks {prop}={value}")
    return problems


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
    strimzi = values.get("kafka", {}).get("strimzi", {})
    # With Strimzi's KafkaTopics the Job only verifies them, after they are applied.
    hook, command = (("post-install", "verify") if strimzi.get("topics", {}).get("enabled")
                     else ("pre-install", "apply"))
    jobs = [d for d in by_kind.get("Job", [])]
    if len(jobs) != 1 or hook not in jobs[0]["metadata"].get("annotations", {}).get("helm.sh/hook", ""):
        problems.append(f"no topology {hook} hook Job")
    elif containers(jobs[0])[0]["command"] != ["topology"] or containers(jobs[0])[0]["args"][0] != command:
        problems.append(f"the hook Job does not run `topology {command}`")
    problems += strimzi_problems(by_kind, values)
    kafka = values.get("kafka", {})
    problems += sweeper_problems(workloads.get("sweeper"), by_kind, values)
    for path, doc in docs:
        for container in containers(doc):
            env = {e["name"]: e for e in container.get("env", [])}
            # The sweeper is a Java client: its settings are a properties file.
            if "D2C_KAFKA_BROKERS" not in env or "D2C_KAFKA_CLIENT_PROPERTIES" in env:
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
        if len(monitors) != len(expected) + 2:
            problems.append(f"{len(monitors)} ServiceMonitors for {len(expected) + 2} components "
                            "(the consumers, the gateway, the sweeper)")
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
        for kind in ("ScaledObject", "ServiceMonitor", "PrometheusRule", "Ingress", "Secret",
                     "KafkaTopic", "Kafka", "KafkaNodePool"):
            if by_kind.get(kind):
                problems.append(f"a {kind} although it is off by default")
    kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    return problems, f"{label}: {len(docs)} objects ({kinds})"


def strimzi_topics_module():
    """ops/strimzi-topics.py, which renders files/topics.yaml from topology.toml."""
    path = pathlib.Path(__file__).resolve().parent / "strimzi-topics.py"
    spec = importlib.util.spec_from_file_location("strimzi_topics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def strimzi_problems(by_kind, values):
    """The KafkaTopics are topology.toml's topics in the chosen profile, with
    the prefix; the example cluster keeps acks=all writes going with a node down."""
    strimzi = values.get("kafka", {}).get("strimzi", {})
    cluster_name = strimzi.get("clusterName", "kafka")
    namespace = strimzi.get("namespace") or None
    problems = []
    topics = by_kind.get("KafkaTopic", [])
    if strimzi.get("topics", {}).get("enabled"):
        module = strimzi_topics_module()
        profile = values.get("topology", {}).get("profile", "production")
        prefix = values.get("topicPrefix", "")
        wanted = {prefix + t["name"]: t for t in module.resolve(module.load(module.TOPOLOGY), profile)}
        rendered = {t["spec"].get("topicName"): t for t in topics}
        if set(rendered) != set(wanted):
            problems.append(f"KafkaTopics {sorted(set(rendered) ^ set(wanted))} differ from "
                            f"topology.toml's profile {profile}")
        for name in sorted(set(rendered) & set(wanted)):
            spec, want = rendered[name]["spec"], wanted[name]
            expected = {"topicName": name, "partitions": want["partitions"], "replicas": want["replicas"],
                        "config": {k: str(v) for k, v in module.configs(want)}}
            if spec != expected:
                problems.append(f"KafkaTopic {name}: {spec} is not {expected}")
            metadata = rendered[name]["metadata"]
            if metadata.get("labels", {}).get("strimzi.io/cluster") != cluster_name:
                problems.append(f"KafkaTopic {name}: not labelled strimzi.io/cluster={cluster_name}")
            if metadata.get("namespace") != namespace:
                problems.append(f"KafkaTopic {name}: namespace {metadata.get('namespace')}")
            if metadata.get("annotations", {}).get("helm.sh/resource-policy") != "keep":
                problems.append(f"KafkaTopic {name}: helm uninstall would delete it")
    if strimzi.get("cluster", {}).get("enabled"):
        kafkas, pools = by_kind.get("Kafka", []), by_kind.get("KafkaNodePool", [])
        if len(kafkas) != 1 or len(pools) != 1:
            return problems + [f"{len(kafkas)} Kafka and {len(pools)} KafkaNodePool resources"]
        kafka, pool = kafkas[0], pools[0]
        config = kafka["spec"]["kafka"]["config"]
        for key, value in {"min.insync.replicas": 2, "default.replication.factor": 3,
                           "offsets.topic.replication.factor": 3,
                           "transaction.state.log.replication.factor": 3,
                           "transaction.state.log.min.isr": 2,
                           "auto.create.topics.enable": False}.items():
            if config.get(key) != value:
                problems.append(f"Kafka {cluster_name}: {key} is {config.get(key)!r}, not {value!r}")
        if kafka["metadata"]["name"] != cluster_name:
            problems.append(f"the Kafka resource is {kafka['metadata']['name']}, not {cluster_name}")
        if pool["metadata"].get("labels", {}).get("strimzi.io/cluster") != cluster_name:
            problems.append("the KafkaNodePool does not belong to the Kafka resource")
        if pool["spec"]["replicas"] != 3 or sorted(pool["spec"]["roles"]) != ["broker", "controller"]:
            problems.append(f"KafkaNodePool: {pool['spec']['replicas']} nodes, roles {pool['spec']['roles']}")
        if kafka["metadata"].get("annotations", {}).get("strimzi.io/kraft") != "enabled":
            problems.append("the Kafka resource is not KRaft")
    return problems


def write_rendering(out_dir, label, manifests):
    """Every rendered manifest in one multi-document file, for kubeconform."""
    path = pathlib.Path(out_dir) / (re.sub(r"[^a-z0-9]+", "-", label) + ".yaml")
    with open(path, "w", encoding="utf-8") as file:
        for name, text in sorted(manifests.items()):
            if not name.endswith("NOTES.txt") and text.strip():
                file.write(f"---\n# Source: {name}\n{text.strip()}\n")


def cmd_render(chart_dir, out_dir=None):
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
            if out_dir:
                write_rendering(out_dir, label, manifests)
        # What must be refused.
        for label, values in (
            ("33 gateway replicas", {"gateway": {"replicas": 33}}),
            ("secrets.create without values", {"secrets": {"create": True}}),
            ("a standby count", {"processors": {"inventory": {"standby": "1"}}}),
            ("Strimzi topics of a profile topology.toml lacks",
             {"kafka": {"strimzi": {"topics": {"enabled": True}}}, "topology": {"profile": "staging"}}),
        ):
            try:
                chart.render(values, name="d2c", namespace="shop", is_install=True)
                problems.append(f"helm template ({label}) rendered; it should fail")
            except Exception as error:  # noqa: BLE001
                print(f"{label}: refused ({str(error).splitlines()[0][:120]})")
    if problems:
        fail("\n".join(problems))


# ------------------------------------------------------------------ schemas
#
# kubeconform validates against JSON schemas in files, in two layouts:
#   OUT/kubernetes/v1.X.Y-local-strict/<kind>-<group>-<version>.json
#       the Kubernetes API, from the kubernetes-validate wheel (PyPI), which
#       ships them per Kubernetes release; their references to
#       /api/_definitions.json are made relative, so they resolve offline.
#   OUT/crds/<group>/<kind>_<version>.json
#       custom resources, from the openAPIV3Schema of CRD YAML files inside
#       Go module zips, made strict as kubeconform's openapi2jsonschema.py
#       does: objects with properties allow no others unless the CRD says
#       x-kubernetes-preserve-unknown-fields, nullable fields allow null,
#       int-or-string fields take either.


def strict_crd_schema(node):
    if isinstance(node, list):
        return [strict_crd_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: strict_crd_schema(value) for key, value in node.items()}
    if node.get("x-kubernetes-int-or-string") or node.get("format") == "int-or-string":
        keep = {k: v for k, v in node.items() if k in ("description", "pattern")}
        return {**keep, "anyOf": [{"type": "string"}, {"type": "integer"}]}
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    return node


def crd_schemas(text):
    """(group, kind, version, JSON schema) of every CRD version in a YAML text."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # YAML 1.1's `=` (an enum value in the Prometheus Operator's CRDs) is a string.
    Loader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)
    for doc in yaml.load_all(text, Loader=Loader):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec.get("versions", []):
            schema = version.get("schema", {}).get("openAPIV3Schema")
            if schema:
                yield spec["group"], spec["names"]["kind"], version["name"], strict_crd_schema(schema)


def cmd_schemas(out_dir, wheel, versions, *crd_sources):
    out = pathlib.Path(out_dir)
    counts = []
    with zipfile.ZipFile(wheel) as archive:
        for version in versions.split(","):
            folder = f"v{version}-local-strict"
            prefix = f"kubernetes_validate/kubernetes-json-schema/{folder}/"
            members = [n for n in archive.namelist() if n.startswith(prefix) and n.endswith(".json")]
            if not members:
                fail(f"{wheel}: no schemas for Kubernetes {version}")
            target = out / "kubernetes" / folder
            target.mkdir(parents=True, exist_ok=True)
            for member in members:
                text = archive.read(member).decode("utf-8")
                schema = json.loads(text.replace('"/api/_definitions.json#', '"_definitions.json#'))
                schema.pop("$id", None)  # https://kubernetes.io/api/…: it would resolve online
                (target / member[len(prefix):]).write_text(json.dumps(schema), encoding="utf-8")
            counts.append(f"Kubernetes {version}: {len(members)} schemas")
    for source in crd_sources:
        zip_path, _, directory = source.rpartition(":")
        found, module = [], None
        with zipfile.ZipFile(zip_path) as archive:
            for member in sorted(archive.namelist()):
                # A module zip holds <module>@<version>/<path>.
                module, inner = re.match(r"(?:(.+?@[^/]+)/)?(.*)", member).groups()
                if not (inner.startswith(directory.rstrip("/") + "/") and inner.endswith((".yaml", ".yml"))):
                    continue
                for group, kind, version, schema in crd_schemas(archive.read(member).decode("utf-8")):
                    target = out / "crds" / group
                    target.mkdir(parents=True, exist_ok=True)
                    (target / f"{kind.lower()}_{version}.json").write_text(json.dumps(schema),
                                                                         encoding="utf-8")
                    found.append(f"{kind} {group}/{version}")
        if not found:
            fail(f"{zip_path}: no CustomResourceDefinition under {directory}")
        counts.append(f"{module or zip_path} {directory}: {len(found)} CRD versions")
    print("; ".join(counts))


def main(argv):
    commands = {"dashboard": cmd_dashboard, "metrics": cmd_metrics, "yaml": cmd_yaml,
                "braces": cmd_braces, "render": cmd_render, "schemas": cmd_schemas}
    if len(argv) < 2 or argv[1] not in commands:
        fail(__doc__)
    commands[argv[1]](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
