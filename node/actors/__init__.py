"""The actor runtime and the node's actors: one per chat (the only writer of its seq) and one
per user with devices connected here (delivery to those devices)."""
