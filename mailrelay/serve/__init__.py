"""`mailrelay serve`: the HTTP service on the engine, state and spool the CLI uses.

app.py is the Flask application (`create_app`) and its blueprints are messages.py (the
sends) and info.py (health, metrics, the API, the pages); answer.py is the one rule from an
engine result to an HTTP answer, keys.py the Idempotency-Key store, probegate.py the probe
gate and liveness.py whether a claim's owner still runs (fleet.py: both in Redis),
openapi.py the API's description, pages.py the status page (chart.py its charts),
apipage.py `/api` (Swagger UI), metrics.py `/metrics` (every worker's counts summed),
server.py the gunicorn glue.
Flask, gunicorn and prometheus-client are imported by this package only (the `serve` extra).
"""
