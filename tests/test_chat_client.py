"""The terminal chat client as a person uses it: a real `python -m node chat` process against a
real node process that is not there yet, then goes away and comes back."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import REPO, Account, Api, NodeProcess, free_port

pytestmark = pytest.mark.process


class Client:
    """A chat client process; its output collected line by line by a thread."""

    def __init__(self, base: str, user: str, peer: str, device: str = "terminal") -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node",
                "chat",
                "--url",
                base,
                "--user",
                user,
                "--password",
                f"{user}-password",
                "--to",
                peer,
                "--device",
                device,
            ],
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def expect(self, pattern: str, timeout: float = 30.0, after: int = 0) -> int:
        """Wait for a line (from index `after`) matching `pattern`; its index."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(after, len(self.lines)):
                if re.search(pattern, self.lines[index]):
                    return index
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the client's output:\n{self.output}")
            await asyncio.sleep(0.05)  # another process's output: nothing to await

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    async def quit(self) -> int:
        """Ctrl-D."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = await asyncio.to_thread(self.process.wait, 15)
        self._reader.join(5)
        return code

    def cleanup(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(*args: str) -> Client:
        client = Client(*args)
        made.append(client)
        return client

    yield make
    for client in made:
        client.cleanup()


@pytest.fixture
async def node_on(
    tmp_path: Path, database_url: str, redis_url: str
) -> AsyncIterator[Callable[[int], NodeProcess]]:
    """Start node processes on a given port over the test's database and Redis."""
    started: list[NodeProcess] = []

    def make(port: int) -> NodeProcess:
        env = {
            "MESSENGER_HOST": "127.0.0.1",
            "MESSENGER_PORT": str(port),
            "MESSENGER_DATA_DIR": str(tmp_path / "data"),
            "MESSENGER_DATABASE_URL": database_url,
            "MESSENGER_REDIS_URL": redis_url,
            "MESSENGER_JWT_SECRET": "chat-client-secret-0123456789",
            "MESSENGER_BCRYPT_ROUNDS": "4",
            "MESSENGER_LOG_FORMAT": "text",
        }
        node = NodeProcess(env, tmp_path / f"node-{len(started)}.log")
        started.append(node)
        return node.start()

    yield make
    for node in started:
        node.cleanup()


async def test_the_chat_client_waits_for_its_node_and_survives_a_restart(
    node_on: Callable[[int], NodeProcess], clients: Callable[..., Client]
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    alice = clients(base, "alice", "bob")
    await alice.expect(r"^\* waiting for the node at ")  # started before its node: says so

    node = node_on(port)
    await node.wait_healthy()
    async with aiohttp.ClientSession() as http:
        api = Api(http, base)
        bob = await api.account("bob", "bob-password")
        await alice.expect(r"^\* connected to the node at ")
        await alice.expect(r"^chatting with bob \(chat \d+\)")
        chat = await api.direct(bob, await _alice(api, bob))
        assert (await api.send(bob, chat, "hi alice")).status == 201
        await alice.expect(r"^\[1\] bob: hi alice$")
        await api.close()

    assert await node.terminate() == 0  # the node goes away...
    lost = await alice.expect(r"^\* lost the node at ")
    node = node_on(port)  # ...and comes back
    await node.wait_healthy()
    await alice.expect(r"^\* connected to the node at .* again$", after=lost)
    alice.type("are you there?")

    async with aiohttp.ClientSession() as http:
        api = Api(http, base)
        bob = await _login(api, "bob")
        phone = await api.ws(bob, "phone")
        got = await phone.messages(2, chat, timeout=30)
        assert [(m["seq"], m["text"]) for m in got] == [(1, "hi alice"), (2, "are you there?")]
        await alice.expect(r"^\[2\] alice: are you there\?$")

        # a second terminal of alice's starts with the chat's recent history
        laptop = clients(base, "alice", "bob", "laptop")
        start = await laptop.expect(r"^chatting with bob")
        await laptop.expect(r"^\[1\] bob: hi alice$", after=start)
        await laptop.expect(r"^\[2\] alice: are you there\?$", after=start)
        assert await laptop.quit() == 0
        await api.close()

    assert await alice.quit() == 0
    for client in (alice, laptop):
        assert "Traceback" not in client.output, client.output
        assert _no_repeats(client), client.output


async def _alice(api: Api, bob: Account) -> Account:
    """alice's account (the client made it), found by name."""
    r = await api.call("GET", "/api/v1/users", bob.token, params={"q": "alice"})
    (found,) = [u for u in r.body["items"] if u["username"] == "alice"]
    return Account(found["id"], "alice", "", "")


async def _login(api: Api, name: str) -> Account:
    r = await api.call(
        "POST", "/api/v1/auth/login", json={"username": name, "password": f"{name}-password"}
    )
    assert r.status == 200, r
    me = await api.call("GET", "/api/v1/users/me", r.body["access_token"])
    return Account(me.body["id"], name, r.body["access_token"], r.body["refresh_token"])


def _no_repeats(client: Client) -> bool:
    """Every message is shown once."""
    shown = [line for line in client.lines if re.match(r"^\[\d+\] ", line)]
    return len(shown) == len(set(shown))
