"""Tests of the nat package: codecs, pure state machines, NAT models, and the NAT lab system tests."""
