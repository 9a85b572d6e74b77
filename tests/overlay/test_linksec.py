"""Secure links end to end between real LinkSecurity objects: the handshake, membership by realm and
secret, tampering, replay, retransmission, concurrent sessions, rate limiting, bounded state, and
determinism. (Fuzzing of the receive path is in test_linksec_fuzz.py.)"""

from __future__ import annotations

import logging
from dataclasses import replace
from random import Random
from typing import Any, TypeVar

import pytest

from overlay import (
    REPLAY_WINDOW,
    SUITE_AES_256_GCM,
    SUITE_CHACHA20_POLY1305,
    Dropped,
    Established,
    HandshakeFailed,
    Identity,
    LinkSecurity,
    Plaintext,
    Received,
    Reply,
    Session,
    SessionExhausted,
    SessionState,
)
from overlay.handshake import complete, respond
from overlay.linkwire import MAC_BYTES, MAX_COUNTER, decode_init, decode_resp, derive_netkey, mac

REALM = "lab"
SECRET = b"a network secret, 32 bytes long."
NETKEY = derive_netkey(REALM, SECRET)
R = TypeVar("R")


def node(seed: int, *, realm: str = REALM, secret: bytes = SECRET, **options: Any) -> LinkSecurity:
    return LinkSecurity(Identity.generate(Random(seed)), realm, secret, Random(seed + 10_000), **options)


def expect(result: Received, kind: type[R]) -> R:
    assert isinstance(result, kind), result
    return result


def remac(packet: bytes) -> bytes:
    """What a realm member (who knows the realm key) can do: re-authenticate a changed packet."""
    return packet[:-MAC_BYTES] + mac(NETKEY, packet[:-MAC_BYTES])


def link(a: LinkSecurity, b: LinkSecurity, now: float = 0.0) -> tuple[Session, Session]:
    """A complete handshake a -> b; returns (a's session, b's session), both confirmed."""
    hs = a.initiate(now, b.identity.address)
    resp = expect(b.receive(hs.packet, now), Reply).packet
    at_a = expect(a.receive(resp, now), Established)
    at_b = expect(b.receive(at_a.reply or b"", now), Established)
    assert at_b.reply is not None
    assert expect(a.receive(at_b.reply, now), Plaintext).data == b""
    return at_a.session, at_b.session


def exchange(sa: Session, a: LinkSecurity, sb: Session, b: LinkSecurity, now: float = 1.0) -> None:
    """Data flows both ways on the pair (sa at a, sb at b)."""
    # The last is a super-frame's size: sealed into one buffer with encrypt_into where offered.
    for payload in (b"", b"x", b"hello" * 300, Random(5).randbytes(60000)):
        got = expect(b.receive(sa.seal(payload, now), now), Plaintext)
        assert (got.session, got.data) == (sb, payload)
        got = expect(a.receive(sb.seal(payload[::-1], now), now), Plaintext)
        assert (got.session, got.data) == (sa, payload[::-1])


@pytest.mark.parametrize("suite", [SUITE_AES_256_GCM, SUITE_CHACHA20_POLY1305])
def test_handshake_end_to_end(suite: int) -> None:
    a, b = node(1, suite=suite), node(2)
    hs = a.initiate(0.0, b.identity.address)
    resp = expect(b.receive(hs.packet, 0.1), Reply).packet
    assert b.pending_count == 1 and b.sessions() == []
    at_a = expect(a.receive(resp, 0.2), Established)
    sa = at_a.session
    assert sa.state is SessionState.UNCONFIRMED and at_a.reply == sa.fin_packet
    assert (sa.index, sa.initiator, sa.suite) == (hs.index, True, suite)
    assert (sa.peer_public_key, sa.peer_address) == (b.identity.public_key, b.identity.address)
    at_b = expect(b.receive(sa.fin_packet or b"", 0.3), Established)
    sb = at_b.session
    assert sb.confirmed and not sb.initiator and b.pending_count == 0
    assert (sb.peer_address, sb.peer_index, sa.peer_index) == (a.identity.address, sa.index, sb.index)
    confirm = expect(a.receive(at_b.reply or b"", 0.4), Plaintext)
    assert confirm.data == b"" and sa.confirmed and sa.fin_packet is None
    exchange(sa, a, sb, b)
    assert a.counters == {} and b.counters == {}
    assert a.sessions() == [sa] and b.session(sb.index) is sb


@pytest.mark.parametrize(("realm", "secret"), [(REALM, b"another secret, also 32 bytes.."), ("lab2", SECRET)])
def test_a_node_of_another_realm_or_secret_gets_no_answer(realm: str, secret: bytes) -> None:
    outsider, member = node(1, realm=realm, secret=secret), node(2)
    hs = outsider.initiate(0.0)
    for attempt in range(5):
        assert member.receive(hs.packet, attempt) == Dropped("bad_mac")
    assert member.counters == {"bad_mac": 5} and member.pending_count == 0
    # ...and nor does the member get anything from the outsider.
    resp = expect(node(3).receive(member.initiate(0.0).packet, 0.0), Reply).packet
    assert outsider.receive(resp, 0.0) == Dropped("bad_mac")


def test_tampering_with_any_byte_of_any_message_is_dropped() -> None:
    a, b = node(1), node(2)
    hs = a.initiate(0.0, b.identity.address)
    flips = [(i, bit) for i in range(len(hs.packet)) for bit in (0x01, 0x80)]
    for i, bit in flips:
        assert isinstance(b.receive(_flip(hs.packet, i, bit), 0.0), Dropped)
    assert b.pending_count == 0
    resp = expect(b.receive(hs.packet, 0.0), Reply).packet
    for i in range(len(resp)):
        assert isinstance(a.receive(_flip(resp, i), 0.0), Dropped)
    fin = expect(a.receive(resp, 0.0), Established).reply or b""
    for i in range(len(fin)):
        assert isinstance(b.receive(_flip(fin, i), 0.0), Dropped)
    ack = expect(b.receive(fin, 0.0), Established).reply or b""
    for i in range(len(ack)):
        assert isinstance(a.receive(_flip(ack, i), 0.0), Dropped)
    sa = expect(a.receive(ack, 0.0), Plaintext).session
    data = sa.seal(b"payload", 1.0)
    for i in range(len(data)):
        assert isinstance(b.receive(_flip(data, i), 1.0), Dropped)
    assert expect(b.receive(data, 1.0), Plaintext).data == b"payload"


def _flip(packet: bytes, i: int, bit: int = 0x01) -> bytes:
    changed = bytearray(packet)
    changed[i] ^= bit
    return bytes(changed)


def test_a_realm_member_cannot_forge_past_the_mac() -> None:
    """Re-MAC'd changes (what a member of the realm could send) fail on the AEAD or a signature."""
    a, b = node(1), node(2)
    hs = a.initiate(0.0, b.identity.address)
    low_order = hs.packet[:7] + bytes(32) + hs.packet[39:]
    assert b.receive(remac(low_order), 0.0) == Dropped("low_order")
    assert b.receive(remac(hs.packet[:2] + b"\x09" + hs.packet[3:]), 0.0) == Dropped("bad_suite")
    resp = expect(b.receive(hs.packet, 0.0), Reply).packet
    for lo, hi, reason in (
        (2, 6, "bad_aead"),
        (10, 42, "bad_aead"),
        (42, 74, "bad_aead"),
        (74, 154, "bad_aead"),
    ):
        for i in (lo, hi - 1):
            assert a.receive(remac(_flip(resp, i)), 0.0) == Dropped(reason), i
    assert isinstance(a.receive(resp, 0.0), Established)


def test_an_initiator_claiming_someone_elses_identity_is_refused_at_fin() -> None:
    victim, mallory, b = node(1), node(3), node(2)
    hs = mallory.initiate(0.0)
    forged = remac(hs.packet[:39] + victim.identity.public_key + hs.packet[71:])
    resp = expect(b.receive(forged, 0.0), Reply).packet
    handshake = replace(hs, packet=forged)
    session = complete(
        NETKEY, mallory.identity, handshake=handshake, resp_packet=resp, resp=decode_resp(resp), now=0.0
    )
    assert b.receive(session.fin_packet or b"", 0.0) == Dropped("bad_signature")
    assert b.pending_count == 0 and b.sessions() == []


class Impostor:
    """A realm member that claims another node's public key but can only sign with its own."""

    def __init__(self, claimed: Identity, own: Identity) -> None:
        self.public_key = claimed.public_key
        self.sign = own.sign


def test_a_responder_claiming_someone_elses_identity_is_refused() -> None:
    a, b, mallory = node(1), node(2), node(3)
    hs = a.initiate(0.0, b.identity.address)
    init = decode_init(hs.packet)
    forged, _ = respond(
        NETKEY,
        Impostor(b.identity, mallory.identity),  # type: ignore[arg-type]
        init_packet=hs.packet,
        init=init,
        index=7,
        ephemeral_private=bytes(range(32)),
        now=0.0,
    )
    assert a.receive(forged, 0.0) == Dropped("bad_signature")
    assert a.handshake(hs.index) is hs  # the genuine answer can still complete the handshake
    assert isinstance(a.receive(expect(b.receive(hs.packet, 0.0), Reply).packet, 0.0), Established)


def test_own_key_in_an_init_is_dropped() -> None:
    a = node(1)
    hs = a.initiate(0.0)
    assert a.receive(hs.packet, 0.0) == Dropped("own_key")


def test_replay_reordering_and_too_old() -> None:
    a, b = node(1), node(2)
    sa, _ = link(a, b)
    packets = [sa.seal(str(i).encode(), 1.0) for i in range(REPLAY_WINDOW + 10)]
    assert expect(b.receive(packets[5], 1.0), Plaintext).data == b"5"
    assert b.receive(packets[5], 1.0) == Dropped("replay")
    for i in (3, 4, 0, 1, 2):
        assert expect(b.receive(packets[i], 1.0), Plaintext).data == str(i).encode()
    assert b.open_data(packets[3], 1.0) is None
    assert b.receive(packets[-1], 1.0) == Plaintext(b.sessions()[0], str(len(packets) - 1).encode())
    assert b.receive(packets[6], 1.0) == Dropped("too_old")
    assert expect(b.receive(packets[-REPLAY_WINDOW], 1.0), Plaintext)
    assert b.counters == {"replay": 2, "too_old": 1}


def test_forged_data_cannot_move_the_replay_window() -> None:
    a, b = node(1), node(2)
    sa, _ = link(a, b)
    first = sa.seal(b"first", 1.0)
    for _ in range(REPLAY_WINDOW + 1):
        sa.seal(b"skip", 1.0)
    later = sa.seal(b"later", 1.0)
    assert b.receive(_flip(later, len(later) - 1), 1.0) == Dropped("bad_aead")
    assert expect(b.receive(first, 1.0), Plaintext).data == b"first"
    assert expect(b.receive(later, 1.0), Plaintext).data == b"later"


def test_init_retransmission_gets_the_identical_resp_and_no_new_session() -> None:
    a, b = node(1), node(2)
    hs = a.initiate(0.0)
    first = expect(b.receive(hs.packet, 0.0), Reply).packet
    for t in (1.0, 2.0, 9.0):
        assert b.receive(hs.packet, t) == Reply(first)
    assert b.pending_count == 1
    b.expire(10.5)
    assert b.pending_count == 0
    fresh = expect(b.receive(hs.packet, 10.5), Reply).packet
    assert fresh != first and b.pending_count == 1


def test_lost_fin_is_re_sent_and_completes() -> None:
    a, b = node(1), node(2)
    hs = a.initiate(0.0)
    resp = expect(b.receive(hs.packet, 0.0), Reply).packet
    sa = expect(a.receive(resp, 0.0), Established).session
    # HS_FIN lost; the responder re-sends HS_RESP (its own timer) and gets the same HS_FIN back.
    assert a.receive(resp, 0.5) == Reply(sa.fin_packet or b"")
    data = sa.seal(b"too early", 0.5)
    assert b.receive(data, 0.5) == Dropped("held_for_fin")
    at_b = expect(b.receive(sa.fin_packet or b"", 1.0), Established)
    assert at_b.early == (b"too early",)
    ack = at_b.reply or b""
    assert expect(a.receive(ack, 1.0), Plaintext).session is sa and sa.confirmed
    assert a.receive(resp, 1.5) == Dropped("duplicate")


def test_data_overtaking_fin_is_held_and_delivered_once_fin_verifies() -> None:
    a, b = node(1), node(2)
    hs = a.initiate(0.0)
    sa = expect(a.receive(expect(b.receive(hs.packet, 0.0), Reply).packet, 0.0), Established).session
    first = [sa.seal(f"m{i}".encode(), 0.1) for i in range(6)]
    assert [b.open_data(p, 0.1) for p in first[:2]] == [None, None]
    assert b.receive(first[1], 0.1) == Dropped("held_for_fin")  # a duplicate: caught on opening
    forged = _flip(first[2], 20)
    assert b.receive(forged, 0.1) == Dropped("held_for_fin")
    assert b.receive(first[3], 0.1) == Dropped("early_overflow")
    at_b = expect(b.receive(sa.fin_packet or b"", 0.2), Established)
    assert at_b.early == (b"m0", b"m1")
    assert b.counters == {"held_for_fin": 4, "early_overflow": 1, "replay": 1, "bad_aead": 1}
    assert [expect(b.receive(p, 0.3), Plaintext).data for p in first[2:]] == [b"m2", b"m3", b"m4", b"m5"]


def test_held_data_is_bounded_and_forgotten_with_its_pending_session() -> None:
    b = node(2, max_pending=300, handshake_burst=100)
    for i in range(70):
        x = node(100 + i)
        resp = expect(b.receive(x.initiate(0.0).packet, 0.0), Reply).packet
        session = expect(x.receive(resp, 0.0), Established).session
        b.receive(session.seal(bytes(4000), 0.0), 0.0)
    assert b.counters["held_for_fin"] == 65 and b.counters["early_overflow"] == 5  # 256 KiB in all
    b.expire(5.0)
    assert b.early_data_bytes > 0
    b.expire(10.01)
    assert b.pending_count == 0 and b.early_data_bytes == 0


def test_lost_confirmation_is_answered_again_on_a_re_sent_fin() -> None:
    a, b = node(1), node(2)
    hs = a.initiate(0.0)
    at_a = expect(a.receive(expect(b.receive(hs.packet, 0.0), Reply).packet, 0.0), Established)
    fin = at_a.reply or b""
    expect(b.receive(fin, 0.0), Established)  # the confirming DATA it returns is lost
    again = expect(b.receive(fin, 1.0), Reply).packet
    assert expect(a.receive(again, 1.0), Plaintext).data == b"" and at_a.session.confirmed
    assert b.receive(_flip(fin, 20), 1.0) == Dropped("bad_aead")


def test_expected_peer_mismatch_fails_the_handshake() -> None:
    a, b, c = node(1), node(2), node(3)
    hs = a.initiate(0.0, expected_peer=c.identity.address)
    resp = expect(b.receive(hs.packet, 0.0), Reply).packet
    failed = expect(a.receive(resp, 0.0), HandshakeFailed)
    assert failed == HandshakeFailed(hs.index, "peer_mismatch", b.identity.address)
    assert a.counters["peer_mismatch"] == 1 and a.sessions() == [] and a.handshake(hs.index) is None
    assert a.receive(resp, 0.1) == Dropped("unknown_index")


def test_rekey_gives_a_second_working_session_beside_the_first() -> None:
    a, b = node(1), node(2)
    old_a, old_b = link(a, b, 0.0)
    assert not old_a.needs_rekey(299.0, 300.0) and old_a.needs_rekey(300.0, 300.0)
    new_a, new_b = link(a, b, 300.0)
    assert {old_a.index, new_a.index} == {s.index for s in a.sessions()}
    exchange(old_a, a, old_b, b)
    exchange(new_a, a, new_b, b)
    a.close_session(old_a)
    b.close_session(old_b)
    assert old_b.state is SessionState.CLOSED and b.sessions() == [new_b]
    assert a.receive(new_b.seal(b"y", 301.0), 301.0) == Plaintext(new_a, b"y")
    with pytest.raises(RuntimeError):
        old_a.seal(b"after close", 302.0)


def test_simultaneous_open_gives_two_working_sessions() -> None:
    a, b = node(1), node(2)
    hs_a, hs_b = a.initiate(0.0, b.identity.address), b.initiate(0.0, a.identity.address)
    resp_b = expect(b.receive(hs_a.packet, 0.0), Reply).packet
    resp_a = expect(a.receive(hs_b.packet, 0.0), Reply).packet
    at_a = expect(a.receive(resp_b, 0.0), Established)
    at_b = expect(b.receive(resp_a, 0.0), Established)
    b_resp = expect(b.receive(at_a.reply or b"", 0.0), Established)
    a_resp = expect(a.receive(at_b.reply or b"", 0.0), Established)
    expect(a.receive(b_resp.reply or b"", 0.0), Plaintext)
    expect(b.receive(a_resp.reply or b"", 0.0), Plaintext)
    exchange(at_a.session, a, b_resp.session, b)
    exchange(a_resp.session, a, at_b.session, b)
    assert len(a.sessions()) == len(b.sessions()) == 2


def test_handshake_work_is_rate_limited() -> None:
    b = node(2, handshakes_per_second=2.0, handshake_burst=3.0)
    inits = [node(100 + i).initiate(0.0).packet for i in range(10)]
    results = [b.receive(p, 0.0) for p in inits]
    assert [type(r) for r in results] == [Reply] * 3 + [Dropped] * 7
    assert b.counters == {"rate_limited": 7}
    assert isinstance(b.receive(inits[3], 0.5), Reply)
    assert b.receive(inits[4], 0.5) == Dropped("rate_limited")
    assert isinstance(b.receive(inits[4], 1.0), Reply)
    # A cached reply is charged too (no amplification through replayed INITs).
    assert b.receive(inits[0], 1.0) == Dropped("rate_limited")


def test_pending_responder_state_is_bounded_oldest_first() -> None:
    b = node(2, max_pending=4)
    initiators = [node(100 + i) for i in range(6)]
    handshakes = [x.initiate(0.0) for x in initiators]
    resps = [expect(b.receive(h.packet, 0.0), Reply).packet for h in handshakes]
    assert b.pending_count == 4 and b.counters["pending_evicted"] == 2
    fins = [
        expect(x.receive(r, 0.0), Established).reply or b"" for x, r in zip(initiators, resps, strict=True)
    ]
    assert b.receive(fins[0] or b"", 0.0) == Dropped("unknown_index")
    assert isinstance(b.receive(fins[5] or b"", 0.0), Established)


def test_expire_forgets_stale_handshakes_and_pending_sessions() -> None:
    a, b = node(1), node(2)
    hs = a.initiate(0.0)
    resp = expect(b.receive(hs.packet, 1.0), Reply).packet
    a.expire(10.0)
    assert a.handshake(hs.index) is hs
    a.expire(10.01)
    assert a.handshake(hs.index) is None
    assert a.receive(resp, 10.02) == Dropped("unknown_index")
    b.expire(11.01)
    assert b.pending_count == 0


def test_closed_sessions_drop_data_and_refuse_to_seal() -> None:
    a, b = node(1), node(2)
    sa, sb = link(a, b)
    packet = sa.seal(b"in flight", 1.0)
    b.close_session(sb)
    b.close_session(sb)
    assert b.receive(packet, 1.0) == Dropped("unknown_index")
    with pytest.raises(RuntimeError):
        sb.seal(b"no", 1.0)


def test_sealing_stops_before_the_counter_could_repeat() -> None:
    a, b = node(1), node(2)
    sa, _ = link(a, b)
    sa._counter = MAX_COUNTER - 1  # skip 2**64 datagrams
    assert len(sa.seal(b"last", 1.0)) > 0 and sa.messages_sent == MAX_COUNTER
    with pytest.raises(SessionExhausted):
        sa.seal(b"one too many", 1.0)
    assert sa.needs_rekey(1.0, 300.0)


def test_cipher_contexts_are_lazy_and_can_be_dropped() -> None:
    a, b = node(1), node(2)
    sa, sb = link(a, b)
    sb.drop_cipher_contexts()
    assert not sb.has_cipher_contexts
    expect(b.receive(sa.seal(b"wake", 1.0), 1.0), Plaintext)
    assert sb.has_cipher_contexts
    sa.drop_cipher_contexts()
    sb.drop_cipher_contexts()
    exchange(sa, a, sb, b)
    assert not hasattr(sa, "__dict__")


def test_without_cached_contexts_sessions_keep_none_and_still_work() -> None:
    a, b = node(1, cache_cipher_contexts=False), node(2, cache_cipher_contexts=False)
    sa, sb = link(a, b)
    exchange(sa, a, sb, b)
    assert not sa.has_cipher_contexts and not sb.has_cipher_contexts


def test_state_changes_and_drops_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="overlay.linksec")
    a, b = node(1), node(2)
    _, sb = link(a, b)
    b.receive(b"\xa1\x01garbage", 0.0)
    b.close_session(sb)
    text = caplog.text
    peer = f"{a.identity.address >> 128:08x}"
    assert f"link session {sb.index:08x} with {peer} established (responder)" in text
    assert f"link session {sb.index:08x} with {peer} closed" in text
    assert "dropped a link datagram: malformed" in text
    assert all(r.levelno == logging.INFO for r in caplog.records if "established" in r.getMessage())


def test_same_seeds_give_byte_identical_handshakes() -> None:
    def trace() -> list[bytes]:
        a, b = node(1), node(2)
        hs = a.initiate(0.0, b.identity.address)
        resp = expect(b.receive(hs.packet, 0.0), Reply).packet
        at_a = expect(a.receive(resp, 0.0), Established)
        at_b = expect(b.receive(at_a.reply or b"", 0.0), Established)
        return [hs.packet, resp, at_a.reply or b"", at_b.reply or b"", at_a.session.seal(b"data", 1.0)]

    first, second = trace(), trace()
    assert first == second
    assert len(set(first)) == 5


def test_the_realm_key_is_available_for_the_layers_other_macs() -> None:
    assert node(1).netkey == NETKEY != node(2, realm="other").netkey


def test_constructor_refuses_misuse() -> None:
    ident = Identity.generate(Random(1))
    with pytest.raises(ValueError):
        LinkSecurity(ident, REALM, SECRET, Random(1), suite=3)
    with pytest.raises(ValueError):
        LinkSecurity(ident, "", SECRET, Random(1))
    with pytest.raises(ValueError):
        LinkSecurity(ident, REALM, SECRET, Random(1), handshakes_per_second=0)
