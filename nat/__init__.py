"""NAT traversal: reflexive-address discovery, NAT classification, hole punching, relay framing and the
NAT models that the simulator uses. Imports only ``vnproto`` from the project."""
