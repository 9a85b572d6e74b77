"""Tests of the ipop node package: configuration, state, TAP, control socket, CLI."""
