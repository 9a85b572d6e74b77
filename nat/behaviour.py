"""Pure. The vocabulary of RFC 4787 for how a NAT behaves, and the profile a node shows in ``ipop status``.

Mapping says which public endpoint a NAT gives an inside socket: the same one whatever the destination
(endpoint-independent, EIM: "cone"), one per destination address (ADM) or one per destination address
and port (APDM: "symmetric"). Filtering says which outside senders may reach that public endpoint: anyone
(EIF), only addresses the inside has sent to (ADF), or only exact address:port pairs it has sent to
(APDF). The old names map onto pairs: full cone = EIM+EIF, restricted = EIM+ADF, port-restricted =
EIM+APDF (plain Linux masquerade), symmetric = APDM+APDF.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .common import Endpoint, format_endpoint


class MappingBehaviour(StrEnum):
    UNKNOWN = "unknown"
    """Not enough observations yet (fewer than two destinations agree or disagree)."""
    NONE = "none"
    """No NAT: peers see our socket at its own address (a public node)."""
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class FilteringBehaviour(StrEnum):
    UNKNOWN = "unknown"
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    ENDPOINT_DEPENDENT = "endpoint-dependent"
    """A stranger's packet did not arrive, and no probe from a known address but another port has told
    ADF from APDF yet."""


@dataclass(frozen=True, slots=True)
class NatProfile:
    """What a node knows about the NAT in front of its overlay socket; shown by ``ipop status`` and used
    to decide whether a low-TTL pre-punch is worth sending."""

    mapping: MappingBehaviour
    filtering: FilteringBehaviour
    public: tuple[Endpoint, ...]
    """Our reflexive endpoints, the best-supported first (one under EIM)."""
    local: tuple[Endpoint, ...]
    """The socket's own host endpoints."""
    port_preserved: bool | None
    """The NAT kept our local port (Linux does whenever the translated tuple is free); None: no NAT seen."""
    port_delta: int | None
    """Under a dependent mapping: the usual step between ports of consecutive new mappings, when there is
    one (a sequential allocator); None when the ports look random. Used to predict candidates."""
    observers: int
    """Distinct peer endpoints whose observations are current."""
    changed_at: float | None
    """When our public endpoint last changed (roaming, NAT rebinding); None: never seen to change."""

    @property
    def nat_type(self) -> str:
        """The lab's short name: public, full, addr, port, sym, or unknown."""
        if self.mapping is MappingBehaviour.NONE:
            return "public"
        if self.mapping in (MappingBehaviour.ADDRESS_DEPENDENT, MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT):
            return "sym"
        if self.mapping is MappingBehaviour.ENDPOINT_INDEPENDENT:
            return {
                FilteringBehaviour.ENDPOINT_INDEPENDENT: "full",
                FilteringBehaviour.ADDRESS_DEPENDENT: "addr",
                FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT: "port",
            }.get(self.filtering, "cone")
        return "unknown"

    @property
    def behind_nat(self) -> bool:
        """Anything but a known public socket: a pre-punch may be needed to open our own mapping."""
        return self.mapping is not MappingBehaviour.NONE

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view for ``ipop status``."""
        return {
            "nat_type": self.nat_type,
            "mapping": self.mapping.value,
            "filtering": self.filtering.value,
            "public": [format_endpoint(e) for e in self.public],
            "local": [format_endpoint(e) for e in self.local],
            "port_preserved": self.port_preserved,
            "port_delta": self.port_delta,
            "observers": self.observers,
            "changed_at": self.changed_at,
        }
