"""Relay trees on loopback: one speaker, four relays and sixteen more listeners — real nodes in
five processes, real links — through an unpromoted sender and a relay kill.

The issue asks for about forty listeners. On this 2-core box a tree listener costs about 5 % of
a core (bench relay_live, whose media floor — aiortc alone carrying the audio — is about 1.5 %):
twenty-eight listeners kept both cores at 100 % for the whole test, links to relays timed out
while connecting and a third of the room stayed silent (3 of 3 runs, the code of the previous
landing included). Twenty keep the same tree shape (depth two, four relays under the speaker,
leaves with spare slots) with some headroom; the bench covers the larger rooms."""

from __future__ import annotations

import asyncio
import time

import pytest

from p2pvoix.cli.live import share_key
from p2pvoix.cli.relay import RELAY_AUDIO
from p2pvoix.crypto.keys import PublicKey
from p2pvoix.mesh.capacity import CapacityPolicy
from tests.audiotools import read_wav
from tests.session.procrooms import NodeSpec, Worker
from tests.session.roomlab import Lab, share_with

pytestmark = [pytest.mark.async_timeout(300), pytest.mark.timeout(330)]

# Leaves offer a little spare capacity, as listeners do by default: after a relay dies, its
# orphans need free slots to hang from.
HOST_SLOTS, RELAY_SLOTS, LEAF_SLOTS, WORKERS, LEAVES_PER_WORKER = 4, 10, 2, 4, 4


async def ask(worker: Worker, command: dict, timeout: float = 60):
    return await asyncio.to_thread(worker.call, command, timeout)


async def test_a_room_of_twenty_through_four_relays_survives_a_rogue_and_a_relay_kill(tmp_path):
    async with Lab(tmp_path) as lab:
        host = await lab.host("host", 440, capacity=CapacityPolicy(max_slots=HOST_SLOTS,
                                                                   measure=False))
        boot, speaker = host.node.addrs()[0], host.me.peer_id
        key = share_key(host.room, host.node).text()  # with hints, as a shared join line has
        workers: list[Worker] = []

        async def rows(since: float = 0.0) -> list[dict]:
            found = []
            for worker in workers:
                found += await ask(worker, {"cmd": "stats", "speaker": speaker, "since": since})
            return found

        try:
            for w in range(WORKERS):
                specs = [NodeSpec(f"relay{w}", RELAY_SLOTS)] + [
                    NodeSpec(f"leaf{w}.{i}", LEAF_SLOTS,
                             str(tmp_path / f"leaf{w}.{i}.wav") if i == 0 else None)
                    for i in range(LEAVES_PER_WORKER)]
                workers.append(Worker(key, boot, specs))
            for worker in workers:
                await asyncio.to_thread(worker.expect, 120)

            # 1. Everyone hears the speaker, within every node's cap, two levels deep at most.
            deadline = time.time() + 60
            while time.time() < deadline:
                now = await rows(time.time() - 1.0)
                if all(r["frames_since"] >= 30 for r in now):
                    break
                await asyncio.sleep(1)
            deaf = [r for r in now if r["frames_since"] < 30]
            everyone_heard = time.time()
            assert deaf == [], "\n\n".join(_brief(r, host) for r in deaf)
            assert len(now) == WORKERS * (1 + LEAVES_PER_WORKER)
            # The sequencer's plan attaches everyone it knows of, two levels deep at most. (Under
            # CPU starvation it can lose sight of a member whose presence gossip was dropped for
            # 30 s; that member keeps its parent and is checked by what it hears, above.)
            stats = host.coordinator.statistics()
            assert stats["attached"] == stats["audience"] and stats["max_depth"] <= 2, stats
            assert stats["audience"] >= len(now) - 2, stats
            assert host.media.children() <= HOST_SLOTS
            assert all(r["children"] <= r["slots"] for r in now)
            assert sum(r["forwarded"] for r in now if r["name"].startswith("relay")) > 0

            # 2. An unpromoted listener sends a tone: the first node it reaches drops it.
            rogue = (await ask(workers[0], {"cmd": "rogue", "index": 3, "hz": 1000}))["rogue"]
            await asyncio.sleep(3)
            now = await rows()
            assert all(rogue not in r["other_speakers"] for r in now)
            assert lab.logs[host].last(PublicKey.from_peer_id(rogue)) is None
            dropped = sum(sum(r["dropped"].values()) for r in now)
            dropped += host.media.forwarder.rejections.total()
            assert dropped > 50

            # 3. A relay dies as on SIGKILL: its children hear again within two seconds.
            # The victim: a relay some listener hangs from (its standby children do not count),
            # once the room is steady — its children's standby links to their backups up, as in
            # a room that has run a while (the first seconds of a room reshuffle backups; a
            # listener without one repairs by signalling, which on this box can take longer).
            steady_by = time.time() + 20
            while True:
                before = await rows()
                parents = {r["parent"] for r in before}
                victims = []
                for worker in workers:
                    for index, row in enumerate(await ask(worker, {"cmd": "stats",
                                                                   "speaker": speaker})):
                        if row["name"].startswith("relay") and row["peer_id"] in parents:
                            children = [r for r in before if r["parent"] == row["peer_id"]]
                            covered = sum(r["standby_up"] for r in children)
                            victims.append((covered == len(children), covered, worker, index,
                                            row))
                victims.sort(key=lambda v: (v[0], v[1]), reverse=True)
                if victims[0][0] or time.time() > steady_by:
                    break
                await asyncio.sleep(1)
            _, _, worker, index, row = victims[0]
            orphans = {r["name"] for r in before if r["parent"] == row["peer_id"]}
            standby = {r["name"] for r in before if r["name"] in orphans and r["standby_up"]}
            assert orphans
            killed = (await ask(worker, {"cmd": "kill", "index": index}))["at"]
            await asyncio.sleep(6)
            after = {r["name"]: r for r in await rows(killed - 0.5)}
            for name in orphans:
                row = after[name]
                back = row["last"] is not None and row["last"] > time.time() - 0.5
                assert back and (row["max_gap_since"] or 99) <= 2.0, (
                    f"{len(standby)} of {len(orphans)} orphans had a standby link up\n"
                    + _brief(row, host))
        finally:
            closing = time.time()
            await asyncio.gather(*(asyncio.to_thread(w.close) for w in workers))
        # The sampled listeners' recordings hold the tone (by spectrum) apart from the edges
        # and, for an orphan, the repair gap of at most 2 s.
        for w in range(WORKERS):
            pcm, _ = read_wav(tmp_path / f"leaf{w}.0.wav")
            # From when everyone was heard to the end (a recording starts at its node's join,
            # while the other nodes of its process are still joining).
            end = len(pcm) / 48_000
            start, stop = end - (closing - everyone_heard) + 1.0, end - 1.0
            # Allowed silence: an orphan's repair (at most 2 s) and a window's edge.
            assert share_with(pcm, 440, start, stop) >= 1 - 2.5 / (stop - start)


def _brief(row: dict, host) -> str:  # type: ignore[no-untyped-def]
    """The facts that explain an orphan that did not come back, in full (pytest cuts dicts)."""
    plan = host.coordinator.statistics() if host.coordinator else {}
    return "\n".join(f"{key}={value}" for key, value in (*row.items(), ("coordinator", plan)))


async def test_a_relay_that_neither_speaks_nor_plays_forwards_without_an_audio_clock(tmp_path):
    """``p2pvoix relay``'s audio settings: no input, no playout, no sink. It runs no 20 ms
    audio clock at all, yet its child hears the speaker through it."""
    async with Lab(tmp_path) as lab:
        host = await lab.host("host", 440, capacity=CapacityPolicy(max_slots=1, measure=False))
        relay = await lab.join("relay", audio=RELAY_AUDIO,
                               capacity=CapacityPolicy(max_slots=1, measure=False))
        await lab.until(lambda: relay.media.parent == host.me
                        and relay.media.links.is_up(host.me), 15)
        listener = await lab.join("listener",
                                  capacity=CapacityPolicy(max_slots=0, measure=False))
        await lab.until(lambda: listener.media.parent == relay.me
                        and lab.logs[listener].last(host.me) is not None, 15)
        heard_from = lab.at(listener, lab.logs[listener].first_after(host.me, 0.0))
        await asyncio.sleep(2.0)
        engine = relay.media.statistics()["engine"]
        assert engine["ticks"] == 0 and engine["streams"] == {}
        assert relay.media.forwarder.statistics()["forwarded"] > 50
        assert listener.media.statistics()["engine"]["ticks"] > 50  # the listener's clock runs
        recorded_to = lab.at(listener, time.monotonic())
    pcm = lab.recording(listener)
    assert share_with(pcm, 440, heard_from + 0.3, recorded_to) >= 0.9
