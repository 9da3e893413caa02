"""REST and WebSocket edges: thin handlers over `node.services`."""
