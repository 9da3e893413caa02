"""What a push says, as the service worker receives it (JSON, UTF-8):

    {"type": "message", "chat_id": "7", "chat_kind": "direct"|"group", "chat_title": null|"...",
     "message_id": "99", "seq": 12, "sender": {"id": "3", "username": "alice"},
     "text": "..."}            <- only with MESSENGER_PUSH_INCLUDE_TEXT, and maybe shortened

A push carries at most about 4 KB once encrypted (RFC 8291 records of 4096 bytes; push services
refuse more), so a long text is cut, on a character boundary, to keep the payload under
`MAX_PAYLOAD` bytes; `"text_truncated": true` says so.
"""

from __future__ import annotations

from typing import Any

from node.frames import dumps
from node.storage.push import PushedMessage

MAX_PAYLOAD = 3000


def push_payload(message: PushedMessage, *, include_text: bool) -> bytes:
    body: dict[str, Any] = {
        "type": "message",
        "chat_id": str(message.chat_id),
        "chat_kind": message.chat_kind,
        "chat_title": message.chat_title,
        "message_id": str(message.message_id),
        "seq": message.seq,
        "sender": {"id": str(message.sender_id), "username": message.sender_username},
    }
    if not include_text:
        return dumps(body)
    text = message.text
    encoded = dumps({**body, "text": text})
    while len(encoded) > MAX_PAYLOAD:
        # a character takes at most 6 bytes in the JSON (an escape); cut by the excess, retry
        over = len(encoded) - MAX_PAYLOAD
        text = text[: max(0, len(text) - max(over // 6, 1))]
        encoded = dumps({**body, "text": text, "text_truncated": True})
    return encoded
