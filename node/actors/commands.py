"""What a chat actor is told, and how it answers.

A `SendCommand` carries its own way back (`reply`): a `sent`/`error` frame on the sending socket, a
REST future, or an envelope to the node that forwarded it. Whoever holds a command when it ends —
the chat actor, the runtime's `undeliverable`, a router that cannot place it — answers it through
`answer`, which takes only the first outcome: every send gets exactly one answer, however many
paths race to give one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from node.domain import Attachment, Message, SendStatus


@dataclass(slots=True, frozen=True)
class SendOutcome:
    status: SendStatus
    message: Message | None = None
    message_json: bytes | None = None  # the Message object, encoded once

    @classmethod
    def failed(cls, status: SendStatus) -> SendOutcome:
        return cls(status)

    @property
    def stored(self) -> bool:
        """True when the message is durably stored (now, or by an earlier send)."""
        return self.message_json is not None and self.status in ("created", "duplicate")


@dataclass(slots=True)
class SendCommand:
    chat_id: int
    sender_id: int
    client_msg_id: str
    text: str
    attachments: tuple[Attachment, ...]
    reply: Callable[[SendOutcome], None]
    trace: dict[str, str] = field(default_factory=dict)
    hops: int = 0  # times re-routed after an owner change
    answered: bool = False

    def answer(self, outcome: SendOutcome) -> None:
        """Give the sender its outcome; later answers are ignored."""
        if not self.answered:
            self.answered = True
            self.reply(outcome)

    def fail(self, status: SendStatus) -> None:
        self.answer(SendOutcome.failed(status))


@dataclass(slots=True)
class ChatSignalCommand:
    """An ephemeral signal for a chat's members: nothing is stored, nothing is answered."""

    chat_id: int
    user_id: int
    device_id: str
    signal: Literal["typing", "read"]
    seq: int = 0
    hops: int = 0


ChatCommand = SendCommand | ChatSignalCommand


def fail_sends(commands: list[ChatCommand] | list[SendCommand], status: SendStatus) -> None:
    """Answer every send among `commands` with `status` (signals need no answer)."""
    for command in commands:
        if isinstance(command, SendCommand):
            command.fail(status)
