"""The discrete-event network simulator: a virtual clock, an in-memory datagram internet with latency,
loss, duplication, partitions, LANs and NAT boxes, and hosts that drive the same sans-IO cores as the
real UDP driver. A run is fully determined by its seed."""

from .cluster import Cluster, Member, RouteSample
from .host import SimHost
from .lan import Lan
from .model import Counters, Drop, LatencyModel
from .network import BROADCAST, Network
from .scheduler import Action, Scheduler
from .seams import DatagramCore, NatBox

__all__ = [
    "BROADCAST",
    "Cluster",
    "Member",
    "RouteSample",
    "Action",
    "Counters",
    "DatagramCore",
    "Drop",
    "Lan",
    "LatencyModel",
    "NatBox",
    "Network",
    "Scheduler",
    "SimHost",
]
