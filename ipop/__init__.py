"""The ipop node: configuration, TAP device handler, address mapping, deployment modes and the CLI."""
