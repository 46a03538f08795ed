"""`mailrelay schema`: print the JSON Schema of a message (send --message, send --batch)."""

from __future__ import annotations

import json

import click

from mailrelay.cli import global_options


@click.command(context_settings={"max_content_width": 100})
@global_options()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of a message given as JSON.

    It is the schema that 'send --message' and every line of 'send --batch' are checked
    against; save it for an editor or another program to validate with.

    \b
    Examples:
      mailrelay schema > message.schema.json
    """
    from mailrelay.message.msgjson import message_schema

    click.echo(json.dumps(message_schema(), indent=2, ensure_ascii=False))
