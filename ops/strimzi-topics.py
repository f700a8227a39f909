#!/usr/bin/env python3
"""Renders helm/d2c/files/topics.yaml from topology/topology.toml.

    ops/strimzi-topics.py [--profile NAME]... [--topology FILE] [--output FILE|-]
                          [--profiles-from FILE]

The chart's templates/kafkatopics.yaml turns that file into Strimzi
KafkaTopic resources (kafka.strimzi.topics.enabled). Helm cannot read files
outside the chart, so the topic list is generated here and committed;
ops/check-ops.sh fails when it is stale. topology.toml stays the one list of
topics: edit it, then run this script.

The file holds one list per profile; the chart takes the one
`topology.profile` names, as the topology Job does. --profile (repeatable)
says which profiles to render; without it, the ones the output file (or
--profiles-from FILE) has now, and production for a new file. The committed
file has production (three brokers) and local (one), the profiles a
deployment uses; the test profiles are the integration tests' own. The
rules are those of `topology` (topology/src/lib.rs), mirrored:

  - a topic's partitions are its own or the defaults'; a profile's
    `partitions` lowers every topic declared with more to that many (so a
    changelog stays a mirror of its input);
  - replication_factor and min_insync_replicas come from the profile, else
    the defaults, for every topic;
  - deleted topics get retention.ms (their own or the defaults'); compacted
    ones none, and min.compaction.lag.ms where declared;
  - the same checks: everything at least 1, min ISR not above the
    replication factor, min_compaction_lag_ms only on compacted topics, no
    name twice, every changelog with its input's partition count.

Python 3.11+ standard library only (tomllib); the YAML is written by hand.
"""

import argparse
import json
import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "topology" / "topology.toml"
OUTPUT = ROOT / "helm" / "d2c" / "files" / "topics.yaml"

DEFAULT_KEYS = {"partitions", "replication_factor", "min_insync_replicas", "retention_ms"}
PROFILE_KEYS = {"partitions", "replication_factor", "min_insync_replicas"}
TOPIC_KEYS = {"name", "partitions", "cleanup_policy", "retention_ms", "min_compaction_lag_ms",
              "read_by", "changelog_for"}


class Invalid(Exception):
    pass


def load(path):
    with open(path, "rb") as file:
        data = tomllib.load(file)
    unknown = set(data) - {"defaults", "profiles", "topics"}
    if unknown:
        raise Invalid(f"unknown top-level keys {sorted(unknown)}")
    for where, table, allowed in [("defaults", data["defaults"], DEFAULT_KEYS)] + [
        (f"profiles.{name}", profile, PROFILE_KEYS)
        for name, profile in data.get("profiles", {}).items()
    ] + [(f"topic {t.get('name')}", t, TOPIC_KEYS) for t in data["topics"]]:
        if set(table) - allowed:
            raise Invalid(f"{where}: unknown keys {sorted(set(table) - allowed)}")
    missing = DEFAULT_KEYS - set(data["defaults"])
    if missing:
        raise Invalid(f"defaults: missing {sorted(missing)}")
    return data


def resolve(data, profile_name):
    """Every topic with `profile_name`'s settings, as `topology` resolves them."""
    defaults = data["defaults"]
    profiles = data.get("profiles", {})
    if profile_name not in profiles:
        raise Invalid(f"unknown profile {profile_name!r}; the file declares {sorted(profiles)}")
    profile = profiles[profile_name]
    limit = profile.get("partitions")
    if limit is not None and limit < 1:
        raise Invalid(f"profile {profile_name}: partitions must be at least 1")
    topics = []
    for entry in data["topics"]:
        policy = entry.get("cleanup_policy", "delete")
        if policy not in ("delete", "compact"):
            raise Invalid(f"{entry['name']}: cleanup_policy {policy!r}")
        declared = entry.get("partitions", defaults["partitions"])
        topic = {
            "name": entry["name"],
            "partitions": declared if limit is None else min(declared, limit),
            "replicas": profile.get("replication_factor", defaults["replication_factor"]),
            "min_insync": profile.get("min_insync_replicas", defaults["min_insync_replicas"]),
            "policy": policy,
            "retention_ms": (entry.get("retention_ms", defaults["retention_ms"])
                             if policy == "delete" else None),
            "min_compaction_lag_ms": entry.get("min_compaction_lag_ms"),
            "changelog_for": entry.get("changelog_for"),
        }
        topics.append(topic)
    validate(profile_name, topics)
    return topics


def validate(profile_name, topics):
    def invalid(message):
        raise Invalid(f"profile {profile_name}: {message}")

    seen = {}
    for topic in topics:
        name = topic["name"]
        if min(topic["partitions"], topic["replicas"], topic["min_insync"]) < 1:
            invalid(f"{name}: partitions, replication_factor and min_insync_replicas must be at least 1")
        if topic["min_insync"] > topic["replicas"]:
            invalid(f"{name}: min_insync_replicas {topic['min_insync']} exceeds "
                    f"replication_factor {topic['replicas']}")
        if topic["min_compaction_lag_ms"] is not None and topic["policy"] != "compact":
            invalid(f"{name}: min_compaction_lag_ms applies to compacted topics only")
        if name in seen:
            invalid(f"{name} is declared twice")
        seen[name] = topic["partitions"]
    for topic in topics:
        source = topic["changelog_for"]
        if source is None:
            continue
        if source not in seen:
            invalid(f"{topic['name']} is the changelog of {source}, which is not declared")
        if seen[source] != topic["partitions"]:
            invalid(f"{topic['name']} has {topic['partitions']} partitions but its input "
                    f"{source} has {seen[source]}")


def configs(topic):
    """Topic configs as Kafka names them, in the order `topology` sets them."""
    result = [("cleanup.policy", topic["policy"])]
    if topic["retention_ms"] is not None:
        result.append(("retention.ms", topic["retention_ms"]))
    if topic["min_compaction_lag_ms"] is not None:
        result.append(("min.compaction.lag.ms", topic["min_compaction_lag_ms"]))
    result.append(("min.insync.replicas", topic["min_insync"]))
    return result


def render(data, profile_names, source):
    lines = [
        f"# Generated by ops/strimzi-topics.py from {source}: do not edit.",
        "# Regenerate after changing the topology: python3 ops/strimzi-topics.py (it",
        "# keeps these profiles; --profile NAME, repeated, renders others).",
        "# templates/kafkatopics.yaml makes a Strimzi KafkaTopic of each entry of the",
        "# profile `topology.profile` names. Config values are strings, as Kafka's are.",
        "profiles:",
    ]
    for profile_name in profile_names:
        lines.append(f"  {profile_name}:")
        for topic in resolve(data, profile_name):
            lines += [
                f"    - name: {json.dumps(topic['name'])}",
                f"      partitions: {topic['partitions']}",
                f"      replicas: {topic['replicas']}",
                "      config:",
            ]
            lines += [f"        {key}: {json.dumps(str(value))}" for key, value in configs(topic)]
    return "\n".join(lines) + "\n"


def profiles_in(path):
    """The profiles a file this script wrote has, in its order."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    _, _, body = text.partition("\nprofiles:\n")
    return [line[2:-1] for line in body.splitlines()
            if line.startswith("  ") and not line.startswith("   ") and line.endswith(":")]


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topology", default=str(TOPOLOGY), help="the topology file")
    parser.add_argument("--profile", action="append",
                        help="a profile to render (repeatable; default: those the output file has)")
    parser.add_argument("--output", default=str(OUTPUT), help="where to write; - for stdout")
    parser.add_argument("--profiles-from", metavar="FILE",
                        help="render the profiles this earlier output has (default: --output)")
    args = parser.parse_args(argv)
    try:
        data = load(args.topology)
        names = (args.profile or profiles_in(args.profiles_from or args.output)
                 or ["production"])
        try:
            source = pathlib.Path(args.topology).resolve().relative_to(ROOT)
        except ValueError:
            source = pathlib.Path(args.topology).name
        text = render(data, names, source)
    except (Invalid, KeyError, tomllib.TOMLDecodeError, OSError) as error:
        print(f"strimzi-topics: {args.topology}: {error}", file=sys.stderr)
        return 2
    if args.output == "-":
        sys.stdout.write(text)
    else:
        pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.output).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
