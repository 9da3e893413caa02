"""Who this node is in the cluster."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(slots=True, frozen=True)
class NodeIdentity:
    """`node_id` is the operator's name (stable if configured); `incarnation` is unique per
    process start, so leases, presence and the inbox of a crashed node are never mistaken for
    those of the node restarted under the same name."""

    node_id: str
    incarnation: str = field(default="")

    @classmethod
    def new(cls, node_id: str) -> NodeIdentity:
        return cls(node_id=node_id, incarnation=f"{node_id}#{uuid.uuid4().hex[:8]}")
