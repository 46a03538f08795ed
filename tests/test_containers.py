"""The container files in contrib/ (Dockerfile, compose, Kubernetes) checked on paper, as the
man page is: images cannot be pulled here, so every command, option, route, port, variable
and config key they name must be real."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from mailrelay.serve.openapi import documented_routes
from tests.test_distribution import command_at

ROOT = Path(__file__).resolve().parents[1]
CONTAINER = ROOT / "contrib" / "container"
DOCKERFILE = (CONTAINER / "Dockerfile").read_text("utf-8")
COMPOSE = yaml.safe_load((CONTAINER / "compose.yaml").read_text("utf-8"))
K8S = list(yaml.safe_load_all((ROOT / "contrib" / "kubernetes" / "mailrelay.yaml").read_text()))
CONFIG = CONTAINER / "config.toml"
PORT = 8080


def dockerfile_instructions() -> dict[str, list[str]]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    found: dict[str, list[str]] = {}
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def k8s(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in K8S if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def mailrelay_argvs() -> list[list[str]]:
    """Every mailrelay command line the files give."""
    docker = dockerfile_instructions()
    argvs = [yaml.safe_load(docker["CMD"][0])]
    argvs.append(COMPOSE["services"]["mailrelay"]["command"])
    pod = k8s("Deployment", "mailrelay")["spec"]["template"]["spec"]["containers"][0]
    argvs.append(pod["command"])
    return argvs


def check_argv(argv: list[str]) -> None:
    assert argv[0] == "mailrelay", argv
    path: list[str] = []
    rest = argv[1:]
    while rest and not rest[0].startswith("-"):
        path.append(rest.pop(0))
    command = command_at(tuple(path))  # an unknown command fails here
    assert not isinstance(command, click.Group), argv
    known = {opt for p in command.params for opt in [*p.opts, *p.secondary_opts]}
    for word in rest:
        if word.startswith("-"):
            assert word.split("=")[0] in known, f"{' '.join(argv)}: no option {word}"
    ctx = command.make_context("mailrelay " + " ".join(path), list(rest), resilient_parsing=False)
    bind = ctx.params.get("bind")
    assert bind is None or bind.rpartition(":")[2] == str(PORT), argv


@pytest.mark.parametrize("argv", mailrelay_argvs(), ids=lambda a: " ".join(a))
def test_every_command_line_is_a_real_command_with_real_options(argv: list[str]) -> None:
    check_argv(argv)


def test_every_route_is_a_real_route() -> None:
    routes = {path for method, path in documented_routes() if method == "GET"}
    named = re.findall(r"127\.0\.0\.1:(\d+)(/\w+)", DOCKERFILE + str(COMPOSE))
    pod = k8s("Deployment", "mailrelay")["spec"]["template"]["spec"]["containers"][0]
    probes = [pod["readinessProbe"]["httpGet"], pod["livenessProbe"]["httpGet"]]
    assert named and all(port == str(PORT) and path in routes for port, path in named), named
    assert [p["path"] for p in probes] == ["/readyz", "/healthz"]
    assert all(p["port"] == "http" for p in probes)
    assert pod["ports"] == [{"name": "http", "containerPort": PORT}]


def test_the_dockerfile_runs_serve_as_a_user_with_a_healthcheck() -> None:
    docker = dockerfile_instructions()
    assert docker["FROM"][0].endswith("-slim")
    assert docker["USER"] == ["mailrelay"] and "useradd" in " ".join(docker["RUN"])
    assert docker["EXPOSE"] == [str(PORT)] and docker["HEALTHCHECK"]
    for copy in docker["COPY"]:
        *sources, _ = shlex.split(copy)
        assert all((ROOT / s).exists() for s in sources), copy  # relative to the root
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(docker["ENV"])))
    assert env["MAILRELAY_CONFIG"] == "/etc/mailrelay/config.toml"


def test_the_variables_are_ones_mailrelay_reads() -> None:
    man = (ROOT / "man" / "mailrelay.1").read_text("utf-8")
    docker = dict(re.findall(r"(MAILRELAY_\w+)=(\S+)", " ".join(dockerfile_instructions()["ENV"])))
    compose = COMPOSE["services"]["mailrelay"]["environment"]
    pod = k8s("Deployment", "mailrelay")["spec"]["template"]["spec"]["containers"][0]
    podenv = {e["name"]: e["value"] for e in pod["env"]}
    for name in [*docker, *podenv, *(n for n in compose if n.startswith("MAILRELAY_"))]:
        if name != "MAILRELAY_TOKEN":  # the config's own { env = ... }
            assert f".B {name}\n" in man, name
    # the secrets the config reads are the ones compose and the Secret give
    wanted = set(re.findall(r'env = "(\w+)"', CONFIG.read_text()))
    assert wanted <= set(compose)
    assert wanted == set(k8s("Secret", "mailrelay")["stringData"])
    assert podenv["MAILRELAY_CONFIG"] == compose["MAILRELAY_CONFIG"] == docker["MAILRELAY_CONFIG"]
    assert podenv["MAILRELAY_STATE"] == compose["MAILRELAY_STATE"] == "redis://valkey:6379/0"


def test_the_config_is_one_mailrelay_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailrelay.config import load_settings
    from mailrelay.providers import registry

    for name in re.findall(r'env = "(\w+)"', CONFIG.read_text()):
        monkeypatch.setenv(name, "from-the-environment")
    problems: list[Any] = []
    settings = load_settings(CONFIG, (), problems=problems)
    assert problems == []
    assert all(registry.problems(spec) == [] for spec in settings.providers)
    assert settings.serve.bind == f"0.0.0.0:{PORT}"
    assert settings.on_failure == "queue"
    assert [t.reveal() for t in settings.serve.tokens] == ["from-the-environment"]
    configmap = k8s("ConfigMap", "mailrelay")["data"]["config.toml"]
    assert configmap == CONFIG.read_text("utf-8")  # one config, two homes
    assert str(settings.spool_dir) in str(COMPOSE) and str(settings.spool_dir) in str(K8S)


def test_the_fleet_shares_one_valkey_that_keeps_its_data() -> None:
    valkey = COMPOSE["services"]["valkey"]
    assert valkey["command"][-2:] == ["--appendonly", "yes"]
    assert COMPOSE["services"]["mailrelay"]["deploy"]["replicas"] == 2
    assert COMPOSE["services"]["mailrelay"]["ports"] == [f"{PORT}:{PORT}"]
    stateful = k8s("StatefulSet", "valkey")["spec"]["template"]["spec"]["containers"][0]
    assert stateful["command"][-2:] == ["--appendonly", "yes"]
    assert k8s("Service", "valkey")["spec"]["ports"][0]["port"] == 6379
    assert k8s("Deployment", "mailrelay")["spec"]["replicas"] == 2
    pdb = k8s("PodDisruptionBudget", "mailrelay")["spec"]
    assert pdb["selector"] == k8s("Deployment", "mailrelay")["spec"]["selector"]


def test_the_readme_says_how_to_run_them() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("## Containers", 1)[1].split("\n## ", 1)[0]
    for name in ("contrib/container/Dockerfile", "contrib/container/compose.yaml",
                 "contrib/kubernetes/mailrelay.yaml", "docker build",
                 "MAILRELAY_TOKEN"):  # fmt: skip
        assert name in section, name
