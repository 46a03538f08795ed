"""`/api`: Swagger UI 5 (it reads OpenAPI 3.1; 4.x renders nothing for it) over /openapi.json.

The assets (script, style, icons) are the Swagger UI distribution the `flask-swagger-ui`
package ships, served by the service itself under ASSETS, so the page needs no other host.
The page around them is ours: it points Swagger UI at our document, turns the validator
badge off (it would call a public validator) and keeps the token given to "Authorize" for
"Try it out"."""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

ASSETS = "/api/assets"  # where the service serves the Swagger UI distribution
_PACKAGE = "flask-swagger-ui"


def swagger_dist() -> str:
    """The folder of Swagger UI's files inside the installed package (found without
    importing it)."""
    spec = find_spec(_PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"mailrelay serve needs the {_PACKAGE} package for /api: pip install 'mailrelay[serve]'"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / "dist")


_CONFIG = {
    "url": "/openapi.json",
    "dom_id": "#swagger-ui",
    "deepLinking": True,
    "validatorUrl": None,  # no badge fetched from a validator on another host
    "persistAuthorization": True,  # the token given to "Authorize" stays for "Try it out"
    "tryItOutEnabled": False,
    "displayOperationId": True,
    "defaultModelsExpandDepth": 1,
}


def api_page() -> str:
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>mailrelay API</title>
<link rel=stylesheet href="{ASSETS}/index.css">
<link rel=stylesheet href="{ASSETS}/swagger-ui.css">
<link rel=icon type=image/png href="{ASSETS}/favicon-32x32.png" sizes=32x32>
</head><body>
<div id=swagger-ui><noscript>This page needs JavaScript; the description itself is
<a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</noscript></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script>
"use strict";
window.addEventListener("load", function () {{
  const config = {json.dumps(_CONFIG)};
  config.presets = [SwaggerUIBundle.presets.apis];
  config.layout = "BaseLayout";
  window.ui = SwaggerUIBundle(config);
}});
</script></body></html>
"""
