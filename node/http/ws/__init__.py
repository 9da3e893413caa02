"""The WebSocket edge: the upgrade and the reading of client frames (`handler`, `reader`,
`schemas`), and what serves each connected device (`session`: its bounded outbox, the writer
task, the backlog and hole filling; `hub`: the devices connected to this node)."""
