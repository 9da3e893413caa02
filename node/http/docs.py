"""`/docs`: Swagger UI over the node's OpenAPI document, served by the node itself.

It works offline and behind any firewall: every file the page loads comes from this node (the
official `swagger-ui-dist` files vendored under `node/static/swagger-ui`, see its README), never
from a CDN. The page has no inline script, so it is served with a strict Content-Security-Policy
(scripts, styles, fetches and images from this origin only; inline styles are allowed because
Swagger UI sets some). Only the files listed in `ASSETS` are served.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parents[1] / "static"
PREFIX = "/docs/"

ASSETS: dict[str, Path] = {
    "swagger-ui.css": STATIC / "swagger-ui" / "swagger-ui.css",
    "swagger-ui-bundle.js": STATIC / "swagger-ui" / "swagger-ui-bundle.js",
    "favicon-32x32.png": STATIC / "swagger-ui" / "favicon-32x32.png",
    "docs.js": STATIC / "docs.js",
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Messenger node API</title>
  <link rel="stylesheet" href="{PREFIX}swagger-ui.css">
  <link rel="icon" type="image/png" href="{PREFIX}favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{PREFIX}swagger-ui-bundle.js"></script>
  <script src="{PREFIX}docs.js"></script>
</body>
</html>
"""


async def page(request: web.Request) -> web.Response:
    return web.Response(
        text=PAGE, content_type="text/html", headers={"Content-Security-Policy": CSP}
    )


async def asset(request: web.Request) -> web.StreamResponse:
    path = ASSETS.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})
