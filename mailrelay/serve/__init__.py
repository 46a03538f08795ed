"""`mailrelay serve`: the HTTP service on the engine, state and spool the CLI uses.

app.py is the Flask application (`create_app`), answer.py the one rule from an engine
result to an HTTP answer, idempotency.py the Idempotency-Key store, openapi.py the API's
description, pages.py the status page (chart.py its charts), apipage.py `/api` (Swagger
UI), metrics.py `/metrics` (every worker's counts summed), server.py the gunicorn glue.
Flask, gunicorn and prometheus-client are imported by this package only (the `serve` extra).
"""
