"""The structured ring overlay: self-certifying addresses, secure links, the connection table, greedy
routing, maintenance, the UDP driver and the discrete-event simulator."""
