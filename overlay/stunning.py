"""Pure. STUN at run time: the configured servers asked, over the overlay's own socket, where they see us
and how our NAT filters.

Peers alone tell a node its public endpoint (``reflexive``), but only once it has links, and they cannot
tell how its NAT filters. A STUN server (``[overlay] stun_servers``) answers from the start. Every
``REFRESH_S`` (and at start) each server gets a Binding request; the mapped address of a success is one
more observation for the ``nat.NatObserver`` (as a peer's would be, keyed by the server's endpoint). The
first server that answers is then asked for the RFC 5780 filtering test, ``CONFIRMATIONS`` times each:
a CHANGE-REQUEST for another IP and port (an answer means endpoint-independent filtering) and for
another port only (an answer means address-dependent, none port-dependent). A server without RFC 5780
support answers those with an error, which says nothing about the NAT and is ignored.

The requests leave from the overlay's socket, so the mapping they find is the one peers use; responses
come back through ``Connector.on_foreign_datagram``. Transactions retransmit as RFC 8489 says, but the
filtering checks use a short schedule (``FILTER_RTO_S``): a missing answer is their expected outcome.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from nat import (
    CHANGE_IP,
    CHANGE_PORT,
    FilterProbeKind,
    FilterProbeResult,
    StunClient,
    StunResult,
    TransactionState,
    classify_filtering,
    format_endpoint,
)

from .events import Endpoint

if TYPE_CHECKING:
    from .node import OverlayNode

log = logging.getLogger(__name__)

REFRESH_S = 120.0
"""Binding requests are repeated this often: well inside any NAT's UDP timeout, so the server's view
stays current if the mapping changes (a router reboot), and cheap (one small datagram per server)."""

CONFIRMATIONS = 2
"""Filtering checks of each kind (``nat``'s rule: one miss may be a lost packet)."""

FILTER_RTO_S = 0.3
FILTER_REQUESTS = 3
FILTER_FINAL_WAIT = 3.0
"""A filtering check gives up after 0.3 + 0.6 s of retransmissions and 0.9 s more: about 2 s."""

_KINDS = {CHANGE_IP | CHANGE_PORT: FilterProbeKind.OTHER_ADDRESS, CHANGE_PORT: FilterProbeKind.OTHER_PORT}


class StunQueries:
    __slots__ = (
        "_armed_at",
        "_next_refresh",
        "binding",
        "filter",
        "filter_results",
        "filter_server",
        "node",
        "results",
        "servers",
    )

    def __init__(self, node: OverlayNode, servers: tuple[Endpoint, ...], now: float) -> None:
        self.node = node
        self.servers = servers
        self.binding = StunClient(node.rng, software="ipop")
        self.filter = StunClient(
            node.rng, rto=FILTER_RTO_S, max_requests=FILTER_REQUESTS, final_wait_factor=FILTER_FINAL_WAIT
        )
        self.results: dict[Endpoint, StunResult] = {}
        self.filter_results: list[FilterProbeResult] = []
        self.filter_server: Endpoint | None = None
        self._next_refresh = now
        self._armed_at: float | None = None
        if servers:
            self._arm(now)

    def _arm(self, when: float) -> None:
        """One pending timer at a time (an earlier deadline replaces a later one, which then fires
        harmlessly): re-arming on every datagram must not multiply timers."""
        if self._armed_at is None or when < self._armed_at:
            self._armed_at = when
            self.node.set_timer(when, "stun", None)

    def on_timer(self, now: float) -> None:
        if not self.servers:
            return
        if self._armed_at is not None and now >= self._armed_at:
            self._armed_at = None
        if now >= self._next_refresh:
            self._next_refresh = now + REFRESH_S
            for server in self.servers:
                if self.binding.pending() < len(self.servers):
                    self.binding.request(server, now)
        for client in (self.binding, self.filter):
            client.handle_timer(now)
        self._collect(now)

    def receive(self, data: bytes, src: Endpoint, now: float) -> bool:
        """A STUN datagram from ``src``: True if it was one (answered or not)."""
        if not self.servers:
            return False
        client = self.filter if self.filter.expects(data) else self.binding
        taken = client.receive(data, src, now)
        self._collect(now)
        return taken

    def _collect(self, now: float) -> None:
        node = self.node
        while (result := self.binding.next_event()) is not None:
            self.results[result.server] = result
            if result.state is TransactionState.SUCCEEDED and result.mapped is not None:
                node.counters["stun_answers"] += 1
                reflexive = node.connector.reflexive
                mapping = reflexive.mapping()
                reflexive.stun_observed(result.server, result.mapped, now)
                if reflexive.mapping() is not mapping:
                    node.connector.punch.mapping_changed(now)
                if self.filter_server is None:
                    self._start_filtering(result.server, now)
            else:
                node.counters["stun_failures"] += 1
        while (result := self.filter.next_event()) is not None:
            kind = _KINDS.get(result.change)
            if kind is None or result.state is TransactionState.FAILED:
                continue  # an error answer (no RFC 5780 support) says nothing about our NAT
            self.filter_results.append(FilterProbeResult(kind, result.state is TransactionState.SUCCEEDED))
            behaviour = classify_filtering(self.filter_results)
            node.connector.reflexive.stun_filtering_result(behaviour)
        for data, server in (*self.binding.datagrams_to_send(now), *self.filter.datagrams_to_send(now)):
            node.transmit(data, server, now)
        timers = [t for t in (self.binding.get_timer(), self.filter.get_timer()) if t is not None]
        self._arm(min([*timers, self._next_refresh]))

    def _start_filtering(self, server: Endpoint, now: float) -> None:
        self.filter_server = server
        for _ in range(CONFIRMATIONS):
            for change in _KINDS:
                self.filter.request(server, now, change=change)
        log.info("%s STUN filtering test against %s", self.node.log_prefix, format_endpoint(server))

    def status(self) -> dict[str, Any]:
        return {
            "servers": [
                {
                    "server": format_endpoint(server),
                    "state": self.results[server].state.value if server in self.results else "waiting",
                    "mapped": format_endpoint(r.mapped)
                    if (r := self.results.get(server)) is not None and r.mapped is not None
                    else None,
                }
                for server in self.servers
            ],
            "filtering_checks": [[r.kind.value, r.arrived] for r in self.filter_results],
        }
