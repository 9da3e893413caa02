"""Web Push: a notification to the browsers of users who have no device connected anywhere.

- `vapid`: the node's VAPID key pair (RFC 8292), one for the whole cluster;
- `targets`: what a subscription may name (an https endpoint on an allowed push service, keys of
  the right shape), so no user can make the node call an arbitrary address;
- `subscriptions`: adding and removing them, and the per-user Redis flag the fan-out reads;
- `payload`: what a push says (JSON naming the chat and the sender; text only when configured);
- `sender`: one push, encrypted (RFC 8291, aes128gcm) and signed, over HTTPS;
- `coalescing`: at most one push per user per window across the cluster, and the one that ends
  a window when more came during it;
- `notifier`: the long-lived loop that takes owed pushes (from the fan-out script, see
  `node.cluster.fanout`) and sends them, bounded, never blocking delivery;
- `parts`: the above built together for `node.assembly`.
"""
