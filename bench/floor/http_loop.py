"""A bare requests.Session loop posting each line of a JSON-lines batch (the batch floor)."""

from __future__ import annotations

import json
import sys

import requests


def main() -> None:
    url, path = sys.argv[1], sys.argv[2]
    session = requests.Session()
    headers = {"X-Postmark-Server-Token": "bench-token", "Accept": "application/json"}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            payload = {
                "From": doc["from"],
                "To": doc["to"],
                "Subject": doc["subject"],
                "TextBody": doc["text"],
            }
            session.post(url, json=payload, headers=headers, timeout=30).raise_for_status()


if __name__ == "__main__":
    main()
