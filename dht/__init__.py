"""The distributed hash table hosted by the overlay: signed, replicated records with atomic create,
multi-value put, get, owner-only delete and TTL.

``DhtNode`` is the sans-IO core (it runs on any :class:`overlay.Router`); ``DhtClient`` is the small
asyncio glue that turns its operation ids into awaitable results; ``DhtSim`` runs a ``DhtNode`` on every
node of a simulated overlay (``overlay.Cluster``).
"""

from .client import DhtClient
from .codec import DecodeError
from .config import DhtConfig
from .events import (
    AlreadyOwned,
    Created,
    Deleted,
    DhtEvent,
    Failed,
    OpCompleted,
    OpId,
    OpResult,
    OwnershipLost,
    Reason,
    Stored,
    ValueInfo,
    Values,
)
from .node import DhtNode, OwnedRecord
from .ops import GetOp
from .phase import SlotState
from .record import Kind, Record, record_valid, sign_record
from .sim import CountingRouter, DhtSim, SimDht
from .stats import DhtStats

__all__ = [
    "AlreadyOwned",
    "CountingRouter",
    "Created",
    "DecodeError",
    "Deleted",
    "DhtClient",
    "DhtConfig",
    "DhtEvent",
    "DhtNode",
    "DhtSim",
    "DhtStats",
    "Failed",
    "GetOp",
    "Kind",
    "OpCompleted",
    "OpId",
    "OpResult",
    "OwnedRecord",
    "OwnershipLost",
    "Reason",
    "SimDht",
    "SlotState",
    "Record",
    "Stored",
    "ValueInfo",
    "Values",
    "record_valid",
    "sign_record",
]
