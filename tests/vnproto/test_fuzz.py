"""Fuzzing in CI: 100,000 random and mutated inputs per decoder and responder (bench/fuzz_vnproto.py
runs more). Decoders raise only DecodeError; responders and helpers raise nothing."""

from __future__ import annotations

from random import Random

import pytest

from bench.fuzz_vnproto import Target, corpus, fuzz, run, targets
from vnproto import ArpPacket, DecodeError

FRAMES = 100_000
NAMES = [t.name for t in targets(Random(0))]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_fuzz_target(name: str) -> None:
    (result,) = run(FRAMES, seed=20_260_401, only=[name])
    assert result.frames == FRAMES
    assert result.exceptions == {}, result.examples
    decoder = next(t for t in targets(Random(0)) if t.name == name).decoder
    if decoder:
        # Both outcomes are reached: the inputs are neither all garbage nor all valid.
        assert result.decoded > 0 and result.decode_errors > 0
    else:
        assert result.decoded == FRAMES


def test_the_fuzzer_finds_a_decoder_that_raises_something_else() -> None:
    def careless(data: bytes) -> object:
        if data[7] not in (1, 2):  # indexes before checking the length
            raise DecodeError("operation")
        return ArpPacket.decode(data)

    result = fuzz(Target("careless", "arp", careless, True), corpus()["arp"], 2000, Random(1))
    assert result.exceptions.get("IndexError", 0) > 0 and "IndexError" in result.examples["IndexError"]
