"""Browser fixtures: one headless Debian Chromium per session (driven by Playwright), a fresh
browser context per person, and a check after every test that no page raised an error or broke
the Content-Security-Policy.

Chromium comes from Debian (`./dev test` installs it with apt-get where it can); Playwright's own
browser download is never used. Without Chromium these tests are skipped locally, and fail in CI
(`CI` set, as `.ci/run` does).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from playwright.async_api import async_playwright, expect

from tests.browser.people import Person

CHROMIUM = os.environ.get("MESSENGER_TEST_CHROMIUM", "/usr/bin/chromium")
# Without these Chromium calls Google's hosts at start (refused here) and needs a sandbox that
# does not run as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 800}


def _expected(problem: str) -> bool:
    return "net::ERR_INTERNET_DISCONNECTED" in problem  # a test took the browser offline


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests need {reason} in CI (./dev test installs it with apt-get)")
    pytest.skip(f"{reason} is not installed")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which(CHROMIUM)
    if path is None:
        _unavailable(f"Chromium ({CHROMIUM})")
    return str(path)


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    # presence "offline" may take up to 5 s by the contract; a loaded CI machine needs room
    expect.set_options(timeout=12_000)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def person(browser: Any) -> AsyncIterator[Callable[..., Any]]:
    """`await person(base_url, phone=False)`: a new person in a browser context of their own
    (own storage, so own tokens and device id) with one page on `base_url`. After the test every
    page must have logged no error and no CSP violation."""
    people: list[Person] = []

    async def make(base_url: str, *, phone: bool = False, name: str | None = None) -> Person:
        context = await browser.new_context(
            viewport=PHONE if phone else DESKTOP, device_scale_factor=1, base_url=base_url
        )
        who = Person(context, base_url.rstrip("/"), name)
        await who.open()
        people.append(who)
        return who

    yield make
    problems = []
    for who in people:
        problems += [
            f"{who.username}: {p}"
            for p in who.problems
            if not _expected(p) and not any(text in p for text in who.allowed)
        ]
        await who.context.close()
    assert not problems, problems
