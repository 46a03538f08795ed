"""The least a click tool can cost for one HTTP API send (Postmark's /email shape)."""

from __future__ import annotations

import click
import requests


@click.command()
@click.option("--url", required=True)
@click.option("-r", "--from", "sender", required=True)
@click.option("-s", "--subject", default="")
@click.option("--text", default="")
@click.argument("to")
def main(url: str, sender: str, subject: str, text: str, to: str) -> None:
    resp = requests.post(
        url,
        json={"From": sender, "To": to, "Subject": subject, "TextBody": text},
        headers={"X-Postmark-Server-Token": "bench-token", "Accept": "application/json"},
        timeout=30,
    )
    resp.raise_for_status()


if __name__ == "__main__":
    main()
