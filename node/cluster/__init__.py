"""Several nodes as one messenger: ownership directory, membership, Pub/Sub transport, routing."""
