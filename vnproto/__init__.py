"""Frames and local protocols: Ethernet, ARP, IPv4, UDP, ICMP, TCP (MSS), DHCP and DNS as pure codecs
and responders. The lowest layer: it imports no other package of the project."""
