"""Rooms too big for one Python process: worker processes, each running a group of real nodes.

Each worker (a spawned process, so it owns its own GIL, trio thread and asyncio loop) starts its
nodes, joins them to the room, and then answers commands from the test over a pipe: ``stats``
(what each node heard and where it sits in the relay tree), ``kill`` (one node dies as on
SIGKILL: its media falls silent and its sockets close, no goodbye), ``rogue`` (one node sends a
tone without being on stage) and ``quit`` (everyone leaves cleanly, the process exits). Times are
wall-clock seconds, comparable across processes on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    slots: int
    record: str | None = None  # a .wav path: this node records what it hears


class Worker:
    """One worker process; ``call`` sends a command and waits for its answer."""

    def __init__(self, room_key: str, bootstrap: str, specs: list[NodeSpec]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=_main, args=(child, room_key, bootstrap, specs),
                                       daemon=True)
        self.process.start()
        child.close()

    def call(self, command: dict[str, Any], timeout: float = 60) -> Any:
        self.pipe.send(command)
        return self.expect(timeout)

    def expect(self, timeout: float) -> Any:
        if not self.pipe.poll(timeout):
            raise AssertionError(f"worker {self.process.pid} silent for {timeout} s: {self.command}")
        answer = self.pipe.recv()
        if isinstance(answer, dict) and "error" in answer:
            raise AssertionError(f"worker failed: {answer['error']}")
        return answer

    command = ""

    def close(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self.pipe.send({"cmd": "quit"})
                self.pipe.poll(30) and self.pipe.recv()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.pipe.close()


def _main(pipe: Connection, room_key: str, bootstrap: str, specs: list[NodeSpec]) -> None:
    if os.environ.get("P2PVOIX_WORKER_LOG"):  # a directory: each worker logs there, for debugging
        import logging
        logging.basicConfig(
            filename=Path(os.environ["P2PVOIX_WORKER_LOG"]) / f"worker-{specs[0].name}.log",
            format="%(created).3f %(name)s %(message)s", level=logging.WARNING)
        logging.getLogger("p2pvoix").setLevel(logging.DEBUG)
    try:
        asyncio.run(_serve(pipe, room_key, bootstrap, specs))
    except Exception as exc:  # report, so the test shows why instead of timing out
        traceback.print_exc()
        with contextlib.suppress(Exception):
            pipe.send({"error": f"{type(exc).__name__}: {exc}"})


async def _serve(pipe: Connection, room_key: str, bootstrap: str, specs: list[NodeSpec]) -> None:
    from p2pvoix.audio.spec import NoneSpec
    from p2pvoix.crypto.keys import SigningKey
    from p2pvoix.crypto.roomkey import RoomKey
    from p2pvoix.identity.store import Identity
    from p2pvoix.mesh.capacity import CapacityPolicy
    from p2pvoix.node.bridge import Portal
    from p2pvoix.node.config import NodeConfig
    from p2pvoix.node.runtime import Node
    from p2pvoix.session.media import AudioSettings
    from p2pvoix.session.room import RoomSession

    portal = Portal()
    await portal.start()
    nodes, sessions, heard = [], [], []
    key = RoomKey.parse(room_key)
    try:
        for spec in specs:
            config = NodeConfig(home=Path("/nonexistent"), listen=LOOPBACK, lan=False,
                                bootstrap=(bootstrap,))
            node = Node(Identity(SigningKey(os.urandom(32)), None), config, portal=portal)
            await node.start()
            nodes.append(node)
            # Only the sampled nodes decode (they record); the others verify, forward and count
            # frames like a headless relay, which is what lets forty fit on two cores.
            audio = AudioSettings(source=NoneSpec(), record=Path(spec.record) if spec.record
                                  else None, playout=spec.record is not None)
            session = await RoomSession.join(
                node, key, audio=audio, timeout=30,
                capacity=CapacityPolicy(max_slots=spec.slots, measure=False))
            session.name = spec.name
            session.started = time.time()  # its audio clock (and recording) starts now
            sessions.append(session)
            heard.append(_record_deliveries(session))
        pipe.send({"ready": [s.me.peer_id for s in sessions],
                   "started": [s.started for s in sessions]})
        while True:
            while not pipe.poll():
                await asyncio.sleep(0.02)
            command = pipe.recv()
            if command["cmd"] == "quit":
                break
            pipe.send(await _do(command, sessions, heard))
    finally:
        await asyncio.gather(*(s.leave() for s in sessions if s.left is None),
                             return_exceptions=True)
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)
        await portal.stop()
        with contextlib.suppress(Exception):
            pipe.send({"bye": True})


def _record_deliveries(session: Any) -> dict[str, list[float]]:
    """When each speaker's frames passed this node's forwarding rules (to be played or not)."""
    from p2pvoix.mesh.forwarding import Play

    times: dict[str, list[float]] = {}
    media = session.media
    run = media._run

    def logged(actions):  # type: ignore[no-untyped-def]
        for action in actions:
            if isinstance(action, Play):
                times.setdefault(action.speaker.peer_id, []).append(time.time())
        run(actions)

    media._run = logged
    return times


async def _do(command: dict[str, Any], sessions: list[Any], heard: list[dict]) -> Any:
    if command["cmd"] == "stats":
        speaker = command["speaker"]
        since = command.get("since", 0.0)
        out = []
        for session, times in zip(sessions, heard, strict=True):
            mine = times.get(speaker, [])
            recent = [t for t in mine if t >= since]
            assignment = session.plan.assignment
            out.append({
                "name": session.name,
                "peer_id": session.me.peer_id,
                "last": mine[-1] if mine else None,
                "first_since": recent[0] if recent else None,
                "frames_since": len(recent),
                "max_gap_since": max((b - a for a, b in zip(recent, recent[1:], strict=False)),
                                     default=None),
                "parent": assignment.parent.peer_id if assignment and assignment.parent else None,
                "children": session.media.children(),
                "standby_up": (session.media.backup is not None
                               and session.media.links.is_up(session.media.backup)),
                "slots": session.media.slots,
                "dropped": dict(session.media.forwarder.rejections.statistics()),
                "forwarded": session.media.forwarder.forwarded,
                "other_speakers": sorted(k for k in times if k != speaker),
                "links": {peer.peer_id[-4:]: [link.up, link.initiator, link.role_asked]
                          for peer, link in session.media.links.links().items()},
                "link_rejections": dict(session.media.links.rejections.statistics()),
            })
        return out
    index = command["index"]
    session = sessions[index]
    if command["cmd"] == "kill":
        from tests.session.roomlab import kill_abruptly

        await kill_abruptly(session)
        return {"killed": session.me.peer_id, "at": time.time()}
    if command["cmd"] == "rogue":
        from p2pvoix.audio.opus import OpusEncoder
        from p2pvoix.audio.sources import ToneSource
        from tests.session.roomlab import make_rogue

        engine = session.media.engine
        engine._source = ToneSource(command["hz"])
        engine._encoder = OpusEncoder(32000)
        if not engine._started:  # a listener without input or playout runs no audio clock
            session.media._tasks.spawn(engine.run(), "audio engine")
        make_rogue(session)
        return {"rogue": session.me.peer_id}
    return {"error": f"unknown command {command}"}
