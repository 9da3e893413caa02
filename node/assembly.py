"""The node's object graph, built in one place in dependency order (no I/O here).

Each object is complete when constructed: what it needs is passed in, nothing is wired
afterwards. Read top to bottom, this is the architecture:

    storage ─ group commit, cursor writer
    Redis (one, or a Redis Cluster) ─ cluster view (dead nodes, from membership)
    fan-out script ─ outbound queue;  presence (registrations batched);  mailboxes;  publisher
    local user actors ─ delivery (this node in-process, other nodes through outbound)
                      ─ presence announcer (changes in batches per interval, snapshots)
    directory (leases) ─ chat actors ─ placement (local or remote) ─ forwarder (remote requests)
    dispatcher (envelopes from other nodes) ─ inbox subscriber;  recovery ─ membership
    device sync ─ device hub (the WebSocket edge)
    push (subscriptions, the notifier the fan-out hands owed pushes to)
    media: catalog, blob stores, image workers ─ media service;  cleanup of unattached uploads

`NodeRuntime.loops()` lists the long-lived loops the supervisor runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from node.actors.chat import ChatActor
from node.actors.local_users import LocalUsers
from node.actors.ports import Handback
from node.actors.runtime import ActorRegistry
from node.actors.user import UserActor
from node.cluster.connection import RedisBackend
from node.cluster.delivery import Delivery
from node.cluster.directory import Directory
from node.cluster.dispatch import Dispatcher
from node.cluster.fanout import Fanout
from node.cluster.forwarding import Forwarder
from node.cluster.identity import NodeIdentity
from node.cluster.liveness import ClusterView
from node.cluster.mailbox import Mailboxes
from node.cluster.membership import Membership
from node.cluster.outbound import Outbound
from node.cluster.owners import RemoteOwners
from node.cluster.placement import ChatPlacement
from node.cluster.presence import Presence
from node.cluster.presence_fanout import PresenceAnnouncer
from node.cluster.recovery import Recovery
from node.cluster.registrations import PresenceRegistrations
from node.cluster.transport import InboxSubscriber, Publisher
from node.config import Settings
from node.http.ws.hub import DeviceHub
from node.http.ws.session import SessionDeps
from node.media.blobs import BlobStores
from node.media.catalog import MediaCatalog
from node.media.cleanup import MediaCleanup
from node.media.images import ImageProcessor
from node.media.service import MediaService
from node.push.parts import Push, build_push
from node.push.vapid import VapidKey
from node.services.device_sync import DeviceSync
from node.storage import Storage
from node.storage.cursor_writer import CursorWriter
from node.storage.group_commit import CommitPipeline
from node.storage.push import PushStore


@dataclass(slots=True)
class NodeRuntime:
    """What a running node owns (for the app, metrics and tests)."""

    settings: Settings
    identity: NodeIdentity
    storage: Storage
    redis: RedisBackend
    committer: CommitPipeline
    cursors: CursorWriter
    outbound: Outbound
    presence: PresenceRegistrations
    announcer: PresenceAnnouncer
    chats: ActorRegistry
    users: ActorRegistry
    local_users: LocalUsers
    directory: Directory
    placement: ChatPlacement
    forwarder: Forwarder
    subscriber: InboxSubscriber
    membership: Membership
    hub: DeviceHub
    push: Push
    media: MediaService
    media_cleanup: MediaCleanup

    def loops(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """The node's long-lived loops, by part name (as `/healthz` names them)."""
        return [
            ("membership", self.membership.run),
            ("leases", self.directory.run),
            ("inbox", self.subscriber.run),
            ("commits", self.committer.run),
            ("acks", self.cursors.run),
            ("outbound", self.outbound.run),
            ("presence", self.presence.run),
            ("presence-batches", self.announcer.run),
            ("rerouting", self.placement.run),
            ("replies", self.forwarder.run),
            *self.push.loops(),
            ("media-cleanup", self.media_cleanup.run),
        ]


def assemble(
    settings: Settings,
    identity: NodeIdentity,
    storage: Storage,
    redis: RedisBackend,
    pubsub_redis: RedisBackend,
    vapid: VapidKey,
    blobs: BlobStores,
    heartbeat_redis: RedisBackend | None = None,
) -> NodeRuntime:
    committer = CommitPipeline(storage.messages, timeout=settings.commit_timeout)
    cursors = CursorWriter(storage.cursors, interval=settings.ack_flush_interval)
    view = ClusterView()  # the dead nodes, refreshed by membership's heartbeats
    fanout = Fanout(
        redis,
        identity.incarnation,
        view,
        mailbox_max=settings.mailbox_max,
        mailbox_ttl=settings.mailbox_ttl,
        push_window=settings.push_coalesce,
    )
    push = build_push(
        settings, identity.incarnation, PushStore(storage.pool), redis.client, view, vapid
    )
    outbound = Outbound(fanout, push=push.notifier)
    presence = PresenceRegistrations(Presence(redis, identity.incarnation, view))
    publisher = Publisher(redis)

    users = ActorRegistry("users")
    local_users = LocalUsers(users)
    delivery = Delivery(identity, local_users, outbound)
    announcer = PresenceAnnouncer(
        identity,
        storage.chats,
        presence,
        local_users,
        outbound,
        interval=settings.presence_interval,
        group_limit=settings.presence_group_limit,
    )

    def user_actor(user_id: int) -> UserActor:
        return UserActor(
            user_id,
            presence=presence,
            feed=announcer,
            delivery=delivery,
            mailbox_size=settings.user_mailbox_size,
            idle_timeout=settings.actor_idle_timeout,
            presence_grace=settings.presence_grace,
        )

    directory = Directory(redis, identity, view, ttl=settings.lease_ttl)

    def chat_actor(chat_id: int, handback: Handback) -> ChatActor:
        return ChatActor(
            chat_id,
            storage=storage,
            committer=committer,
            ownership=directory,
            delivery=delivery,
            handback=handback,
            node=identity.incarnation,
            mailbox_size=settings.chat_mailbox_size,
            idle_timeout=settings.actor_idle_timeout,
        )

    chats = ActorRegistry("chats")
    owners = RemoteOwners(view, ttl=settings.lease_ttl)
    forwarder = Forwarder(identity, publisher, owners, timeout=settings.forward_timeout)
    placement = ChatPlacement(
        identity,
        directory=directory,
        chats=chats,
        owners=owners,
        forwarder=forwarder,
        chat_actor=chat_actor,
    )
    dispatcher = Dispatcher(identity, users=local_users, placement=placement, forwarder=forwarder)
    recovery = Recovery(directory, local_users, also=[push.flags.restore])
    subscriber = InboxSubscriber(
        pubsub_redis,
        identity,
        on_envelope=dispatcher.on_envelope,
        on_resubscribed=recovery.recover,
    )
    membership = Membership(
        heartbeat_redis or redis,
        identity,
        view,
        interval=settings.heartbeat_interval,
        on_lost_memory=recovery.recover,
        # beats from a thread of their own: a busy event loop must not make the node look dead
        beat_backend=lambda: RedisBackend.connect(
            settings.redis_url or "", timeout=settings.redis_timeout, pool_size=2
        ),
    )
    sync = DeviceSync(storage, Mailboxes(redis.client), cursors)
    session_deps = SessionDeps(
        sync=sync,
        node_id=settings.node_id,
        backlog_limit=settings.backlog_limit,
        outbox_limit=settings.outbox_limit,
        abort_after=settings.close_grace,
    )
    catalog = MediaCatalog(storage.pool)
    media = MediaService(
        catalog,
        blobs,
        ImageProcessor(max_pixels=settings.media_max_pixels, workers=settings.media_image_workers),
        max_bytes=settings.media_max_bytes,
        read_timeout=settings.media_read_timeout,
        upload_timeout=settings.media_upload_timeout,
    )
    return NodeRuntime(
        settings=settings,
        identity=identity,
        storage=storage,
        redis=redis,
        committer=committer,
        cursors=cursors,
        outbound=outbound,
        presence=presence,
        announcer=announcer,
        chats=chats,
        users=users,
        local_users=local_users,
        directory=directory,
        placement=placement,
        forwarder=forwarder,
        subscriber=subscriber,
        membership=membership,
        hub=DeviceHub(session_deps, local_users, user_actor),
        push=push,
        media=media,
        media_cleanup=MediaCleanup(catalog, blobs, age=settings.media_cleanup_age),
    )
