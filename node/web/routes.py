"""Routes of the web client: `/` (the page), `/sw.js` (the service worker, at the root so that
it may control `/`) and `/static/{path}` (scripts, styles, icons).

Every answer carries the security headers below; the page's Content-Security-Policy allows
nothing inline and nothing from another origin: scripts, styles and workers from the node itself,
images also from `blob:` (media previews fetched with the bearer token) and `data:`, and
connections to the node itself, its WebSocket included. Files are revalidated on every load
(`no-cache` plus an `ETag`), so a node upgrade reaches browsers at once without a build step.
"""

from __future__ import annotations

import re

from aiohttp import web

from node.web.assets import Asset, load_assets

# A host as a browser sends it (name or IP, optional port); anything else is left out of the CSP
# rather than echoed into a header.
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "font-src 'self'; media-src 'self' blob:; worker-src 'self'; manifest-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def content_security_policy(host: str | None) -> str:
    """The page's policy. `connect-src 'self'` covers same-origin `ws:`/`wss:` in CSP Level 3;
    the WebSocket origin of the request's own host is named too for browsers that predate it."""
    connect = "connect-src 'self'"
    if host and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return f"{_CSP}; {connect}"


def security_headers(request: web.Request) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(request.host),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }


def _answer(request: web.Request, asset: Asset, **extra: str) -> web.Response:
    headers = security_headers(request) | {"ETag": asset.etag, "Cache-Control": "no-cache"}
    headers |= extra
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=asset.body, headers=headers)


def setup_web_client(app: web.Application) -> None:
    """Register the web client's routes on `app`. The files are read here, once."""
    assets = load_assets()
    page = assets["index.html"]
    worker = assets["sw.js"]

    async def index(request: web.Request) -> web.Response:
        return _answer(request, page)

    async def service_worker(request: web.Request) -> web.Response:
        return _answer(request, worker, **{"Service-Worker-Allowed": "/"})

    async def static(request: web.Request) -> web.Response:
        asset = assets.get(request.match_info["path"])
        if asset is None:
            raise web.HTTPNotFound()
        return _answer(request, asset)

    app.router.add_get("/", index)
    app.router.add_get("/sw.js", service_worker)
    app.router.add_get("/static/{path:.+}", static)
