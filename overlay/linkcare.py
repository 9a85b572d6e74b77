"""Pure. Care of the links a node already has: roles that lapse, unused links, sessions, lost peers.

Once per housekeeping tick, ``manage_links`` walks the table:

* a shortcut idle for ``shortcut_idle_s`` loses its role; a leaf link (joining, or a lost peer found
  again) loses its role ``LEAF_HOLD_S`` after the node joined;
* a link without a role that carries application traffic becomes a shortcut;
* a link neither end has a role for is closed (with a ``Close``) after ``ROLELESS_GRACE_S``;
* each link's sessions are tended: rekeyed when old, closed when superseded and quiet, their cipher
  contexts freed when idle.

When the table is full, a new link takes the place of the unused link (no role at either end) heard
from longest ago (``make_room``); only a table of links in use refuses a newcomer.

Peers that died on us are remembered (``lost_link``) and one is probed every ``LOST_PROBE_S``: after a
partition heals, such probes bring the two rings back together.

The state (``lost``, ``next_lost_probe``) lives in the node's ``Maintenance``; these are its passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .table import LEAF, SHORTCUT, Link
from .wire import Close

if TYPE_CHECKING:
    from .maintenance import Maintenance

ROLELESS_GRACE_S = 10.0
"""A link neither end has a role for is closed after this; time for the peer's hello to arrive."""

LOST_MAX = 8
"""Recently lost peers kept to probe directly; after a partition heals they bring the rings together."""

LOST_PROBE_S = 30.0
"""How often one lost peer is probed; one handshake packet, so cheap."""

SUPERSEDED_QUIET_S = 15.0
"""A session that is not the preferred one of its link is closed after this long without traffic either
way: longer than a keepalive round trip with retries, so the peer has switched to the preferred one."""

LEAF_HOLD_S = 30.0
"""A leaf link (joining, or a lost peer found again) keeps its role this long after joining."""

CIPHER_IDLE_S = 5.0
"""A session quiet this long frees its cipher contexts (one housekeeping tick, ``maintenance.TICK_S``)."""


def manage_links(m: Maintenance, now: float) -> None:
    node = m.node
    idle = node.config.shortcut_idle_s
    for link in list(node.table):
        if link.my_roles & SHORTCUT and now - link.last_app > idle:
            m.drop_role(link, SHORTCUT, now)
        if link.my_roles & LEAF and m.joined and now - link.created > LEAF_HOLD_S:
            m.drop_role(link, LEAF, now)
        if link.my_roles == 0 and link.last_app > link.created and now - link.last_app <= idle:
            # A link without a role that carries application traffic (a joiner's temporary link,
            # a link the peer opened, a LAN link) is a shortcut in all but name: traffic to a
            # linked peer is never counted towards one, so without the role it would be closed as
            # unused and the traffic would fall back to routing (or a relay) until counted again.
            m.add_role(link, SHORTCUT, now)
        if link.roleless:
            if link.unused_since is None:
                link.unused_since = now
            elif now - link.unused_since >= ROLELESS_GRACE_S:
                node.send_control(link, Close("unused"), now)
                node.drop_link(link, "unused", now, linger=True)
        else:
            link.unused_since = None
        if link.sessions:
            tend_sessions(m, link, now)


def make_room(m: Maintenance, now: float) -> bool:
    """Evict the least recently heard unused link to make room for a new one; whether one was evicted.
    In a flash crowd the bootstrap peers' tables fill with links whose joiners have moved on; refusing
    the next joiners instead stalled them (docs/simscale.md)."""
    node = m.node
    unused = [link for link in node.table if link.roleless]
    if not unused:
        return False
    victim = min(unused, key=lambda link: link.last_rx)
    node.counters["links_evicted"] += 1
    node.send_control(victim, Close("evicted"), now)
    node.drop_link(victim, "evicted for a new link", now, notify=False, linger=True)
    return True


def tend_sessions(m: Maintenance, link: Link, now: float) -> None:
    """Rekey when the newest session is old; close sessions the preferred one superseded once
    they have been quiet a while (the peer may still use one until it, too, has seen the new
    one); free idle sessions' cipher contexts."""
    node = m.node
    newest = max(link.sessions, key=lambda s: s.created_at)
    if now - newest.created_at > node.config.rekey_s and newest.initiator:
        node.connector.rekey(link, now)
    preferred = node.sending_session(link)
    for session in list(link.sessions):
        quiet = min(now - session.last_sent, now - session.last_received)
        superseded = session is not preferred and preferred is not None and preferred.confirmed
        if superseded and quiet > SUPERSEDED_QUIET_S:
            link.sessions.remove(session)
            node.security.close_session(session)
            continue
        if quiet > CIPHER_IDLE_S:
            session.drop_cipher_contexts()


def probe_lost(m: Maintenance, now: float) -> None:
    """Probe the lost peer probed longest ago, with one handshake to its last endpoint."""
    if now < m.next_lost_probe or not m.lost:
        return
    m.next_lost_probe = now + LOST_PROBE_S
    addr = min(m.lost, key=lambda a: m.lost[a][1])
    endpoint, _ = m.lost.pop(addr)
    m.lost[addr] = (endpoint, now)
    if m.node.table.get(addr) is None and not m.node.connector.busy(addr):
        m.node.connector.connect_endpoint(endpoint, LEAF, now)


def lost_link(m: Maintenance, link: Link, now: float) -> None:
    """Remember a peer that died on us, to probe it now and then: after a partition heals, such
    probes bring the two rings back together."""
    if link.endpoint is not None:
        m.lost[link.peer] = (link.endpoint, now)
        if len(m.lost) > LOST_MAX:
            del m.lost[min(m.lost, key=lambda a: m.lost[a][1])]
