"""STUN at run time (``overlay.stunning``): a node with a configured server asks it where it is seen,
feeds the answer to its NAT observer, and runs the RFC 5780 filtering checks; answers that never come
count as misses, error answers count as nothing, and garbage is counted and dropped."""

from __future__ import annotations

from random import Random

from nat import CHANGE_IP, CHANGE_PORT, binding_error, binding_success, decode_stun, is_stun
from overlay import Endpoint, Identity, OverlayConfig, OverlayNode

SERVER = ("198.51.100.10", 3478)
ALT = ("198.51.100.11", 3479)
LOCAL = ("192.168.1.2", 5800)
MAPPED = ("203.0.113.2", 5800)


def node(servers: tuple[Endpoint, ...] = (SERVER,)) -> OverlayNode:
    config = OverlayConfig(realm="stun", secret=b"stun-test-secret-0123456789abcdef", bootstrap=())
    return OverlayNode(
        Identity.generate(Random(1)), config, Random(2), 0.0, local_endpoints=(LOCAL,), stun_servers=servers
    )


def run(n: OverlayNode, answer: set[int | None], until: float, *, errors: bool = False) -> int:
    """Drive ``n``'s timers to ``until``; the server answers Binding requests whose CHANGE-REQUEST is in
    ``answer`` (None: a plain request), with an error instead when ``errors``. Returns requests seen."""
    now, seen = 0.0, 0
    while now <= until:
        for data, dest, _ttl in n.datagrams_to_send(now):
            if not is_stun(data):
                continue
            seen += 1
            assert dest == SERVER
            request = decode_stun(data)
            if request.change_request not in answer and not (request.change_request == 0 and None in answer):
                continue
            tid = request.transaction_id
            source = ALT if request.change_request else SERVER
            reply = (
                binding_error(tid, 420, "no")
                if errors and request.change_request
                else binding_success(tid, MAPPED)
            )
            n.receive_datagram(reply, source, now)
        timer = n.get_timer()
        if timer is None:
            break
        now = max(now + 0.001, timer)
        n.handle_timer(now)
    return seen


def test_binding_answer_is_an_observation_and_unanswered_change_requests_mean_port_restricted() -> None:
    n = node()
    run(n, {None}, 10.0)
    status = n.status(10.0)
    assert status["stun"]["servers"] == [
        {"server": "198.51.100.10:3478", "state": "succeeded", "mapped": "203.0.113.2:5800"}
    ]
    assert status["nat"]["public"] == ["203.0.113.2:5800"]
    assert status["nat"]["filtering"] == "address-and-port-dependent"
    assert n.counters["stun_answers"] == 1


def test_an_answer_from_another_port_only_means_address_restricted_and_from_anywhere_full_cone() -> None:
    n = node()
    run(n, {None, CHANGE_PORT}, 10.0)
    assert n.status(10.0)["nat"]["filtering"] == "address-dependent"
    full = node()
    run(full, {None, CHANGE_PORT, CHANGE_IP | CHANGE_PORT}, 10.0)
    assert full.status(10.0)["nat"]["filtering"] == "endpoint-independent"


def test_a_server_without_rfc5780_leaves_filtering_unknown_and_garbage_is_dropped() -> None:
    n = node()
    run(n, {None, CHANGE_PORT, CHANGE_IP | CHANGE_PORT}, 10.0, errors=True)
    assert n.status(10.0)["nat"]["filtering"] == "unknown"
    junk = bytearray(binding_success(b"z" * 12, MAPPED))
    junk[-1] ^= 0xFF
    n.receive_datagram(bytes(junk), SERVER, 11.0)
    n.receive_datagram(binding_success(b"y" * 12, ("203.0.113.99", 1)), SERVER, 11.0)
    assert n.status(11.0)["nat"]["public"] == ["203.0.113.2:5800"]  # an unasked answer changes nothing


def test_requests_are_repeated_and_no_servers_means_no_stun() -> None:
    n = node()
    assert run(n, {None}, 250.0) >= 3  # at start, then every REFRESH_S (and the filtering checks)
    quiet = node(())
    assert run(quiet, {None}, 10.0) == 0 and quiet.status(10.0)["stun"]["servers"] == []
