"""The web client in a real browser (Chromium via Playwright) against real nodes: people sign up,
chat, see each other type and read, reload, go offline and come back, on one node and across a
two-node cluster."""

from __future__ import annotations

import asyncio
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import expect

from node.push.payload import push_payload
from node.storage.push import PushedMessage
from tests.browser.people import Person
from tests.support import Account, Api, WsClient

pytestmark = pytest.mark.browser


def base(server: TestServer) -> str:
    return str(server.make_url(""))


async def two_people(
    person: Callable[..., Any], first_url: str, second_url: str | None = None
) -> tuple[Person, Person]:
    """Alice on a desktop and Bob on a phone, both signed up, Alice has opened their chat."""
    alice = await person(first_url)
    bob = await person(second_url or first_url, phone=True)
    await alice.sign_up()
    await bob.sign_up()
    await alice.start_direct(bob)
    return alice, bob


async def test_two_people_chat_see_typing_and_read_marks_and_keep_history_on_reload(
    node: TestServer, person: Callable[..., Any]
) -> None:
    alice, bob = await two_people(person, base(node))

    await alice.send("Hi Bob, lunch today?")
    mine = alice.message("Hi Bob, lunch today?")
    await expect(mine.get_by_role("img", name="Sent")).to_be_visible()

    # Bob's list shows the new chat with its last message and one unread
    link = bob.chat_link(alice.username)
    await expect(link).to_contain_text("Hi Bob, lunch today?")
    await expect(link).to_have_attribute("aria-label", re.compile("1 unread"))
    await bob.open_chat(alice.username)
    await expect(bob.message("Hi Bob, lunch today?")).to_have_count(1)
    await expect(link).not_to_have_attribute("aria-label", re.compile("unread"))

    # Alice sees that Bob read it, then sees him type
    await expect(alice.page.locator(".seen-label")).to_have_text("Seen")
    await expect(mine.get_by_role("img", name="Seen")).to_be_visible()
    await bob.composer.fill("Sure")
    await expect(alice.page.locator("#typing")).to_have_text(f"{bob.username} is typing…")
    await expect(alice.page.locator("#chat-subtitle")).to_have_text("typing…")
    await bob.composer.fill("Sure, 12:30 at the usual place?")
    await bob.composer.press("Enter")
    await expect(alice.message("12:30 at the usual place")).to_have_count(1)
    await expect(alice.page.locator("#typing")).to_have_text("")
    await expect(bob.page.locator(".seen-label")).to_have_text("Seen")

    # both reload: signed in still, back in the open chat, history from the node, in order,
    # nothing twice; the browser keeps its device id
    await expect(bob.page.locator("#me-status")).to_have_text("Online")
    device = await bob.page.evaluate("() => messenger.socket.deviceId")
    for who, other in ((alice, bob), (bob, alice)):
        await who.page.reload()
        await who.expect_signed_in()
        await expect(who.page.locator("#chat-title")).to_have_text(other.username)
    await expect(bob.page.locator("#me-status")).to_have_text("Online")
    for who in (alice, bob):
        await expect(who.messages()).to_have_count(2)
        await expect(who.messages().nth(0)).to_contain_text("lunch today?")
        await expect(who.messages().nth(1)).to_contain_text("12:30 at the usual place")
    assert await bob.page.evaluate("() => messenger.socket.deviceId") == device
    # and the conversation goes on after the reload, also in a second tab of Bob's browser
    # (a device id of its own, so the two tabs do not push each other off the node)
    first_tab = bob.page
    second_tab = await bob.open()
    await expect(second_tab.locator("#me-status")).to_have_text("Online")
    assert await second_tab.evaluate("() => messenger.socket.deviceId") != device
    await alice.send("Perfect")
    in_first_tab = first_tab.locator("#message-list .msg").filter(has_text="Perfect")
    await expect(in_first_tab).to_have_count(1)
    await expect(second_tab.locator("#chat-list a").first).to_contain_text("Perfect")
    await expect(first_tab.locator("#me-status")).to_have_text("Online")


async def test_people_on_two_nodes_of_a_cluster_chat_and_see_presence(
    node_api: Callable[..., Any], person: Callable[..., Any]
) -> None:
    first, _ = await node_api()
    second, _ = await node_api()
    alice, bob = await two_people(person, base(first), base(second))

    await alice.send("Hello from node one")
    await bob.open_chat(alice.username)
    await expect(bob.message("Hello from node one")).to_have_count(1)
    await bob.send("Hello from node two")
    await expect(alice.message("Hello from node two")).to_have_count(1)
    await expect(alice.page.locator(".seen-label")).to_have_text("Seen")

    # presence crosses nodes: Alice reconnects and learns Bob is online; Bob leaves, she sees it
    await alice.page.reload()
    await alice.open_chat(bob.username)
    await expect(alice.page.locator("#chat-subtitle")).to_have_text("online")
    await expect(alice.chat_link(bob.username).locator(".dot.on")).to_be_visible()
    await bob.page.close()
    await expect(alice.page.locator("#chat-subtitle")).to_have_text("offline")
    await expect(alice.chat_link(bob.username).locator(".dot.on")).to_have_count(0)


async def test_a_big_groups_presence_is_asked_for_when_it_is_opened(
    node_api: Callable[..., Any], person: Callable[..., Any]
) -> None:
    # above the group limit the node pushes no presence about members: the client asks
    server, api = await node_api(presence_group_limit=2)
    owner, bob, carol = await api.account(), await api.account(), await api.account()
    await api.group(owner, [bob, carol], title="Big room")
    bobs, carols = await api.ws(bob), await api.ws(carol)

    async def registered(asker: WsClient, user: Account, online: bool) -> None:
        """Wait until the node's registry says so (a query by another member answers it)."""
        while True:
            await asker.ws.send_json({"type": "presence_query", "user_ids": [user.id]})
            answer = await asker.next("presence", where=lambda f: "users" in f)
            if answer["users"] == [{"user_id": user.id, "online": online}]:
                return

    await registered(carols, bob, True)
    await registered(bobs, carol, True)
    alice = await person(base(server), name=owner.username)
    await alice.sign_in()
    await alice.open_chat("Big room")
    subtitle = alice.page.locator("#chat-subtitle")
    await expect(subtitle).to_have_text("3 members · 2 online")

    # a new connection starts presence afresh: the open group's is asked for again
    await alice.context.set_offline(True)
    await expect(alice.page.locator("#banner")).to_be_visible()
    await carols.close()
    await registered(bobs, carol, False)
    await alice.context.set_offline(False)
    await expect(alice.page.locator("#banner")).to_be_hidden()
    await expect(subtitle).to_have_text("3 members · 1 online")


async def test_offline_and_back_gets_what_was_missed_exactly_once(
    node: TestServer, person: Callable[..., Any]
) -> None:
    alice, bob = await two_people(person, base(node))
    await alice.send("before")
    await bob.open_chat(alice.username)
    await expect(bob.message("before")).to_have_count(1)

    # the connection drops: a banner says so; what Alice sends meanwhile arrives once, in order
    await bob.context.set_offline(True)
    await expect(bob.page.get_by_role("status").filter(has_text="offline")).to_be_visible()
    for text in ("missed one", "missed two", "missed three"):
        await alice.send(text)
        await expect(alice.message(text).get_by_role("img", name="Sent")).to_be_visible()
    await bob.context.set_offline(False)
    await expect(bob.page.locator("#banner")).to_be_hidden()
    await expect(bob.messages()).to_have_count(4)
    for i, text in enumerate(("before", "missed one", "missed two", "missed three")):
        await expect(bob.messages().nth(i)).to_contain_text(text)

    # what Bob wrote while offline waits as pending and goes out when he is back
    await bob.context.set_offline(True)
    await expect(bob.page.locator("#banner")).to_be_visible()
    await bob.send("written offline")
    await expect(bob.message("written offline").get_by_role("img", name="Sending")).to_be_visible()
    await bob.context.set_offline(False)
    await expect(alice.message("written offline")).to_have_count(1)
    await expect(bob.message("written offline").get_by_role("img", name="Seen")).to_be_visible()

    # the page closed altogether: the next one gets the backlog once, the list counts it
    await bob.page.close()
    for text in ("while you were away", "and this too"):
        await alice.send(text)
        await expect(alice.message(text).get_by_role("img", name="Sent")).to_be_visible()
    page = await bob.open()
    await expect(bob.chat_link(alice.username)).to_have_attribute(
        "aria-label", re.compile("2 unread")
    )
    await bob.open_chat(alice.username)
    await expect(bob.messages()).to_have_count(7)
    await expect(bob.message("while you were away")).to_have_count(1)
    await expect(bob.message("and this too")).to_have_count(1)
    await expect(page).to_have_title("Messenger")  # nothing unread is left


async def test_a_backlog_cut_short_by_a_gap_is_read_over_rest(
    node_api: Callable[..., Any], person: Callable[..., Any]
) -> None:
    server, _ = await node_api(backlog_limit=2)
    alice, bob = await two_people(person, base(server))
    await alice.send("first")
    await bob.open_chat(alice.username)
    await expect(bob.message("first")).to_have_count(1)
    await bob.page.close()
    texts = [f"while away {i}" for i in range(1, 6)]
    for text in texts:
        await alice.send(text)
        await expect(alice.message(text).get_by_role("img", name="Sent")).to_be_visible()
    # the node sends only the newest 2 (seqs 5 and 6) and a `gap` before them (after 1, or 0 if
    # Bob's ack of "first" was not yet durable when he left): the client reads it over REST
    page = await bob.context.new_page()
    bob.page = page
    gap_range = re.compile(r"/messages\?after_seq=[01]&limit=\d+&before_seq=5$")
    async with page.expect_request(lambda r: bool(gap_range.search(r.url))) as request:
        await page.goto(base(server) + "/")
    assert (await (await request.value).response()).status == 200  # type: ignore[union-attr]
    await bob.open_chat(alice.username)
    await expect(bob.messages()).to_have_count(6)
    for i, text in enumerate(["first", *texts]):
        await expect(bob.messages().nth(i)).to_contain_text(text)


async def test_group_chat_and_scroll_back_through_history(
    node: TestServer, api: Api, person: Callable[..., Any]
) -> None:
    alice = await person(base(node))
    await alice.sign_up()
    bob, carol = await api.account(), await api.account()

    page = alice.page
    await page.get_by_role("button", name="New chat").click()
    await page.get_by_role("tab", name="New group").click()
    await page.get_by_label("Group name").fill("Book club")
    for other in (bob, carol):
        await page.get_by_label("Find people").fill(other.username)
        await page.get_by_role("button", name=f"Add {other.username}").click()
    await page.get_by_role("button", name="Create group").click()
    await expect(page.locator("#chat-title")).to_have_text("Book club")
    await expect(page.locator("#chat-subtitle")).to_contain_text("3 members")
    await expect(page.locator("#history-status")).to_have_text("No messages yet. Say hello!")

    # 120 messages from Bob arrive live; after a reload the newest page shows, and older ones
    # load while scrolling up
    chats = await api.call("GET", "/api/v1/chats", bob.token)
    chat_id = chats.body["items"][0]["id"]
    ws = await api.ws(bob)
    for i in range(1, 121):  # one burst, in order
        await ws.ws.send_json(
            {"type": "send", "chat_id": chat_id, "client_msg_id": f"l{i}", "text": f"line {i:03}"}
        )
    await ws.next("sent", where=lambda f: f["client_msg_id"] == "l120")
    await expect(alice.message("line 120")).to_have_count(1)
    await expect(alice.chat_link("Book club")).to_contain_text(f"{bob.username}: line 120")
    await page.reload()
    await expect(alice.message("line 120")).to_have_count(1)
    shown = await alice.messages().count()
    assert shown < 120
    while shown < 120:
        await page.locator("#messages").evaluate("(el) => el.scrollTo(0, 0)")
        await page.wait_for_function(
            "(n) => document.querySelectorAll('#message-list .msg').length > n", arg=shown
        )
        shown = await alice.messages().count()
    await expect(page.locator("#history-status")).to_have_text(
        "This is the beginning of the conversation."
    )
    await expect(alice.messages()).to_have_count(120)
    await expect(alice.messages().first).to_contain_text("line 001")
    await expect(alice.messages().first.locator(".sender")).to_have_text(bob.username)

    # the keyboard alone: from the search box down the list into a chat, type and send
    await page.get_by_label("Search chats").focus()
    await page.keyboard.press("ArrowDown")
    await expect(alice.chat_link("Book club")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(alice.composer).to_be_focused()
    await page.keyboard.type("typed without a mouse")
    await page.keyboard.press("Enter")
    await expect(
        alice.message("typed without a mouse").get_by_role("img", name="Sent")
    ).to_be_visible()


async def test_access_tokens_are_refreshed_quietly_before_expiry_and_after_a_401(
    node_api: Callable[..., Any], person: Callable[..., Any]
) -> None:
    server, api = await node_api(access_token_ttl=10)  # the shortest lifetime settings allow
    alice = await person(base(server))
    await alice.sign_up()
    first = await alice.storage("mn.tokens")
    # shortly before the 10 s are up the client swaps its tokens, unasked (awaited in the page)
    await alice.page.wait_for_function(
        "(old) => JSON.parse(localStorage.getItem('mn.tokens')).access_token !== old",
        arg=first["access_token"],
        timeout=15_000,
    )
    renewed = await alice.storage("mn.tokens")
    assert renewed["refresh_token"] != first["refresh_token"]  # rotated
    assert renewed["expires_at"] > first["expires_at"]
    await expect(alice.page.locator("#me-status")).to_have_text("Online")
    await alice.page.get_by_role("button", name="New chat").click()
    await alice.page.get_by_label("Find people").fill("nobody-by-that-name")
    await expect(alice.page.get_by_text("Nobody by that name.")).to_be_visible()  # REST works
    await alice.page.keyboard.press("Escape")

    alice.allow("status of 401")  # the refused token's answer, before the quiet refresh
    first = await alice.storage("mn.tokens")
    # the stored access token goes bad (as if expired): the next call is answered 401
    await alice.page.evaluate(
        "() => { const t = JSON.parse(localStorage.getItem('mn.tokens'));"
        " t.access_token = 'not-a-token'; localStorage.setItem('mn.tokens', JSON.stringify(t)); }"
    )
    await alice.page.reload()
    await alice.expect_signed_in()
    await expect(alice.page.locator("#me-status")).to_have_text("Online")
    now = await alice.storage("mn.tokens")
    assert now["access_token"] not in (first["access_token"], "not-a-token")
    assert now["refresh_token"] != first["refresh_token"]  # rotated

    # signing out ends the session here and on the node; the form is back
    refresh_token = (await alice.storage("mn.tokens"))["refresh_token"]
    await alice.page.get_by_role("button", name="Menu").click()
    await alice.page.get_by_role("menuitem", name="Sign out").click()
    await expect(alice.page.get_by_role("button", name="Sign in")).to_be_visible()
    assert await alice.storage("mn.tokens") is None
    left = await alice.page.evaluate("() => Object.keys(localStorage).sort()")
    assert left == ["mn.device"], left  # nothing of the user stays behind
    spent = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": refresh_token})
    assert spent.status == 401
    await alice.sign_in()


def _png(width: int, height: int) -> bytes:
    """A small valid PNG (an orange square), made here rather than shipped."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + b"\xf9\x73\x16" * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = zlib.compress(row * height)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


async def test_an_image_is_sent_with_progress_and_shown_as_a_preview(
    node: TestServer, api: Api, person: Callable[..., Any]
) -> None:
    alice, bob = await two_people(person, base(node))
    await expect(alice.page.get_by_role("button", name="Attach a file")).to_be_visible()
    await alice.page.locator("#file-input").set_input_files(
        {"name": "sunset.png", "mimeType": "image/png", "buffer": _png(320, 200)}
    )
    await expect(alice.page.locator("#tray")).to_contain_text("sunset.png")
    send = alice.page.get_by_role("button", name="Send")
    await expect(send).to_be_enabled()  # the upload finished
    await alice.composer.fill("the view from here")
    await send.click()

    await bob.open_chat(alice.username)
    bubble = bob.message("the view from here")
    image = bubble.get_by_role("button", name="Open image").locator("img")
    await expect(image).to_have_attribute("src", re.compile("^blob:"))
    await bob.page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=await image.element_handle()
    )
    await expect(bob.chat_link(alice.username)).to_contain_text("the view from here")


async def test_attachments_and_notifications_are_offered(
    node: TestServer, api: Api, person: Callable[..., Any]
) -> None:
    someone = await api.account()
    alice = await person(base(node))
    await alice.sign_up()
    await alice.page.get_by_role("button", name="Menu").click()
    await expect(
        alice.page.get_by_role("menuitem", name=re.compile("notifications"))
    ).to_be_visible()
    await alice.page.keyboard.press("Escape")
    await alice.start_direct(someone)
    await expect(alice.page.locator("#attach-btn")).to_be_visible()


async def test_the_service_worker_controls_the_site_and_shows_a_push(
    node: TestServer, person: Callable[..., Any]
) -> None:
    alice = await person(base(node))
    await alice.context.grant_permissions(["notifications"])
    scope = await alice.page.evaluate("async () => (await navigator.serviceWorker.ready).scope")
    assert scope == base(node).rstrip("/") + "/"
    # a push as the node sends one, delivered to the active worker through the DevTools protocol
    cdp = await alice.context.new_cdp_session(alice.page)
    active: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def versions(event: dict[str, Any]) -> None:
        for version in event["versions"]:
            if version["status"] == "activated" and not active.done():
                active.set_result(version["registrationId"])

    cdp.on("ServiceWorker.workerVersionUpdated", versions)
    await cdp.send("ServiceWorker.enable")
    registration_id = await asyncio.wait_for(active, 10)
    # pushes exactly as the node encodes them: a group message with its text, a direct one whose
    # text was cut to fit, and one without text (the node's default)
    group = PushedMessage(
        message_id=99,
        chat_id=42,
        chat_kind="group",
        chat_title="Book club",
        seq=12,
        sender_id=3,
        sender_username="bob",
        text="see you",
    )
    direct = replace(
        group, message_id=100, chat_id=43, chat_kind="direct", chat_title=None, text="x" * 5000
    )
    textless = replace(group, message_id=101, chat_id=44)
    for message, include_text in ((group, True), (direct, True), (textless, False)):
        payload = push_payload(message, include_text=include_text)
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": base(node).rstrip("/"),
                "registrationId": registration_id,
                "data": payload.decode(),
            },
        )
    # the worker shows them asynchronously, and there is no event for that: look until all three
    # are there (at most 30 s: on a loaded machine the worker can take seconds)
    shown_when_there = """async () => {
      const registration = await navigator.serviceWorker.ready;
      const until = Date.now() + 30000;
      for (;;) {
        const shown = await registration.getNotifications();
        if (shown.length >= 3 || Date.now() > until) {
          return shown.map((n) => [n.title, n.body, n.data.url]);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }"""
    shown = sorted(await alice.page.evaluate(shown_when_there), key=lambda n: n[2])
    cut = orjson.loads(push_payload(direct, include_text=True))
    assert cut["text_truncated"] is True
    assert shown == [
        ["bob in Book club", "see you", "/#/chat/42"],
        ["bob", cut["text"] + "…", "/#/chat/43"],
        ["bob in Book club", "New message", "/#/chat/44"],
    ]


async def test_the_store_drops_repeats_and_counts_unread_once(
    node: TestServer, person: Callable[..., Any]
) -> None:
    """The client's delivery rules on their own, in the browser: a (chat_id, seq) seen twice is
    kept once, and a backlog message the node already counted is not counted again."""
    alice = await person(base(node))
    result = await alice.page.evaluate(
        """async () => {
          const { Store } = await import('/static/js/store.js');
          const mem = new Map();
          const storage = { getItem: (k) => mem.get(k) ?? null, setItem: (k, v) => mem.set(k, v) };
          const s = new Store({ id: '1', username: 'me' }, storage);
          s.setChatList([{ id: '7', kind: 'group', title: 'g', owner_id: '1', last_seq: 3,
                           read_seq: 1, unread_count: 2, created_at: '2024-01-01T00:00:00Z' }]);
          const m = (seq, sender) => ({ id: String(seq), chat_id: '7', seq, sender_id: sender,
              client_msg_id: 'c' + seq, text: 't' + seq, attachments: [],
              created_at: `2024-01-01T00:00:0${seq}Z` });
          const fresh = [m(2, '2'), m(3, '2'), m(3, '2'), m(4, '2'), m(4, '2'), m(5, '1')]
              .map((x) => s.addMessage(x));
          const chat = s.chats.get('7');
          const unread = chat.unread_count;
          const last = chat.last.seq;
          s.queue({ client_msg_id: 'c6', chat_id: '7', text: 'x', attachments: [] });
          const pendingBefore = s.pendingFor('7').length;
          s.addMessage({ ...m(6, '1'), client_msg_id: 'c6' });
          const exact = s.markRead('7', 4);
          s.applyPresence({ type: 'presence', users: [{ user_id: '2', online: true },
                                                     { user_id: '3', online: false }] });
          s.applyPresence({ type: 'presence', user_id: '3', online: true });
          return { fresh, unread, last,
                   seqs: s.visibleMessages(chat).map((x) => x.seq), pendingBefore,
                   pendingAfter: s.pendingFor('7').length, exact,
                   unreadAfterRead: chat.unread_count,
                   online: [s.isOnline('2'), s.isOnline('3'), s.isOnline('4')] };
        }"""
    )
    assert result == {
        "fresh": [True, True, False, True, False, True],
        "unread": 3,  # the node's 2 (seqs 2, 3) plus seq 4; seq 5 is mine
        "last": 5,
        "seqs": [2, 3, 4, 5, 6],
        "pendingBefore": 1,
        "pendingAfter": 0,
        "exact": True,
        "unreadAfterRead": 0,
        "online": [True, True, False],
    }


@pytest.fixture
def screenshots() -> Path:
    target = os.environ.get("MESSENGER_SCREENSHOTS")
    if not target:
        pytest.skip("set MESSENGER_SCREENSHOTS=<dir> to write screenshots")
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    return out


async def test_screenshots_for_the_readme(
    node: TestServer, api: Api, person: Callable[..., Any], screenshots: Path
) -> None:
    """Not a check: pictures of the client at phone and desktop widths, written only when
    `MESSENGER_SCREENSHOTS` names a directory (`docs/screenshots` for the README)."""
    out = screenshots
    phone = await person(base(node), phone=True, name="maria")
    desktop = await person(base(node), name="maria")
    await phone.page.screenshot(path=out / "sign-in-phone.png")
    await desktop.page.screenshot(path=out / "sign-in-desktop.png")
    await phone.sign_up()
    await desktop.sign_in()
    tom, ana, leo = [await api.account(n) for n in ("tom", "ana", "leo")]
    maria_id = await phone.page.evaluate("() => messenger.store.me.id")
    ws = {a.username: await api.ws(a, "shots") for a in (tom, ana, leo)}
    group = await api.call(
        "POST",
        "/api/v1/chats",
        ana.token,
        json={"kind": "group", "title": "Weekend trip", "member_ids": [maria_id, tom.id, leo.id]},
    )
    trip = group.body["id"]
    for who, text in ((ana, "Who is in for Saturday?"), (leo, "Me! Can we leave early?")):
        await api.send(who, trip, text)
    chat_with = {}
    for who in (leo, tom):
        r = await api.call(
            "POST", "/api/v1/chats", who.token, json={"kind": "direct", "user_id": maria_id}
        )
        chat_with[who.username] = r.body["id"]
    await api.send(leo, chat_with["leo"], "Sending you the slides tonight")
    await api.send(tom, chat_with["tom"], "Hey Maria! Are we still on for lunch tomorrow?")
    await desktop.open_chat("tom")
    lines = [
        (None, "Yes! 12:30 at the usual place?"),
        (tom, "Perfect. I will book a table by the window."),
        (tom, "Also: the photos from the hike came out great. Sending them later."),
        (None, "Can't wait to see them"),
    ]
    for who, text in lines:
        if who is None:
            await desktop.send(text)
            await expect(
                desktop.message(text).get_by_role("img", name=re.compile("Sent|Seen"))
            ).to_be_visible()
        else:
            await api.send(who, chat_with["tom"], text)
            await expect(desktop.message(text)).to_have_count(1)
    photo = await api.call(
        "POST",
        "/api/v1/media",
        tom.token,
        data=_landscape_png(),
        headers={"Content-Type": "image/png"},
    )
    assert photo.status == 201, photo
    caption = "From the top of the ridge"
    sent = await api.call(
        "POST",
        f"/api/v1/chats/{chat_with['tom']}/messages",
        tom.token,
        json={"client_msg_id": "photo-1", "text": caption, "attachments": [photo.body["id"]]},
    )
    assert sent.status == 201, sent
    await expect(desktop.message(caption).locator("img")).to_be_visible()
    seq = len(lines) + 2
    await ws["tom"].ws.send_json({"type": "read", "chat_id": chat_with["tom"], "seq": seq})
    await expect(desktop.page.locator(".seen-label")).to_have_text("Seen")
    await ws["tom"].ws.send_json({"type": "typing", "chat_id": chat_with["tom"]})
    await expect(desktop.page.locator("#typing")).to_have_text("tom is typing…")
    await desktop.page.screenshot(path=out / "chat-desktop.png")
    await phone.page.reload()  # a new connection: the node tells who is online
    await expect(phone.chat_link("leo").locator(".dot.on")).to_be_visible()
    await expect(phone.chat_link("Weekend trip")).to_contain_text("leo: Me! Can we leave early?")
    await phone.page.screenshot(path=out / "chats-phone.png")
    await phone.open_chat("tom")
    await expect(phone.page.locator(".seen-label")).to_have_text("Seen")
    await phone.page.screenshot(path=out / "chat-phone.png")


def _landscape_png() -> bytes:
    """A small picture for the screenshots: a sky over hills, drawn with Pillow."""
    from io import BytesIO

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (960, 600), (135, 185, 235))
    draw = ImageDraw.Draw(image)
    for y in range(600):  # the sky lightens towards the horizon
        shade = int(y / 600 * 60)
        draw.line([(0, y), (960, y)], fill=(120 + shade, 170 + shade, 230))
    draw.ellipse((700, 80, 800, 180), fill=(255, 230, 150))
    draw.polygon(
        [(0, 420), (260, 250), (520, 430), (760, 300), (960, 440), (960, 600), (0, 600)],
        fill=(70, 120, 80),
    )
    draw.polygon(
        [(0, 520), (300, 400), (640, 540), (960, 470), (960, 600), (0, 600)], fill=(50, 95, 60)
    )
    out = BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
