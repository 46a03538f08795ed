"""`mailrelay suppressions`: the one suppression list across providers (hard bounces,
complaints and unsubscribes that provider webhooks reported, and addresses added by hand).
A send to a suppressed address is refused before any provider is contacted."""

from __future__ import annotations

import click

from mailrelay.cli import CliApp, HintingGroup, global_options, json_option, pass_app
from mailrelay.errors import UsageError

REASONS = ("bounced", "complained", "unsubscribed", "manual")


@click.group(cls=HintingGroup, context_settings={"max_content_width": 100})
@global_options()
def suppressions() -> None:
    """List, add, remove and import suppressed addresses.

    Provider webhooks (`mailrelay serve`, POST /v1/webhooks/NAME) add hard bounces,
    complaints and unsubscribes; `send` leaves a suppressed recipient out (exit 65 when
    no recipient is left) unless given --ignore-suppression.

    \b
    Examples:
      mailrelay suppressions list
      mailrelay suppressions add bad@example.com --reason bounced
      mailrelay suppressions remove bad@example.com
      mailrelay suppressions import postmark-bounces.csv
    """


@suppressions.command("list")
@global_options()
@json_option
@pass_app
def list_command(app: CliApp, json_mode: bool) -> None:
    """List the suppressed addresses with the reason, the provider and the time."""
    out = app.output(json_mode=json_mode)
    found = app.suppressions().all()
    if out.json_mode:
        out.emit_json({"count": len(found), "suppressions": [s.to_dict() for s in found]})
        return
    if not found:
        out.note("no suppressed addresses")
        return
    rows = []
    for s in found:
        doc = s.to_dict()
        rows.append([s.address, s.reason, s.provider or "-", doc["since"], doc["expires"] or "-"])
    columns = ["address", "reason", "provider", "since", "expires"]
    out.table("Suppressed addresses", columns, rows)


@suppressions.command("add")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDR...")
@click.option(
    "--reason", type=click.Choice(REASONS), default="manual", help="Why (default: manual)."
)
@global_options()
@json_option
@pass_app
def add_command(app: CliApp, addresses: tuple[str, ...], reason: str, json_mode: bool) -> None:
    """Suppress ADDR (repeatable): no send goes to it until it is removed."""
    out = app.output(json_mode=json_mode)
    from mailrelay.message import parse_address

    emails = [parse_address("suppressions add", a).email for a in addresses]
    suppression_list = app.suppressions()
    added = [suppression_list.add(a, reason) for a in emails]
    if out.json_mode:
        out.emit_json({"added": [s.to_dict() for s in added]})
    else:
        out.note(f"suppressed {len(added)} address(es) ({reason})")


@suppressions.command("remove")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDR...")
@global_options()
@json_option
@pass_app
def remove_command(app: CliApp, addresses: tuple[str, ...], json_mode: bool) -> None:
    """Lift the suppression of ADDR (repeatable); exit 1 when one was not suppressed."""
    out = app.output(json_mode=json_mode)
    suppression_list = app.suppressions()
    removed = [a for a in addresses if suppression_list.remove(a)]
    missing = [a for a in addresses if a not in removed]
    if out.json_mode:
        out.emit_json({"removed": removed, "not_suppressed": missing})
    else:
        for address in missing:
            out.warn(f"{address} was not suppressed")
        out.note(f"removed {len(removed)} suppression(s)")
    if missing:
        click.get_current_context().exit(1)


@suppressions.command("import")
@click.argument("csv_file", metavar="FILE")
@click.option(
    "--reason",
    type=click.Choice(REASONS),
    default="manual",
    help="The reason for rows whose own reason column says nothing known (default: manual).",
)
@global_options()
@json_option
@pass_app
def import_command(app: CliApp, csv_file: str, reason: str, json_mode: bool) -> None:
    """Add every address of a CSV export (an ESP's suppression or bounce export: the
    column named Email, Email Address, Recipient or Address; '-' reads standard input)."""
    from mailrelay.cli.compose import read_input_bytes
    from mailrelay.suppression import read_csv

    out = app.output(json_mode=json_mode)
    raw = read_input_bytes(csv_file, "CSV file", 64 * 1024 * 1024)
    try:
        pairs = read_csv(raw.decode("utf-8-sig"), default_reason=reason)
    except UnicodeDecodeError:
        raise UsageError(f"CSV file {csv_file}: not UTF-8 text") from None
    app.suppressions().add_many(pairs, detail=f"imported from {csv_file}")
    if out.json_mode:
        out.emit_json({"imported": len(pairs), "file": csv_file})
    else:
        out.note(f"imported {len(pairs)} address(es) from {csv_file}")
