"""The web client's routes over real HTTP: the page and its files, with the security headers
that keep the page to its own origin, revalidation by ETag, and the service worker's scope."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestServer

from node.web.assets import load_assets
from node.web.routes import content_security_policy


def url(node: TestServer, path: str) -> str:
    return str(node.make_url(path))


async def test_the_page_is_served_with_a_strict_policy(
    node: TestServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(url(node, "/")) as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        body = await r.text()
        headers = r.headers
    assert '<script type="module" src="/static/js/app.js">' in body
    assert "<style" not in body and " style=" not in body  # nothing inline for the CSP to refuse
    assert "onclick" not in body
    csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["img-src"] == "'self' blob: data:"
    assert csp["object-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    host = f"127.0.0.1:{node.port}"
    assert csp["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-cache"


async def test_files_are_revalidated_by_etag(node: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url(node, "/static/js/app.js")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        etag = r.headers["ETag"]
    async with http.get(url(node, "/static/js/app.js"), headers={"If-None-Match": etag}) as r:
        assert r.status == 304
        assert await r.read() == b""
    async with http.get(url(node, "/static/app.css")) as r:
        assert r.headers["Content-Type"] == "text/css; charset=utf-8"
        assert r.headers["ETag"] != etag


async def test_the_service_worker_may_control_the_whole_site(
    node: TestServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(url(node, "/sw.js")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert r.headers["Service-Worker-Allowed"] == "/"
        assert "showNotification" in await r.text()


async def test_only_packaged_files_are_served(
    node: TestServer, http: aiohttp.ClientSession
) -> None:
    for path in (
        "/static/nope.js",
        "/static/../routes.py",
        "/static/%2e%2e/routes.py",
        "/static/js/../../assets.py",
        "/static/",
    ):
        async with http.get(url(node, path)) as r:
            assert r.status == 404, path
            assert (await r.json())["error"]["code"] == "not_found"


def test_every_file_the_page_names_is_packaged() -> None:
    assets = load_assets()
    page = assets["index.html"].body.decode()
    for name in ("app.css", "js/app.js", "icon.svg", "manifest.webmanifest", "icon-192.png"):
        assert name in assets, name
        assert name in page or name in assets["manifest.webmanifest"].body.decode()
    modules = [name for name in assets if name.startswith("js/")]
    for name in modules:  # every relative import of every module resolves to a packaged module
        text = assets[name].body.decode()
        folder = name.rsplit("/", 1)[0]
        for line in text.splitlines():
            if line.startswith("import ") and " from '" in line:
                target = line.split(" from '", 1)[1].split("'", 1)[0]
                parts = [*folder.split("/"), *target.split("/")]
                resolved: list[str] = []
                for part in parts:
                    if part == "..":
                        resolved.pop()
                    elif part != ".":
                        resolved.append(part)
                assert "/".join(resolved) in assets, (name, target)


def test_the_policy_names_only_a_well_formed_host() -> None:
    assert content_security_policy("chat.example.org").endswith(
        "connect-src 'self' ws://chat.example.org wss://chat.example.org"
    )
    assert content_security_policy("[::1]:8080").endswith("ws://[::1]:8080 wss://[::1]:8080")
    for bad in ("evil; script-src *", "a b", "", None):
        assert content_security_policy(bad).endswith("connect-src 'self'"), bad
