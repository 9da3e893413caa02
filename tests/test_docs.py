"""`/docs` works offline: the page and everything it loads come from the node itself, and the
page runs under a strict Content-Security-Policy (no inline script, nothing from elsewhere)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tests.support import REPO, Api


class References(HTMLParser):
    """Every URL the page loads (`src`, `href`), and the bodies of its script elements."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


async def test_docs_and_every_asset_it_references_come_from_the_node(api: Api) -> None:
    async with api.http.get(api.base + "/docs") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        page = await r.text()
    assert (
        "script-src 'self'" in csp
        and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    )
    refs = References()
    refs.feed(page)
    assert refs.urls, page
    assert all(not body.strip() for body in refs.scripts), "inline script"
    assert not re.search(r"https?://", page), "the page names another origin"
    scripts = []
    for url in refs.urls:
        assert url.startswith("/"), url
        async with api.http.get(api.base + url) as r:
            assert r.status == 200, url
            body = await r.read()
            assert body, url
            if url.endswith(".js"):
                assert "javascript" in r.content_type, (url, r.content_type)
                scripts.append(body.decode())
            if url.endswith(".css"):
                assert r.content_type == "text/css", url
    assert any("SwaggerUIBundle" in s and "/api/v1/openapi.json" in s for s in scripts)
    document = await api.call("GET", "/api/v1/openapi.json")
    assert document.status == 200 and document.body["openapi"].startswith("3.1")


async def test_only_the_listed_assets_are_served(api: Api) -> None:
    for name in ("../config.py", "swagger-ui-bundle.js.map", "..%2Fconfig.py", "LICENSE"):
        r = await api.call("GET", "/docs/" + name)
        assert r.status == 404, (name, r)


MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", ["README.md", "docs/PROTOCOL.md"])
def test_the_docs_link_only_to_files_a_clone_has(page: str) -> None:
    path = REPO / page
    text = path.read_text()
    assert "../shared" not in text
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        linked = (path.parent / target.split("#")[0]).resolve()
        assert linked.is_relative_to(REPO), (page, target)
        assert linked.exists(), (page, target)
