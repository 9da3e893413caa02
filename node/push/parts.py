"""Web Push built together, for `node.assembly` (no I/O here)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from node.cluster.connection import RedisClient
from node.cluster.liveness import ClusterView
from node.config import Settings
from node.push.coalescing import LateMessages
from node.push.notifier import PushNotifier
from node.push.sender import PushSender
from node.push.subscriptions import PushFlags, PushSubscriptions
from node.push.vapid import VapidKey
from node.storage.push import PushStore


@dataclass(slots=True, frozen=True)
class Push:
    notifier: PushNotifier  # the fan-out's `PushSink`
    subscriptions: PushSubscriptions  # for the REST endpoints
    flags: PushFlags

    def loops(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [("push", self.notifier.run), ("push-flags", self.flags.run)]


def build_push(
    settings: Settings,
    incarnation: str,
    store: PushStore,
    redis: RedisClient,
    view: ClusterView,
    vapid: VapidKey,
) -> Push:
    flags = PushFlags(redis, store)
    sender = PushSender(vapid, ca_file=settings.push_ca_file)
    late = LateMessages(redis, incarnation, view, window=settings.push_coalesce)
    notifier = PushNotifier(
        store,
        flags,
        sender,
        late,
        window=settings.push_coalesce,
        include_text=settings.push_include_text,
    )
    subscriptions = PushSubscriptions(
        store, flags, public_key=vapid.public_key, allowed_hosts=settings.push_allowed_hosts
    )
    return Push(notifier=notifier, subscriptions=subscriptions, flags=flags)
