"""The demo's plain listeners, in worker processes of their own.

Fifteen nodes in one Python process saturate it: py-libp2p for all of them runs in one trio
thread, which held the interpreter 80 % of a demo run on a 2-core box (pubsub, yamux window
updates, Noise), and every listener lost frames while the box's second core sat idle. The
listeners with no part in the script — neither the featured listener nor one who will speak —
run in ``PROCESSES`` worker processes (``python -m p2pvoix.demo.crowd``), each with its own trio
thread, driven by JSON lines on their standard input and output. They are full nodes like the
others; they forward and count what they play without decoding it. Plain subprocesses rather than
``multiprocessing``: its spawn start method leaves a resource-tracker process that outlives the
demo by a moment.

Commands (``cmd``): ``join`` a listener (``name``, ``slots``; the reply is its public key, hex),
``measure`` (latencies count from now on), ``report`` (what each played, per speaker key). End of
input is the cue to leave: every node says goodbye and the process ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.demo.summary import StreamTally
from p2pvoix.identity.profile import Profile
from p2pvoix.identity.store import Identity
from p2pvoix.mesh.capacity import CapacityPolicy
from p2pvoix.mesh.forwarding import Play
from p2pvoix.node.bridge import Portal
from p2pvoix.node.config import NodeConfig
from p2pvoix.node.logtag import tagged
from p2pvoix.node.runtime import Node
from p2pvoix.session.media import AudioSettings
from p2pvoix.session.room import RoomSession

PROCESSES = 2
LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
JOIN_TIMEOUT_S = 20.0
REPLY_TIMEOUT_S = 60.0  # a join (its own timeout is JOIN_TIMEOUT_S) or a report
LEAVE_GRACE_S = 15.0  # after the pipe closes, before a worker is killed


def tap_plays(session: RoomSession, on_play: Callable[[Play], None]) -> None:
    """Call ``on_play`` for every frame the session's forwarder hands to playout."""
    forwarder = session.media.forwarder
    on_frame = forwarder.on_frame

    def tapped(link: str, data: bytes, now_ms: float):  # type: ignore[no-untyped-def]
        actions = on_frame(link, data, now_ms)
        for action in actions:
            if isinstance(action, Play):
                on_play(action)
        return actions

    forwarder.on_frame = tapped  # type: ignore[method-assign]


def latency_ms(play: Play) -> int:
    """Capture (the frame's wall-clock stamp) to now, in ms: one machine, one clock."""
    return (int(time.time() * 1000) - play.frame.origin_ms) & 0xFFFFFFFF


@dataclass
class Hearing:
    """What one listener played: how long after its join began it first heard anything, and a
    tally per speaker (by name in the main process, by public key in hex in a crowd's report)."""

    began: float = field(default_factory=time.monotonic)
    first_audio_s: float | None = None
    streams: dict[str, StreamTally] = field(default_factory=dict)

    def played(self, speaker: str, play: Play, measuring: bool) -> None:
        """One frame handed to playout; its latency counts only while ``measuring``."""
        now = time.monotonic()
        if self.first_audio_s is None:
            self.first_audio_s = now - self.began
        self.streams.setdefault(speaker, StreamTally()).add(
            play.frame.seq, latency_ms(play) if measuring else None, now)


async def start_node(name: str, portal: Portal, bootstrap: tuple[str, ...]) -> Node:
    """A fresh identity on loopback, no LAN discovery, nothing written to disk."""
    key = SigningKey(os.urandom(32))
    identity = Identity(key, Profile.create(key, name, int(time.time() * 1000)))
    config = NodeConfig(home=Path("/nonexistent"), listen=LOOPBACK, lan=False,
                        bootstrap=bootstrap)
    node = Node(identity, config, portal=portal)
    await node.start()
    return node


class Crowd:
    """The worker processes, from the main process: listeners join one at a time, in order."""

    def __init__(self, key: RoomKey, bootstrap: str) -> None:
        self._args = [key.text(), bootstrap]
        self._workers: list[subprocess.Popen[str]] = []
        self._joined = 0

    async def join(self, name: str, slots: int) -> bytes:
        """Join ``name`` in the next worker (round robin); returns its public key."""
        if len(self._workers) < PROCESSES:
            self._workers.append(subprocess.Popen(
                [sys.executable, "-m", "p2pvoix.demo.crowd", *self._args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        worker = self._workers[self._joined % len(self._workers)]
        self._joined += 1
        _send(worker.stdin, {"cmd": "join", "name": name, "slots": slots})
        return bytes.fromhex((await _reply(worker, f"{name}'s join"))["joined"])

    def measure(self) -> None:
        for worker in self._workers:
            _send(worker.stdin, {"cmd": "measure"})

    async def report(self) -> dict[str, Hearing]:
        """What each listener heard (speakers by public key, hex)."""
        for worker in self._workers:
            _send(worker.stdin, {"cmd": "report"})
        found: dict[str, Hearing] = {}
        for worker in self._workers:
            for name, heard in (await _reply(worker, "the listeners' tallies")).items():
                found[name] = Hearing(
                    first_audio_s=heard["join_s"],
                    streams={key: _tally(t) for key, t in heard["streams"].items()})
        return found

    async def close(self) -> None:
        """Every worker's listeners leave (end of input); a worker still running after
        ``LEAVE_GRACE_S`` is killed. Always waited for."""
        for worker in self._workers:
            if worker.stdin is not None and not worker.stdin.closed:
                worker.stdin.close()
        for worker in self._workers:
            try:
                await asyncio.to_thread(worker.wait, LEAVE_GRACE_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                await asyncio.to_thread(worker.wait)
            if worker.stdout is not None:
                worker.stdout.close()
        self._workers.clear()


def _send(stream: IO[str] | None, message: dict[str, Any]) -> None:
    assert stream is not None
    stream.write(json.dumps(message) + "\n")
    stream.flush()


async def _reply(worker: subprocess.Popen[str], what: str) -> Any:
    assert worker.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline),
                                      REPLY_TIMEOUT_S)
    except TimeoutError:
        worker.kill()  # its reader thread then sees the end of the pipe
        raise RuntimeError(f"no reply with {what} within {REPLY_TIMEOUT_S:.0f} s") from None
    if not line:
        raise RuntimeError(f"a listener process ended before sending {what}")
    message = json.loads(line)
    if "error" in message:
        raise RuntimeError(f"a listener process failed before sending {what}: "
                           f"{message['error']}")
    return message


def _tally(data: dict[str, Any]) -> StreamTally:
    return StreamTally(data["first_at"], set(data["seqs"]), data["latencies_ms"])


# -- in the worker -------------------------------------------------------------------------


def worker_main(key_text: str, bootstrap: str) -> None:
    # Ctrl-C reaches the whole process group: the main process decides, and closes our input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve(RoomKey.parse(key_text), bootstrap))


async def _serve(key: RoomKey, bootstrap: str) -> None:
    portal = Portal()
    await portal.start()
    nodes: list[Node] = []
    sessions: list[RoomSession] = []
    heard: dict[str, Hearing] = {}
    measuring = asyncio.Event()  # latencies count once everyone has joined
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            asked = json.loads(line)
            if asked["cmd"] == "join":
                name = asked["name"]
                try:
                    with tagged(name):
                        node = await start_node(name, portal, (bootstrap,))
                        nodes.append(node)
                        hearing = Hearing()  # from here, as in the main process
                        session = await RoomSession.join(
                            node, key, audio=AudioSettings(playout=False),
                            capacity=CapacityPolicy(max_slots=asked["slots"], measure=False),
                            timeout=JOIN_TIMEOUT_S)
                except Exception as exc:  # told to the main process, which ends the demo
                    _answer({"error": f"{type(exc).__name__}: {exc}"})
                    continue
                sessions.append(session)
                heard[name] = hearing

                def played(play: Play, hearing: Hearing = hearing) -> None:
                    hearing.played(play.speaker.raw.hex(), play, measuring.is_set())

                tap_plays(session, played)
                _answer({"joined": session.me.raw.hex()})
            elif asked["cmd"] == "measure":
                measuring.set()
            elif asked["cmd"] == "report":
                _answer({name: {
                    "join_s": hearing.first_audio_s,
                    "streams": {speaker: {"first_at": t.first_at, "seqs": sorted(t.seqs),
                                          "latencies_ms": t.latencies_ms}
                                for speaker, t in hearing.streams.items()}}
                    for name, hearing in heard.items()})
    finally:
        await asyncio.gather(*(s.leave() for s in sessions), return_exceptions=True)
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)
        await portal.stop()


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    worker_main(*sys.argv[1:3])
