"""What this node knows about the other nodes: which incarnations are known to be dead.

The view is refreshed by every heartbeat (`node.cluster.membership`) from the membership registry
and handed to the scripts that must tell live entries from dead ones (presence, fan-out, lease
takeover), so that no script reads another node's key: on a Redis Cluster that key would be in
another hash slot.

Only nodes *known* dead count as dead. A node the view has not seen yet (it started after the
last refresh) counts as alive: its presence entries are kept and it is published to. A dead node
stays in the registry for `DEAD_RETENTION`; past that its leftover presence entries (of users that
neither received a message nor connected in all that time) count as live again — they cost a
publish to nobody, and the user's backlog comes from PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DEAD_RETENTION_MS = 24 * 3600 * 1000


@dataclass(slots=True)
class ClusterView:
    dead: frozenset[str] = field(default_factory=frozenset)

    def update(self, dead: Iterable[str]) -> None:
        self.dead = frozenset(dead)

    def dead_args(self) -> list[str]:
        """The dead incarnations as script arguments, count first."""
        return [str(len(self.dead)), *self.dead]

    def is_dead(self, incarnation: str) -> bool:
        return incarnation in self.dead
