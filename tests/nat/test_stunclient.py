"""STUN client transactions: the RFC 8489 retransmission schedule, matching, failure modes."""

from __future__ import annotations

from random import Random

import pytest

from nat import (
    CHANGE_IP,
    StunClass,
    StunClient,
    StunMessage,
    StunTransaction,
    TransactionState,
    binding_error,
    binding_success,
    decode_stun,
    encode_stun,
)

SERVER = ("198.51.100.10", 3478)


def _drive(txn: StunTransaction, until: float) -> list[float]:
    """Run the transaction's timer with nobody answering; return the send times."""
    sends: list[float] = []
    now = 0.0
    while txn.state is TransactionState.WAITING and now <= until:
        if txn.datagrams_to_send(now):
            sends.append(now)
        txn.handle_timer(now)
        timer = txn.get_timer()
        if timer is None:
            break
        now = timer
    return sends


def test_retransmission_schedule_is_rfc8489_default() -> None:
    txn = StunTransaction(SERVER, Random(1), 0.0)
    sends = _drive(txn, 100.0)
    # RFC 8489 section 6.2.1: sent at 0, 500, 1500, 3500, 7500, 15500, 31500 ms; fails at 39500 ms.
    assert sends == pytest.approx([0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
    assert txn.state is TransactionState.TIMED_OUT
    assert txn.result is not None and txn.result.state is TransactionState.TIMED_OUT


def test_bounded_schedule_and_timeout_time() -> None:
    txn = StunTransaction(SERVER, Random(1), 10.0, rto=0.25, max_requests=3, final_wait_factor=4)
    now = 10.0
    times = []
    while txn.state is TransactionState.WAITING:
        if txn.datagrams_to_send(now):
            times.append(now)
        txn.handle_timer(now)
        t = txn.get_timer()
        if t is None:
            break
        now = t
    assert times == pytest.approx([10.0, 10.25, 10.75])
    assert now == pytest.approx(11.75)


def test_success_carries_mapping_and_rtt_only_without_retransmission() -> None:
    txn = StunTransaction(SERVER, Random(2), 0.0)
    ((req, dest),) = txn.datagrams_to_send(0.0)
    assert dest == SERVER
    tid = decode_stun(req).transaction_id
    resp = decode_stun(binding_success(tid, ("203.0.113.2", 40000), other_address=("198.51.100.11", 3479)))
    assert txn.receive(resp, SERVER, 0.03)
    assert txn.state is TransactionState.SUCCEEDED and txn.result is not None
    assert txn.result.mapped == ("203.0.113.2", 40000)
    assert txn.result.other_address == ("198.51.100.11", 3479)
    assert txn.result.rtt == pytest.approx(0.03)
    assert txn.get_timer() is None and txn.datagrams_to_send(5.0) == []

    again = StunTransaction(SERVER, Random(3), 0.0)
    again.datagrams_to_send(0.0)
    again.datagrams_to_send(0.5)
    assert again.receive(decode_stun(binding_success(again.transaction_id, ("203.0.113.2", 1))), SERVER, 0.6)
    assert again.result is not None and again.result.rtt is None  # Karn


def test_wrong_transaction_id_and_requests_are_ignored() -> None:
    txn = StunTransaction(SERVER, Random(4), 0.0)
    other = decode_stun(binding_success(b"x" * 12, ("203.0.113.2", 1)))
    assert not txn.receive(other, SERVER, 0.1)
    request = StunMessage(StunClass.REQUEST, 1, txn.transaction_id)
    assert not txn.receive(request, SERVER, 0.1)
    assert txn.state is TransactionState.WAITING


def test_error_and_unknown_required_attributes_fail_the_transaction() -> None:
    txn = StunTransaction(SERVER, Random(5), 0.0)
    assert txn.receive(decode_stun(binding_error(txn.transaction_id, 400, "Bad Request")), SERVER, 0.1)
    assert txn.state is TransactionState.FAILED and txn.result is not None
    assert txn.result.error == (400, "Bad Request")

    txn = StunTransaction(SERVER, Random(6), 0.0)
    weird = StunMessage(
        StunClass.SUCCESS, 1, txn.transaction_id, xor_mapped=("203.0.113.2", 1), unknown_required=(0x7F00,)
    )
    assert txn.receive(weird, SERVER, 0.1)
    assert txn.state is TransactionState.FAILED


def test_transaction_ids_come_from_the_injected_rng() -> None:
    a = StunTransaction(SERVER, Random(7), 0.0).transaction_id
    b = StunTransaction(SERVER, Random(7), 0.0).transaction_id
    assert a == b and len(a) == 12


def test_client_multiplexes_and_counts_bad_datagrams() -> None:
    client = StunClient(Random(8), software="ipop")
    t1 = client.request(SERVER, 0.0)
    t2 = client.request(("198.51.100.11", 3479), 0.0, change=CHANGE_IP)
    out = client.datagrams_to_send(0.0)
    assert {dest for _, dest in out} == {SERVER, ("198.51.100.11", 3479)}
    assert all(decode_stun(d).software == "ipop" for d, _ in out)
    assert not client.receive(b"\xa1\x04 not stun", SERVER, 0.1)
    corrupted = bytearray(binding_success(t1, ("203.0.113.2", 5)))
    corrupted[-1] ^= 0xFF
    assert client.receive(bytes(corrupted), SERVER, 0.1)
    assert client.decode_errors == 1
    assert client.receive(binding_success(t1, ("203.0.113.2", 5)), ("198.51.100.11", 3479), 0.1)
    event = client.next_event()
    assert event is not None and event.transaction_id == t1 and event.mapped == ("203.0.113.2", 5)
    assert event.source == ("198.51.100.11", 3479)
    assert client.receive(binding_success(t1, ("203.0.113.2", 5)), SERVER, 0.2)  # duplicate
    assert client.unmatched == 1 and client.next_event() is None
    assert client.pending() == 1
    # The remaining one times out through handle_timer.
    now = 0.0
    while client.pending():
        client.datagrams_to_send(now)
        client.handle_timer(now)
        timer = client.get_timer()
        assert timer is not None or not client.pending()
        now = timer if timer is not None else now
    event = client.next_event()
    assert event is not None and event.transaction_id == t2 and event.state is TransactionState.TIMED_OUT
    assert event.change == CHANGE_IP


def test_misuse_raises() -> None:
    with pytest.raises(ValueError):
        StunTransaction(SERVER, Random(1), 0.0, rto=0)
    client = StunClient(Random(1))
    for _ in range(64):
        client.request(SERVER, 0.0)
    with pytest.raises(RuntimeError):
        client.request(SERVER, 0.0)


def test_encode_of_our_request_is_decodable_by_ourselves() -> None:
    txn = StunTransaction(SERVER, Random(9), 0.0, software="s", change=CHANGE_IP)
    ((data, _),) = txn.datagrams_to_send(0.0)
    msg = decode_stun(data)
    assert msg.fingerprint and msg.change_request == CHANGE_IP and msg.software == "s"
    assert encode_stun(msg) == data


def test_expects_only_the_transactions_of_this_client() -> None:
    mine, other = StunClient(Random(8)), StunClient(Random(9))
    tid = mine.request(SERVER, 0.0)
    answer = binding_success(tid, ("203.0.113.2", 1))
    assert mine.expects(answer) and not other.expects(answer)
    assert not mine.expects(b"\x00" * 7) and not mine.expects(b"not stun at all, just bytes")
