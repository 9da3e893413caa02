"""A person at a browser: the web client driven the way a user drives it (labels and roles,
keyboard where it matters), waiting on what the page shows, never on time."""

from __future__ import annotations

import re
import uuid
from typing import Any

from playwright.async_api import Locator, Page, expect

from tests.support import PASSWORD, Account


class Person:
    def __init__(self, context: Any, base_url: str, name: str | None) -> None:
        self.context = context
        self.base_url = base_url
        self.username = name or f"u{uuid.uuid4().hex[:9]}"
        self.problems: list[str] = []
        self.allowed: list[str] = []
        self.page: Page

    async def open(self) -> Page:
        """A new page (tab) of this person's browser on the client."""
        page = await self.context.new_page()
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)
        await page.goto(self.base_url + "/")
        self.page = page
        return page

    def allow(self, text: str) -> None:
        """Console errors containing `text` are expected in this test."""
        self.allowed.append(text)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            where = message.location.get("url", "")
            self.problems.append(f"console {message.type}: {message.text} @ {where}")

    # --- signing in ------------------------------------------------------------------------------

    async def sign_up(self) -> None:
        page = self.page
        await page.get_by_role("tab", name="Create account").click()
        await page.get_by_label("Username").fill(self.username)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_label("Password").press("Enter")  # the keyboard submits the form
        await self.expect_signed_in()

    async def sign_in(self) -> None:
        page = self.page
        await page.get_by_label("Username").fill(self.username)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await self.expect_signed_in()

    async def expect_signed_in(self) -> None:
        await expect(self.page.locator("#me-name")).to_have_text(self.username)

    # --- chats -----------------------------------------------------------------------------------

    def chat_link(self, name: str) -> Locator:
        """The chat's entry in the list (found also while the list is hidden, on a phone)."""
        exactly = re.compile(rf"^{re.escape(name)}$")
        name_is = self.page.locator(".chat-name").filter(has_text=exactly)
        return self.page.locator("#chat-list a").filter(has=name_is)

    async def start_direct(self, other: Person | Account) -> None:
        page = self.page
        await page.get_by_role("button", name="New chat").click()
        await page.get_by_label("Find people").fill(other.username[:5])
        await page.get_by_role("button", name=f"Message {other.username}").click()
        await expect(page.locator("#chat-title")).to_have_text(other.username)

    async def open_chat(self, name: str) -> None:
        await self.chat_link(name).click()
        await expect(self.page.locator("#chat-title")).to_have_text(name)

    @property
    def composer(self) -> Locator:
        return self.page.get_by_role("textbox", name="Message", exact=True)

    async def send(self, text: str) -> None:
        await self.composer.fill(text)
        await self.composer.press("Enter")

    def messages(self) -> Locator:
        return self.page.locator("#message-list .msg")

    def message(self, text: str) -> Locator:
        return self.page.locator("#message-list .msg").filter(has_text=text)

    async def storage(self, key: str) -> Any:
        return await self.page.evaluate("(k) => JSON.parse(localStorage.getItem(k))", key)
