"""Voice rooms end to end on loopback: real nodes, real WebRTC links, real Opus, recordings
checked by spectrum, and the room state enforced on media at every node."""

from __future__ import annotations

import asyncio
import os
import re
import time

import pytest

from p2pvoix.cli.live import share_key
from p2pvoix.crypto import cbor
from p2pvoix.crypto.envelope import CONTEXT
from p2pvoix.crypto.keys import SigningKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.mesh.forwarding import DropReason
from p2pvoix.node.runtime import Contact
from p2pvoix.room import Op
from p2pvoix.session.room import RoomSession
from p2pvoix.session.signalling import PROTOCOL, SignalReason
from tests.audiotools import read_wav
from tests.session.procrooms import NodeSpec, Worker
from tests.session.roomlab import Lab, make_rogue, share_with

LISTENER_SLOTS = 4  # what a lab node advertises (roomlab.SHARED_PROCESS: INITIAL_SLOTS)

pytestmark = pytest.mark.async_timeout(120)


async def test_every_listener_hears_every_speaker_and_a_promoted_listener_is_heard_by_all(
    tmp_path,
):
    """Six nodes in two processes: the stage and the listener to be promoted here, two listeners
    and a rogue in a worker. (All six in one process measured that process, not the room: on a
    slow 2-core box it ran near one full core, and every join or promotion stalled all six audio
    clocks at once, 100 ms holes a node of its own never has.)"""
    async with Lab(tmp_path) as lab:
        host = await lab.host("host", 440)
        second = await lab.join("second", 660)
        await lab.promote(host, second)
        promoted = await lab.join("promoted", 880)  # its tone stays home while it is audience
        others = ("listener1", "listener2", "rogue")
        worker = Worker(share_key(host.room, host.node).text(), host.node.addrs()[0], [
            NodeSpec(name, LISTENER_SLOTS, None if name == "rogue" else str(tmp_path / f"{name}.wav"))
            for name in others])
        try:
            ready = await asyncio.to_thread(worker.expect, 120)
            started = dict(zip(others, ready["started"], strict=True))  # wall clock

            async def rows(speaker, since: float = 0.0) -> dict[str, dict]:
                found = await asyncio.to_thread(
                    worker.call, {"cmd": "stats", "speaker": speaker.peer_id, "since": since})
                return {row["name"]: row for row in found}

            def hears(session, speaker):
                return lab.logs[session].last(speaker.me) is not None

            async def everyone_hears_the_stage() -> bool:
                remote = [await rows(host.me), await rows(second.me)]
                return (hears(promoted, host) and hears(promoted, second)
                        and all(r[name]["last"] for r in remote for name in others[:2]))

            await until(everyone_hears_the_stage, 20)
            await asyncio.to_thread(worker.call, {"cmd": "rogue", "index": 2, "hz": 1000})
            # The rogue hangs from the tree like any listener: its clock starts once it has a link.
            await until(lambda: _rogue_linked(rows, host), 10)
            both_on_stage = (time.monotonic(), time.time())
            await asyncio.sleep(3)

            await lab.promote(host, promoted)
            unmuted = (time.monotonic(), time.time())
            for session in (host, second):
                await lab.until(lambda s=session: lab.logs[s].first_after(promoted.me, unmuted[0]),
                                5)
                assert lab.logs[session].first_after(promoted.me, unmuted[0]) - unmuted[0] <= 1.0

            async def remote_heard_promoted() -> bool:
                now = await rows(promoted.me, unmuted[1])
                return all(now[name]["first_since"] for name in others[:2])

            await until(remote_heard_promoted, 5)
            now = await rows(promoted.me, unmuted[1])
            for name in others[:2]:
                assert now[name]["first_since"] - unmuted[1] <= 1.0, name
            # Long enough that 95 % means something: over 1.5 s (15 windows of 100 ms) it meant
            # "not one window missed".
            await asyncio.sleep(4.5)
            leaving = (time.monotonic(), time.time())
            final = await rows(host.me)
            for session in lab.sessions:
                await session.leave()
        finally:
            await asyncio.to_thread(worker.close)  # its nodes leave; recordings are finalised

        def recording(name):
            if name in started:
                pcm, rate = read_wav(tmp_path / f"{name}.wav")
                assert rate == 48_000
                return pcm, lambda moment: moment[1] - started[name]
            session = next(s for s in lab.sessions if s.name == name)
            return lab.recording(session), lambda moment: lab.at(session, moment[0])

        for name in ("promoted", *others[:2]):
            pcm, at = recording(name)
            window = (at(both_on_stage) + 0.3, at(unmuted))
            assert share_with(pcm, 440, *window) >= 0.95, name
            assert share_with(pcm, 660, *window) >= 0.95, name
        # The promotion is a planned move: the promoted node keeps the links that fed it until
        # its stage links are up, so it hears the stage through it without a gap (a 1 s hole is
        # 10 of these ~65 windows).
        pcm, at = recording("promoted")
        for hz in (440, 660):
            assert share_with(pcm, hz, at(unmuted) - 1.0, at(leaving)) >= 0.95, hz
        for name in ("host", "second", *others[:2]):
            pcm, at = recording(name)
            assert share_with(pcm, 880, at(unmuted) + 1.0, at(leaving)) >= 0.95, name
            assert share_with(pcm, 1000) == 0.0, f"{name} heard the unpromoted rogue"
        # The rogue's stream died at the first node that received it.
        # (In a tree the first node may be a relaying listener, not a speaker.)
        reason = str(DropReason.NOT_AUDIBLE)
        dropped = sum(s.media.forwarder.rejections[reason] for s in lab.sessions)
        dropped += sum(row["dropped"].get(reason, 0) for name, row in final.items()
                       if name != "rogue")
        assert dropped > 50, (final, [s.media.statistics() for s in lab.sessions])


async def _rogue_linked(rows, host) -> bool:
    links = (await rows(host.me))["rogue"]["links"]
    return any(up for up, _initiator, _role in links.values())


async def until(predicate, timeout: float) -> None:
    """Like ``Lab.until``, for a predicate that asks a worker (a coroutine function)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("op", ["mute", "demote", "remove", "ban"])
async def test_a_speaker_who_ignores_the_room_is_silenced_everywhere_within_a_second(tmp_path, op):
    async with Lab(tmp_path) as lab:
        host = await lab.host("host", 440)
        speaker = await lab.join("speaker", 880)
        listeners = [await lab.join(f"listener{i}", None) for i in range(2)]
        await lab.promote(host, speaker)
        make_rogue(speaker)  # from now on it keeps sending whatever it is told
        others = [host, *listeners]
        await lab.until(lambda: all(lab.logs[s].last(speaker.me) for s in others), 10)
        await asyncio.sleep(0.5)

        if op == "mute":
            await host.act(Op.MUTE, speaker.me, lock=True)
        elif op == "demote":
            await host.act(Op.DEMOTE, speaker.me)
        else:
            await host.act(Op.REMOVE if op == "remove" else Op.BAN, speaker.me)
        decided = time.monotonic()
        await asyncio.sleep(2.0)
        for session in others:
            last = lab.logs[session].last(speaker.me)
            assert last - decided <= 1.0, f"{session.name} still played it {last - decided:.2f} s on"
        if op in ("remove", "ban"):
            await lab.until(lambda: speaker.left is not None, 5)
            assert speaker.left.reason == ("banned" if op == "ban" else "removed")
        # Everyone still hears the host.
        for listener in listeners:
            assert time.monotonic() - lab.logs[listener].last(host.me) < 0.5


def _tamper(reply: bytes, mode: str, relay: SigningKey) -> bytes:
    """What a man in the middle of signalling could do to the host's signed answer."""
    value = cbor.decode(reply, max_size=1 << 20)
    body = value["b"]
    if mode == "swap-sdp-fingerprint":  # point DTLS at the relay's certificate
        sdp = body["sdp"].decode()
        body["sdp"] = re.sub(r"a=fingerprint:sha-256 \S+", "a=fingerprint:sha-256 " +
                             ":".join(["AB"] * 32), sdp).encode()
        return cbor.encode(value)
    # "re-sign": replace the signature with the relay's own, over the same answer
    unsigned = {k: v for k, v in value.items() if k != "x"}
    unsigned["s"] = relay.public.raw
    return cbor.encode({**unsigned, "x": relay.sign(CONTEXT + cbor.encode(unsigned))})


@pytest.mark.parametrize(("mode", "reason"), [
    ("swap-sdp-fingerprint", "bad-signature"),
    ("re-sign", SignalReason.NOT_THE_PEER),
])
async def test_a_tampering_relay_in_the_signalling_path_is_caught(tmp_path, mode, reason):
    """Each answer's SDP and fingerprints are signed by the answering identity: a relay that
    changes them, or signs them itself, makes the link abort before any media flows."""
    async with Lab(tmp_path) as lab:
        host = await lab.host("host", 440)
        node = await lab.node("victim")
        relay = SigningKey(os.urandom(32))

        async def through_the_relay(peer_id: str, payload: bytes) -> bytes:
            await node.connect(Contact(peer_id, ()))
            reply = await node.room_request(peer_id, PROTOCOL, host.room.raw, payload)
            return _tamper(reply, mode, relay)

        victim = await RoomSession.join(node, RoomKey(host.room), audio=lab.audio("victim", None),
                                        signal_transport=through_the_relay)
        lab._keep(victim, "victim")
        await lab.until(lambda: victim.media.links.rejections[reason] >= 1, 10)
        await asyncio.sleep(0.5)
        assert not victim.media.links.is_up(host.me)
        assert lab.logs[victim].last(host.me) is None
