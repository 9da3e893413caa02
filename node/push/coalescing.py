"""At most one push per user per window, across the cluster, and none lost at the window's end.

The window opens in the fan-out script (`node.cluster.fanout`): a dormant, subscribed user is
owed a push only if the script can take `pushgate:<user>` (SET NX with the window as expiry,
holding the taking node's incarnation). While the gate is held, later messages only leave their
id in `pushlate:<user>` (the newest wins). The node that holds the gate looks at that key when
the window ends (`Windows`, `take_late`): if a message came in the meantime and the user is still
not connected anywhere, it takes the gate again and pushes that newest message. A burst of 50
messages in a second is therefore two pushes: the first message at once, the newest at the end
of the window. If the holder dies, its late message is lost and the next message opens a new
window: pushes are best effort.
"""

from __future__ import annotations

import heapq

from node.cluster import keys
from node.cluster.connection import RedisClient
from node.cluster.liveness import ClusterView

# KEYS: gate, late, presence (one user: one hash slot); ARGV: this node's incarnation, window ms,
# the nodes known dead (count first). Returns the late message id to push now (the gate is ours
# again), or false.
_TAKE_LATE = """
local mid = redis.call('GET', KEYS[2])
if not mid then return false end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
local dead = {}
for i = 4, 3 + tonumber(ARGV[3]) do dead[ARGV[i]] = true end
for _, node in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not dead[node] then
    redis.call('DEL', KEYS[2])
    return false
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return mid
"""


class LateMessages:
    def __init__(
        self, redis: RedisClient, incarnation: str, view: ClusterView, *, window: float
    ) -> None:
        self._me = incarnation
        self._view = view
        self._window_ms = int(window * 1000)
        self._take = redis.register_script(_TAKE_LATE)

    async def take_late(self, user_id: int) -> int | None:
        """The message the user was owed a push for during the window that ended, if any and if
        the user is still not connected; the gate is then held for another window."""
        mid = await self._take(
            keys=[keys.push_gate(user_id), keys.push_late(user_id), keys.presence(user_id)],
            args=[self._me, self._window_ms, *self._view.dead_args()],
        )
        return int(mid) if mid else None


class Windows:
    """Window ends this node must look at, soonest first (a user appears at most once)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._due: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._due)

    def open(self, user_id: int, ends_at: float) -> None:
        if user_id in self._due and self._due[user_id] >= ends_at:
            return
        self._due[user_id] = ends_at
        heapq.heappush(self._heap, (ends_at, user_id))

    def next_end(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_ended(self, now: float) -> int | None:
        """A user whose window has ended by `now`, or None."""
        self._drop_stale()
        if not self._heap or self._heap[0][0] > now:
            return None
        _, user_id = heapq.heappop(self._heap)
        del self._due[user_id]
        return user_id

    def _drop_stale(self) -> None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
