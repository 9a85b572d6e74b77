"""Tests of the DHT: store, codec, quorum, operations over a scripted ring, and the asyncio glue."""
