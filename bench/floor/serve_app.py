"""The least a Flask + gunicorn service can cost for one send: check a bearer token, parse
the JSON, one requests.Session POST to the provider (Postmark's /email shape).

    BENCH_URL=http://127.0.0.1:PORT/email BENCH_TOKEN=t gunicorn -k gthread \
        bench.floor.serve_app:app
"""

from __future__ import annotations

import hmac
import os
import threading

import requests
from flask import Flask, jsonify, request

URL = os.environ.get("BENCH_URL", "")
TOKEN = os.environ.get("BENCH_TOKEN", "").encode()
app = Flask(__name__)
_local = threading.local()


def session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    s: requests.Session = _local.session
    return s


@app.post("/v1/messages")
def send() -> object:
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
    if not hmac.compare_digest(given, TOKEN):
        return jsonify(error="unauthorized"), 401
    doc = request.get_json()
    resp = session().post(
        URL,
        json={"From": "bench@example.com", "To": doc["to"][0], "Subject": doc.get("subject", ""),
              "TextBody": doc.get("text", "")},
        headers={"X-Postmark-Server-Token": "bench-token", "Accept": "application/json"},
        timeout=30,
    )  # fmt: skip
    resp.raise_for_status()
    return jsonify(delivered=True, provider_message_id=resp.json()["MessageID"])
