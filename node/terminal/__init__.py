"""What a person runs in a terminal beside the node: the small chat client."""
