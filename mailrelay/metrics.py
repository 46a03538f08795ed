"""Prometheus metrics from the state store and the spool, in the text exposition format.

`render(state, spool_stats)` is the whole page (`mailrelay metrics`, and `serve`'s /metrics
with its own families appended); `families()` and `format_families()` are its parts, with
no registry and no dependency. Names follow the Prometheus conventions: base units (seconds),
`_total` on counters, HELP and TYPE before each family. Labels carry provider names, outcome
classes, results and spool folders only: never a recipient, a domain or a subject.
Format: https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from mailrelay.datarecord import field, record
from mailrelay.ratelimit.spec import LIMITED_COUNTS
from mailrelay.state import State

OUTCOMES = ("accepted", "transient", "provider", "rejected", "permanent", "ambiguous")
RESULTS = ("sent", "queued", "failed", "rejected")
FOLDERS = ("queued", "held", "failed", "corrupt")
SPOOL_SUFFIX = ".json"
_STAMP = re.compile(r"^(\d{8}T\d{6}\.\d{6})Z")  # a queue id starts with its creation time


@record
class Sample:
    labels: dict[str, str]
    value: float
    suffix: str = ""  # after the family's name: a histogram's _bucket, _count, _sum


@record
class Family:
    name: str
    type: str  # counter | gauge | histogram
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append(Sample(labels, value))


@record
class SpoolStats:
    """How many messages each spool folder holds, and how old the oldest queued one is."""

    counts: dict[str, int] = field(default_factory=dict)
    oldest: datetime | None = None  # creation time of the oldest queued message


def spool_stats(path: Path) -> SpoolStats:
    """Count the spool at `path` (queued files at its top, the others in sub-folders);
    a folder that does not exist counts 0. Reads names only, never a message."""
    stats = SpoolStats()
    for folder in FOLDERS:
        directory = path if folder == "queued" else path / folder
        names = _message_names(directory, suffix=SPOOL_SUFFIX if folder == "queued" else "")
        stats.counts[folder] = len(names)
        if folder == "queued" and names:
            stats.oldest = _created(directory, min(names))
    return stats


def _message_names(directory: Path, *, suffix: str) -> list[str]:
    """The message files of a folder: not hidden (temp files are), not folders; queued
    messages are `.json`, held/ also keeps sendmail's `.eml` files."""
    try:
        with os.scandir(directory) as entries:
            return [
                e.name
                for e in entries
                if e.name.endswith(suffix)
                and not e.name.startswith(".")
                and e.is_file(follow_symlinks=False)
            ]
    except OSError:  # missing, or not ours to read: nothing to count
        return []


def _created(directory: Path, name: str) -> datetime | None:
    match = _STAMP.match(name)
    if match:
        with contextlib.suppress(ValueError):
            when = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%f")
            return when.replace(tzinfo=timezone.utc)
    try:  # a name we did not make: its file's modification time will do
        return datetime.fromtimestamp((directory / name).stat().st_mtime, timezone.utc)
    except OSError:
        return None


def families(
    state: State,
    spool: SpoolStats | None,
    *,
    now: datetime,
    providers: Sequence[str] = (),
    version: str | None = None,
) -> list[Family]:
    """The families of `render`. `providers` (the configured names, in order) get a series
    even before their first attempt, so rate() sees them start from 0."""
    if version is None:
        from mailrelay import __version__

        version = __version__
    names = list(dict.fromkeys([*providers, *state.providers]))
    attempts = Family(
        "mailrelay_send_attempts_total",
        "counter",
        "Attempts to hand a message to a provider, by provider and outcome class.",
    )
    cooldown = Family(
        "mailrelay_provider_cooldown_seconds",
        "gauge",
        "Seconds until a resting provider is tried first again; 0 when it is not resting.",
    )
    failures = Family(
        "mailrelay_provider_consecutive_failures",
        "gauge",
        "Failures of a provider since it last accepted a message.",
    )
    success = Family(
        "mailrelay_provider_last_success_timestamp_seconds",
        "gauge",
        "When a provider last accepted a message (Unix time); absent if it never has.",
    )
    for name in names:
        entry = state.providers.get(name)
        outcomes = entry.outcomes if entry else {}
        counted = sorted(set(outcomes) - set(LIMITED_COUNTS.values()))  # ratelimit/report.py
        for outcome in dict.fromkeys([*OUTCOMES, *counted]):
            attempts.add(outcomes.get(outcome, 0), provider=name, outcome=outcome)
        until = entry.cooldown_until if entry else None
        rest = (until - now).total_seconds() if until is not None else 0.0
        cooldown.add(max(rest, 0.0), provider=name)
        failures.add(entry.consecutive_failures if entry else 0, provider=name)
        if entry is not None and entry.last_success is not None:
            success.add(entry.last_success.timestamp(), provider=name)
    messages = Family(
        "mailrelay_messages_total",
        "counter",
        "Messages by result: sent, queued (kept in the spool), failed (not sent, not "
        "queued), rejected (refused for its own fault).",
    )
    for result in dict.fromkeys([*RESULTS, *sorted(state.messages)]):
        messages.add(state.messages.get(result, 0), result=result)
    out = [attempts, messages, cooldown, failures, success]
    if spool is not None:
        depth = Family("mailrelay_spool_messages", "gauge", "Messages in each spool folder.")
        for folder in FOLDERS:
            depth.add(spool.counts.get(folder, 0), folder=folder)
        oldest = Family(
            "mailrelay_spool_oldest_age_seconds",
            "gauge",
            "Age of the oldest queued message; 0 when the queue is empty.",
        )
        age = (now - spool.oldest).total_seconds() if spool.oldest is not None else 0.0
        oldest.add(max(age, 0.0))
        out += [depth, oldest]
    info = Family("mailrelay_build_info", "gauge", "The mailrelay version; always 1.")
    info.add(1, version=version)
    out.append(info)
    return out


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def format_families(items: Iterable[Family]) -> str:
    """The text exposition of `items` (HELP, TYPE, then one line per sample)."""
    lines: list[str] = []
    for family in items:
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in sample.labels.items())
            where = f"{{{labels}}}" if labels else ""
            lines.append(f"{family.name}{sample.suffix}{where} {format_value(sample.value)}")
    return "\n".join(lines) + "\n" if lines else ""


def render(
    state: State,
    spool: SpoolStats | None,
    *,
    now: datetime | None = None,
    providers: Sequence[str] = (),
    version: str | None = None,
) -> str:
    """The metrics page: every family of `families()`, formatted."""
    when = now if now is not None else datetime.now(timezone.utc)
    return format_families(families(state, spool, now=when, providers=providers, version=version))


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` as node_exporter's textfile collector wants it: a temp file
    in the same folder (a dot name the collector skips), 0644, fsynced, renamed over."""
    import tempfile

    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # no secret in it: the collector may run as another user
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
