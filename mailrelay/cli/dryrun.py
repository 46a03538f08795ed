"""`send --dry-run`: the plan the engine would follow and the message as it would go out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailrelay.cli import CliApp
    from mailrelay.engine import Engine
    from mailrelay.message import Message
    from mailrelay.state import State


def show_plan(app: CliApp, engine: Engine, state: State, message: Message) -> None:
    out = app.out
    plan = engine.plan(state)
    steps: list[dict[str, Any]] = []
    for i, provider in enumerate(plan, 1):
        until = engine.cooling_until(state, provider)
        steps.append(
            {
                "position": i,
                "provider": provider.name,
                "type": provider.type,
                "settings": provider.describe(),
                "cooling_until": until,
            }
        )
    if out.json_mode:
        out.emit_json(
            {
                "dry_run": True,
                "policy": engine.policy.order,
                "first": plan[0].name if plan else None,
                "plan": steps,
                "message": message.summary(),
            }
        )
        return
    from mailrelay.clock import when_text

    out.data(f"dry run: nothing is sent and no state changes (policy {engine.policy.order})")
    for step in steps:
        cool = (
            f", cooling until {when_text(step['cooling_until'])}" if step["cooling_until"] else ""
        )
        settings = ", ".join(f"{k}={v}" for k, v in step["settings"].items())
        out.data(
            f"  {step['position']}. {step['provider']} ({step['type']}{cool}) {settings}".rstrip()
        )
    out.data("message:")
    raw = message.as_bytes().decode("utf-8", errors="replace")
    if not app.verbose:
        head, _, _ = raw.partition("\r\n\r\n")
        summary = message.summary()
        raw = head + (
            f"\r\n\r\n[text {summary['text_bytes']} bytes, html {summary['html_bytes']} bytes, "
            f"{len(message.attachments)} attachment(s); -v shows the whole message]"
        )
    for bcc in message.bcc:
        out.data(f"  (envelope) Bcc: {bcc}")
    for line in _subject_as_typed(raw.splitlines(), message.subject):
        out.data("  " + line)


def _subject_as_typed(lines: list[str], subject: str) -> list[str]:
    """The Subject header shown decoded, as the user typed it, not in its RFC 2047 form."""
    shown: list[str] = []
    in_subject = False
    for i, line in enumerate(lines):
        if not line:  # the end of the headers: the body as it is
            return shown + lines[i:]
        if in_subject and line[:1] in (" ", "\t"):
            continue  # a folded line of the encoded subject
        in_subject = line.lower().startswith("subject:")
        if in_subject and "=?" in line:
            line = f"Subject: {subject}"
        shown.append(line)
    return shown
