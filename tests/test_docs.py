"""The documentation matches the code.

- `/docs` works offline: the page and everything it loads come from the node itself, and the page
  runs under a strict Content-Security-Policy (no inline script, nothing from elsewhere).
- The written docs cannot drift silently: every setting is in docs/OPERATIONS.md (whose settings
  reference is generated from `node/config.py`), every error code the node can answer, every
  REST route and every client frame is in docs/PROTOCOL.md, every part of the node `/healthz` can
  name and every metric are in the docs, and every relative link points to a file a clone has.
"""

from __future__ import annotations

import inspect
import re
import typing
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from node import assembly, errors, metrics
from node.config import Settings
from node.http import middleware
from node.http.openapi import WS_PATH
from node.http.routes import ENDPOINTS, OPENAPI_PATH
from node.http.ws.schemas import ClientFrame
from node.push import parts
from tests import settings_doc
from tests.support import REPO, Api

PROTOCOL = REPO / "docs" / "PROTOCOL.md"
OPERATIONS = REPO / "docs" / "OPERATIONS.md"
README = REPO / "README.md"


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


# --- the written docs match the code ----------------------------------------------------------


def test_every_setting_is_in_the_operations_guide() -> None:
    text = OPERATIONS.read_text()
    missing = [
        variable
        for name, field in Settings.model_fields.items()
        for variable in settings_doc.env_names(name, field)
        if f"`{variable}`" not in text
    ]
    assert not missing, f"docs/OPERATIONS.md does not name {missing}"


def test_the_settings_reference_is_generated_from_the_code() -> None:
    written = settings_doc.current_block(OPERATIONS.read_text())
    assert written, "docs/OPERATIONS.md lost its generated settings block"
    assert written == settings_doc.render(), (
        "the settings reference in docs/OPERATIONS.md is stale: run python -m tests.settings_doc"
    )


# Variables the docs may name that are not node settings: the container entrypoint's, the test
# suite's and the load tools'.
NOT_SETTINGS = {
    "MESSENGER_WAIT_TIMEOUT",
    "MESSENGER_TEST_DATABASE_URL",
    "MESSENGER_TEST_REDIS_URL",
    "MESSENGER_TEST_CHROMIUM",
    "MESSENGER_LOCUST_NODES",
    "MESSENGER_PY",
    "MESSENGER_SCREENSHOTS",
}


@pytest.mark.parametrize("page", ["README.md", "docs/PROTOCOL.md", "docs/OPERATIONS.md"])
def test_the_docs_name_only_settings_that_exist(page: str) -> None:
    known = {
        variable
        for name, field in Settings.model_fields.items()
        for variable in settings_doc.env_names(name, field)
    }
    named = set(re.findall(r"\bMESSENGER_[A-Z0-9_]*[A-Z0-9]", (REPO / page).read_text()))
    assert not named - known - NOT_SETTINGS, f"{page} names settings that do not exist"


def _subclasses(cls: type[errors.ApiError]) -> list[type[errors.ApiError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def error_codes() -> set[str]:
    """Every code the node can answer: those of the error hierarchy, those the middleware derives
    from a bare HTTP status, and every code given where an error is raised or written."""
    codes = {cls.code for cls in _subclasses(errors.ApiError)}
    codes |= set(middleware._CODES.values()) | {"http_error"}
    spelled = re.compile(
        r"""code=["']([a-z_]+)["']|error_(?:frame|response)\((?:\d+, )?["']([a-z_]+)["']"""
    )
    for path in (REPO / "node").rglob("*.py"):
        for match in spelled.finditer(path.read_text()):
            codes.add(match.group(1) or match.group(2))
    return codes


def test_every_error_code_is_in_the_protocol() -> None:
    codes = error_codes()
    assert {"not_member", "request_timeout", "invalid_frame", "upgrade_required"} <= codes
    text = PROTOCOL.read_text()
    assert not [c for c in sorted(codes) if f"`{c}`" not in text], "codes missing in PROTOCOL.md"


def test_every_route_is_in_the_protocol() -> None:
    text = PROTOCOL.read_text()
    routes = [(e.method, e.path) for e in ENDPOINTS] + [("GET", WS_PATH)]
    missing = [
        f"{method} {path}"
        for method, path in routes
        if not re.search(re.escape(f"{method} {path}") + r"(?![\w/{-])", text)
    ]
    assert not missing, f"routes missing in PROTOCOL.md: {missing}"
    for path in (OPENAPI_PATH, "/metrics", "/docs", "/healthz", "/sw.js"):
        assert f"`{path}`" in text, path


def test_every_client_frame_is_in_the_protocol() -> None:
    union = typing.get_args(typing.get_args(ClientFrame)[0])
    kinds = [typing.get_args(frame.model_fields["type"].annotation)[0] for frame in union]
    assert "send" in kinds
    text = PROTOCOL.read_text()
    missing = [kind for kind in kinds if f'{{"type":"{kind}"' not in text]
    assert not missing, f"client frames missing in PROTOCOL.md: {missing}"


def node_parts() -> set[str]:
    """The names `/healthz` can give for parts of the node: its supervised loops."""
    named = re.compile(r"""\(\s*["']([a-z-]+)["'],\s*self\.""")
    found = set(named.findall(inspect.getsource(assembly.NodeRuntime.loops)))
    found |= set(named.findall(inspect.getsource(parts.Push.loops)))
    started = re.compile(r"""supervisor\.start\(\s*["']([a-z-]+)["']""")
    found |= set(started.findall((REPO / "node" / "app.py").read_text()))
    return found


@pytest.mark.parametrize("page", [PROTOCOL, OPERATIONS])
def test_every_part_healthz_can_name_is_documented(page: Path) -> None:
    names = node_parts()
    assert {"commits", "push", "embedded"} <= names
    text = page.read_text()
    assert not [n for n in sorted(names) if f"`{n}`" not in text], page.name


def test_every_metric_is_in_the_operations_guide() -> None:
    text = OPERATIONS.read_text()
    names = [m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert "messenger_connections" in names
    assert not [n for n in names if f"`{n}" not in text], "metrics missing in OPERATIONS.md"


MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HTML_SOURCE = re.compile(r"""<img[^>]*\ssrc=["']([^"']+)["']""")
PAGES = sorted(
    str(p.relative_to(REPO)) for p in [README, *REPO.glob("docs/*.md"), *REPO.glob("loadtest/*.md")]
)


@pytest.mark.parametrize("page", PAGES)
def test_the_docs_link_only_to_files_a_clone_has(page: str) -> None:
    path = REPO / page
    text = path.read_text()
    if not page.startswith("loadtest/"):
        assert "../shared" not in text
    targets = MARKDOWN_LINK.findall(text) + HTML_SOURCE.findall(text)
    for target in targets:
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.is_relative_to(REPO), (page, target)
        assert linked.exists(), (page, target)
        if anchor and linked.suffix == ".md":
            assert anchor in headings(linked), (page, target)


def headings(page: Path) -> set[str]:
    """The anchors GitHub makes of a page's headings: lower case, punctuation dropped, spaces
    to hyphens."""
    titles = re.findall(r"^#{1,6} +(.+?) *$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}
