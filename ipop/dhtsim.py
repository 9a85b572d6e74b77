"""Pure. The DHT part of ``ipop simulate --dht``: churn, a workload, and what issue 3 measures.

Theory of operation (all times simulated; the overlay has formed and a :class:`dht.DhtSim` runs a DHT
on every node):

1. *records*: every node ``put``s one record of its own, ``name:<its address>`` (as ipop registers a
   host name), refreshed by its owner; a node that joins later does the same once it has joined;
2. *churn* (with a session median S): every node but the bootstrap ones dies after a session drawn
   from an exponential distribution with median S — the model of Bamboo's churn study (Rhea et al.,
   "Handling churn in a DHT", 2004), whose 1.4-minute median is the 84 s goal — abruptly, without a
   goodbye, and a new node with a new identity joins at once in its place, so N stays constant;
3. *gets*: ``GETS_PER_S`` times a second a random joined node reads the record of a random live owner
   whose ``put`` succeeded; a get *succeeds* when it returns that owner's value. Latency is from start
   to result, over successful gets. Gets whose reader dies before the answer are not counted;
4. *create races*: ``RACERS`` random joined nodes race to ``create`` one key, ``CONCURRENT_RACES``
   races at a time, until ``trials`` races ran. As a DHCP client would, a racer that did not get the
   key tries a random address of its own trial's /16 pool, three tries in all. A *double winner* is a
   race in which two racers were told ``Created`` for the same key; ``create_success_rate`` is the
   share of racers alive at the end of their race that got some key within three tries;
5. *dead links*: every 10 s, the share of the live nodes' links whose peer has died unnoticed (what
   greedy routing forwards to them is lost: the overlay's failure detection, seen from the DHT);
6. *records lost*: when churn stops and operations drain, every live owner's record is looked up with
   global knowledge; one that fewer than a majority of its positions hold can no longer be read.

Nothing here reads a clock or a global random generator: a run is a function of the seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import Any

from dht import Created, DhtSim, DhtStats, GetOp, OpResult, Stored, Values
from overlay import Address, Member, to_hex

from .gettail import GetTail

GETS_PER_S = 5.0
"""Reads per simulated second: 1,500 in a five-minute window, enough to tell 0.995 from 0.99."""

MEASURE_S = 300.0
"""Shortest window of churn and workload: 5.8 median sessions at the 84 s goal, 360 deaths at
N = 1,000 and S = 3,600 s. The window grows until every create race has run."""

RECORD_TTL_S = 3600
"""Lifetime of the name records; their owners refresh them (at the DHT's ``republish_s``)."""

STORE_WINDOW_S = 10.0
"""The first records are written over this window, so that a thousand puts do not start together."""

RACERS = 100
"""Nodes racing for one key (issue 3)."""

CONCURRENT_RACES = 4
"""Races under way at once: keeps churn and gets running beside the races without the races (8,000
routed messages each) crowding everything else out."""

RACE_TRIES = 3
"""Creates per racer, as a DHCP client tries a few addresses (issue 3: "within 3 tries")."""

RACE_SPREAD_S = 0.05
"""Racers of one race start within 50 ms of one another: a true race, closer than a round trip."""

RETRY_DELAY_S = (0.0, 1.0)
"""A racer that lost tries another address after a uniform delay in this range (seconds)."""

RACE_LEASE_S = 300
"""Lifetime of a won address; not refreshed (the measurement needs only the race)."""

POOL = 65_536
"""Addresses per race for second and third tries: a /16, as ipop's default 10.250.0.0/16."""

DRAIN_S = 20.0
"""After the window, operations in flight finish (a write gives up after two 6 s phases)."""

WATCH_S = 1.0
"""How often racers that died are struck off their race."""


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class _Race:
    trial: int
    key: bytes
    pending: dict[Address, int] = field(default_factory=dict)
    """Racers still trying, with the tries they have made."""
    winners: dict[bytes, set[Address]] = field(default_factory=dict)
    got: set[Address] = field(default_factory=set)
    failed: set[Address] = field(default_factory=set)


@dataclass
class _Tally:
    gets: int = 0
    gets_started: int = 0
    gets_ok: int = 0
    get_latency: list[float] = field(default_factory=list)
    get_failures: dict[str, int] = field(default_factory=dict)
    puts: int = 0
    puts_ok: int = 0
    races: int = 0
    double_winners: int = 0
    racers: int = 0
    racers_won: int = 0
    create_latency: list[float] = field(default_factory=list)
    deaths: int = 0
    joins: int = 0
    links: int = 0
    dead_links: int = 0


class DhtScenario:
    """Runs steps 1-6 of the module docstring on ``sim``; :meth:`run` returns the JSON fields."""

    def __init__(
        self,
        sim: DhtSim,
        *,
        stable: set[Address],
        session_median_s: float | None,
        trials: int,
        rng: Random,
        window_s: float | None = None,
        progress: Callable[[str], None] | None = None,
        gets_per_s: float = GETS_PER_S,
    ) -> None:
        self.sim = sim
        self.cluster = sim.cluster
        self.stable = stable
        """Bootstrap nodes: they never churn (a deployment's bootstrap peers are its steady servers)."""
        self.session_median_s = session_median_s
        self.trials = trials
        self.window_s = MEASURE_S if window_s is None else window_s
        """Shortest measurement window (default ``MEASURE_S``); tests shorten it."""
        self.rng = rng
        self.gets_per_s = gets_per_s
        """Reads per simulated second (more make the latency percentiles less noisy)."""
        self.tail = GetTail(self.cluster)
        """Why the slow gets were slow (:mod:`ipop.gettail`)."""
        self.say = progress or (lambda line: None)
        self.tally = _Tally()
        self.owned: dict[Address, bytes] = {}
        """Live owners whose record was stored, with its key."""
        self.churning = False
        self.measuring = False
        self.started_races = 0
        self.races: list[_Race] = []

    # -- the run ------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        sched = self.cluster.scheduler
        for sd in self.sim:
            sched.call_later(self.rng.uniform(0, STORE_WINDOW_S), self._store, sd.address)
        sched.run_for(STORE_WINDOW_S + 5.0)
        start = self.cluster.now
        msgs0, bytes0 = self.sim.traffic()
        stats0 = self.sim.stats()
        if self.session_median_s is not None:
            self.churning = True
            for sd in self.sim:
                if sd.address not in self.stable:
                    self._schedule_death(sd.address)
        self.measuring = True
        self._next_get()
        for _ in range(min(CONCURRENT_RACES, self.trials)):
            self._start_race()
        sched.call_later(WATCH_S, self._watch)
        while True:
            elapsed = self.cluster.now - start
            self.say(
                f"dht: t={elapsed:.0f} s, {self.tally.races}/{self.trials} races,"
                f" {self.tally.gets} gets, {self.tally.deaths} deaths"
            )
            if elapsed >= self.window_s and self.tally.races >= self.trials:
                break
            self._count_dead_links()
            sched.run_for(10.0)
        window = self.cluster.now - start
        msgs1, bytes1 = self.sim.traffic()
        stats1 = self.sim.stats()
        replication = (
            stats1.replication_bytes - stats0.replication_bytes,
            stats1.pushes_sent - stats0.pushes_sent,
        )
        self.churning = self.measuring = False
        self.say("dht: draining")
        sched.run_for(DRAIN_S)
        return self._report(window, msgs1 - msgs0, bytes1 - bytes0, replication)

    def _report(self, window: float, msgs: int, octets: int, replication: tuple[int, int]) -> dict[str, Any]:
        """The JSON fields; ``replication`` is (replication bytes, pushes) sent during the window."""
        t = self.tally
        lost = self._lost_records()
        stats: DhtStats = self.sim.stats()
        per = len(self.sim) * window
        return {
            "session_median_s": self.session_median_s,
            "dht_window_s": round(window, 1),
            "churn_deaths": t.deaths,
            "churn_joins": t.joins,
            "dead_link_share": round(t.dead_links / t.links, 4) if t.links else None,
            "create_trials": t.races,
            "create_double_winners": t.double_winners,
            "create_success_rate": round(t.racers_won / t.racers, 4) if t.racers else None,
            "create_latency_s_p50": _round(percentile(t.create_latency, 0.5)),
            "gets": t.gets,
            "get_success_rate": round(t.gets_ok / t.gets, 4) if t.gets else None,
            "get_failures": dict(sorted(t.get_failures.items())),
            "get_latency_s_p50": _round(percentile(t.get_latency, 0.5)),
            "get_latency_s_p99": _round(percentile(t.get_latency, 0.99)),
            "put_success_rate": round(t.puts_ok / t.puts, 4) if t.puts else None,
            "records_checked": lost[0],
            "records_lost": lost[1],
            "dht_msgs_per_node_s": round(msgs / per, 3) if per else None,
            "dht_bytes_per_node_s": round(octets / per, 1) if per else None,
            "dht_replication_bytes_per_node_s": round(replication[0] / per, 1) if per else None,
            "dht_pushes_per_node_s": round(replication[1] / per, 3) if per else None,
            "dht_ownership_lost": self.sim.ownership_lost,
            "dht_stats": stats.as_dict(),
            **self.tail.report(),
        }

    def _count_dead_links(self) -> None:
        """How many of the live nodes' links point to a node that has died (and not been noticed yet):
        greedy routing forwards into them, and what it forwards is lost."""
        members = self.cluster.members
        for sd in self.sim:
            for link in sd.member.node.table:
                self.tally.links += 1
                self.tally.dead_links += link.peer not in members

    # -- records and churn --------------------------------------------------------------------------

    def _store(self, address: Address) -> None:
        if self.sim.get(address) is None:
            return
        key = b"name:" + to_hex(address).encode()
        self.tally.puts += 1

        def done(result: OpResult) -> None:
            if isinstance(result, Stored):
                self.tally.puts_ok += 1
                if self.sim.get(address) is not None:
                    self.owned[address] = key

        self.sim.start(
            address, lambda n, now: n.put(key, address.to_bytes(20, "big"), RECORD_TTL_S, now), done
        )

    def _schedule_death(self, address: Address) -> None:
        assert self.session_median_s is not None
        session = self.rng.expovariate(math.log(2) / self.session_median_s)
        self.cluster.scheduler.call_later(session, self._die, address)

    def _die(self, address: Address) -> None:
        if not self.churning or self.sim.get(address) is None:
            return
        self.tally.deaths += 1
        self.owned.pop(address, None)
        self.sim.kill(address)
        sd = self.sim.add_node()
        self.tally.joins += 1
        self._schedule_death(sd.address)
        self._when_joined(sd.member, lambda: self._store(sd.address))

    def _when_joined(self, member: Member, then: Callable[[], None], waited: float = 0.0) -> None:
        if self.sim.get(member.node.address) is None:
            return
        if member.joined_at is not None:
            then()
        elif waited < 60.0:
            self.cluster.scheduler.call_later(0.5, self._when_joined, member, then, waited + 0.5)

    def _joined(self) -> list[Address]:
        return [sd.address for sd in self.sim if sd.member.joined_at is not None]

    # -- gets -----------------------------------------------------------------------------------------

    def _next_get(self) -> None:
        self.cluster.scheduler.call_later(self.rng.expovariate(self.gets_per_s), self._get)

    def _get(self) -> None:
        if not self.measuring:
            return
        self._next_get()
        readers = self._joined()
        owners = sorted(self.owned)
        if not readers or not owners:
            return
        reader = self.rng.choice(readers)
        owner = self.rng.choice(owners)
        key = self.owned[owner]
        expected = owner.to_bytes(20, "big")
        started = self.cluster.now
        t = self.tally
        token = t.gets_started = t.gets_started + 1

        def done(result: OpResult) -> None:
            t.gets += 1
            ok = isinstance(result, Values) and any(v.value == expected for v in result.values)
            self.tail.finished(token, ok)
            if ok:
                t.gets_ok += 1
                t.get_latency.append(self.cluster.now - started)
            else:
                why = "missing" if isinstance(result, Values) else getattr(result, "reason", "other")
                t.get_failures[str(why)] = t.get_failures.get(str(why), 0) + 1

        op_id = self.sim.start(reader, lambda n, now: n.get(key, now), done)
        sd = self.sim.get(reader)
        op = None if sd is None else sd.node.operation(op_id)
        self.tail.started(token, op if isinstance(op, GetOp) else None, reader, key, expected)

    # -- create races ---------------------------------------------------------------------------------

    def _start_race(self) -> None:
        if self.started_races >= self.trials:
            return
        trial = self.started_races
        self.started_races += 1
        race = _Race(trial, b"race%d:ip" % trial)
        self.races.append(race)
        joined = self._joined()
        for address in self.rng.sample(joined, min(RACERS, len(joined))):
            race.pending[address] = 0
            delay = self.rng.uniform(0, RACE_SPREAD_S)
            self.cluster.scheduler.call_later(delay, self._try, race, address, race.key)

    def _try(self, race: _Race, address: Address, key: bytes) -> None:
        if address not in race.pending:
            return
        if self.sim.get(address) is None:
            self._struck(race, address)
            return
        race.pending[address] += 1
        started = self.cluster.now
        value = address.to_bytes(20, "big")

        def done(result: OpResult) -> None:
            if address not in race.pending:
                return
            if isinstance(result, Created):
                race.winners.setdefault(key, set()).add(address)
                race.got.add(address)
                self.tally.create_latency.append(self.cluster.now - started)
                self._finish(race, address)
            elif race.pending[address] >= RACE_TRIES:
                race.failed.add(address)
                self._finish(race, address)
            else:
                pool = b"race%d:ip:10.250.%d.%d" % (race.trial, *divmod(self.rng.randrange(POOL), 256))
                delay = self.rng.uniform(*RETRY_DELAY_S)
                self.cluster.scheduler.call_later(delay, self._try, race, address, pool)

        self.sim.start(address, lambda n, now: n.create(key, value, RACE_LEASE_S, now, refresh=False), done)

    def _struck(self, race: _Race, address: Address) -> None:
        """A racer died: it counts neither as a success nor as a failure."""
        race.pending.pop(address, None)
        self._close_if_done(race)

    def _finish(self, race: _Race, address: Address) -> None:
        del race.pending[address]
        self._close_if_done(race)

    def _close_if_done(self, race: _Race) -> None:
        if race.pending or race not in self.races:
            return
        self.races.remove(race)
        t = self.tally
        t.races += 1
        alive = {a for a in race.got | race.failed if self.sim.get(a) is not None}
        t.racers += len(alive)
        t.racers_won += len(alive & race.got)
        if any(len(w) > 1 for w in race.winners.values()):
            t.double_winners += 1
        self._start_race()

    def _watch(self) -> None:
        for race in list(self.races):
            for address in [a for a in race.pending if self.sim.get(a) is None]:
                self._struck(race, address)
        if self.races or self.started_races < self.trials:
            self.cluster.scheduler.call_later(WATCH_S, self._watch)

    # -- records lost ---------------------------------------------------------------------------------

    def _lost_records(self) -> tuple[int, int]:
        majority = self.sim.config.majority
        checked = lost = 0
        for owner, key in sorted(self.owned.items()):
            sd = self.sim.get(owner)
            if sd is None:
                continue
            checked += 1
            value = owner.to_bytes(20, "big")
            if self.sim.positions_holding(key, value, sd.node.identity.public_key) < majority:
                lost += 1
        return checked, lost


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
