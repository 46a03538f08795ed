"""What contrib/ ships for Prometheus and Grafana stays true to the metrics mailrelay prints:
the Grafana dashboard (importable JSON) and the alerting rules of docs/monitoring.md as a rules
file. promtool (Debian's prometheus package; .ci/run fetches it) checks and unit-tests the
rules when it is there; the structure and the metric names are checked everywhere."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.test_e2e import mailrelay
from tests.test_serve import AUTH, Server, config, outbox

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "contrib" / "grafana" / "mailrelay-dashboard.json"
RULES = ROOT / "contrib" / "prometheus" / "mailrelay-rules.yml"
RULE_TESTS = ROOT / "contrib" / "prometheus" / "mailrelay-rules.test.yml"
METRIC = re.compile(r"\bmailrelay_[a-z0-9_]+")


def sample_names(text: str) -> set[str]:
    """The names of the samples and of the families declared by # TYPE (a family with no
    sample yet, such as the last success of a provider that never accepted one)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split()[0])
    return names


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The metric names `mailrelay metrics` prints (one provider, a spool)."""
    tmp = tmp_path_factory.mktemp("metrics")
    r = mailrelay(
        "--provider", f"outbox://{tmp}/outbox", "--state", str(tmp / "state.toml"), "metrics",
        input=None,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return sample_names(r.stdout)


def exprs(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return found


def test_the_dashboard_is_importable_and_names_only_printed_metrics(printed: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert (
            set(p["gridPos"]) == {"x", "y", "w", "h"}
            and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        )
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
    used = {name for expr in exprs(dashboard) for name in METRIC.findall(expr)}
    assert used <= printed, sorted(used - printed)
    for family in (
        "mailrelay_send_attempts_total",  # attempts by provider and outcome
        "mailrelay_messages_total",  # messages by result
        "mailrelay_provider_cooldown_seconds",
        "mailrelay_spool_messages",  # queue depth
        "mailrelay_spool_oldest_age_seconds",  # queue age
    ):
        assert family in used, family


def rules_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_rules_file_parses_and_is_the_documented_rules(
    tmp_path: Path, printed: set[str]
) -> None:
    document = yaml.safe_load(RULES.read_text("utf-8"))
    assert set(document) == {"groups"}
    names = [g["name"] for g in document["groups"]]
    assert len(names) == len(set(names))
    for rule in rules_of(document):
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert rule["annotations"]["summary"]
        assert "for" not in rule or re.fullmatch(r"\d+[smhd]", rule["for"])
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    # the same rules as docs/monitoring.md shows
    docs = (ROOT / "docs" / "monitoring.md").read_text("utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", docs, re.S)
    documented = []
    for block in blocks:
        if "alert:" not in block:
            continue
        parsed = yaml.safe_load(block)
        documented += rules_of(parsed) if isinstance(parsed, dict) else parsed
    assert sorted(documented, key=str) == sorted(rules_of(document), key=str)
    # every metric a rule reads is printed by mailrelay metrics or by serve's /metrics
    server = Server(tmp_path, config(tmp_path, [outbox(tmp_path)]))
    try:
        served = sample_names(requests.get(server.url + "/metrics", headers=AUTH, timeout=60).text)
    finally:
        server.stop()
    used = {name for rule in rules_of(document) for name in METRIC.findall(rule["expr"])}
    assert used <= printed | served, sorted(used - printed - served)


PROMTOOL = os.environ.get("PROMTOOL")  # read before conftest's fixture tidies the environment


def promtool() -> str:
    found = PROMTOOL or shutil.which("promtool")
    if not found:
        pytest.skip("no promtool here (Debian's prometheus package; .ci/run fetches it)")
    return found


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    tool = promtool()
    check = subprocess.run(
        [tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [tool, "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULE_TESTS.parent,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
