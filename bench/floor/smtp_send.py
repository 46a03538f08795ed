"""The least a click tool can cost for one SMTP send: parse options, build, send, exit."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import click


@click.command()
@click.option("--port", type=int, required=True)
@click.option("-r", "--from", "sender", required=True)
@click.option("-s", "--subject", default="")
@click.option("--text", default="")
@click.argument("to")
def main(port: int, sender: str, subject: str, text: str, to: str) -> None:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(msg)


if __name__ == "__main__":
    main()
