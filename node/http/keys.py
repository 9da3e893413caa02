"""Typed application keys: the resources handlers may reach, created in `node.app`."""

from __future__ import annotations

from aiohttp import web

from node.config import Settings
from node.http.ws.hub import DeviceHub
from node.media.service import MediaService
from node.push.subscriptions import PushSubscriptions
from node.services.auth import AuthService
from node.services.chats import ChatService
from node.services.health import HealthService
from node.services.messages import MessageService
from node.services.presence import PresenceService
from node.services.users import UserService

SETTINGS = web.AppKey("settings", Settings)
AUTH = web.AppKey("auth", AuthService)
USERS = web.AppKey("users", UserService)
CHATS = web.AppKey("chats", ChatService)
MESSAGES = web.AppKey("messages", MessageService)
PRESENCE = web.AppKey("presence", PresenceService)
HEALTH = web.AppKey("health", HealthService)
DEVICES = web.AppKey("devices", DeviceHub)
PUSH = web.AppKey("push", PushSubscriptions)
MEDIA = web.AppKey("media", MediaService)
