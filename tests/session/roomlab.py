"""Building real rooms in one test process: nodes with their own identities and hosts, one trio
thread shared among them, real WebRTC links on loopback and real audio (tones, recordings)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from p2pvoix.audio.spec import NoneSpec, ToneSpec
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.identity.store import Identity
from p2pvoix.mesh.capacity import CapacityPolicy
from p2pvoix.mesh.forwarding import Send
from p2pvoix.node.bridge import Portal
from p2pvoix.node.config import NodeConfig
from p2pvoix.node.runtime import Node
from p2pvoix.room import Op
from p2pvoix.session.events import Left
from p2pvoix.session.media import AudioSettings
from p2pvoix.session.room import RoomSession
from tests.audiotools import read_wav, tone_presence

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
# Every node of a lab shares one process, whose CPU time says nothing about one node: measured,
# each node would count all six nodes' work as its own relaying and advertise no slots (seen on a
# slow box: the stage fell to 0 slots within a second, the planner hung listeners from listeners,
# then from nobody). Lab nodes advertise a fixed count unless a test gives its own policy.
SHARED_PROCESS = CapacityPolicy(measure=False)


class DeliveryLog:
    """Wraps a session's audio engine to record when each speaker's frames reach playout."""

    def __init__(self, session: RoomSession) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        engine = session.media.engine
        deliver = engine.deliver

        def logged(stream_id, seq, payload, arrival_ms=None):  # type: ignore[no-untyped-def]
            self.times[str(stream_id)].append(time.monotonic())
            deliver(stream_id, seq, payload, arrival_ms)

        engine.deliver = logged  # type: ignore[method-assign]

    def last(self, speaker: PublicKey) -> float | None:
        times = self.times.get(speaker.peer_id)
        return times[-1] if times else None

    def first_after(self, speaker: PublicKey, moment: float) -> float | None:
        return next((t for t in self.times.get(speaker.peer_id, []) if t >= moment), None)


class Lab:
    """A room under test: ``await lab.host(...)``, ``await lab.join(...)``; all cleaned up."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.portal = Portal()
        self.nodes: list[Node] = []
        self.sessions: list[RoomSession] = []
        self.logs: dict[RoomSession, DeliveryLog] = {}
        self.started: dict[RoomSession, float] = {}  # when its engine (and recording) began
        self._count = 0

    async def __aenter__(self) -> Lab:
        await self.portal.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(s.leave() for s in self.sessions), return_exceptions=True)
        killed = [s for s in self.sessions if getattr(s, "killed", False)]
        await asyncio.gather(*(s.media.stop() for s in killed), return_exceptions=True)
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)
        await self.portal.stop()
        await asyncio.sleep(0.05)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, f"tasks left behind: {leftover}"

    async def node(self, name: str) -> Node:
        self._count += 1
        identity = Identity(SigningKey(os.urandom(32)), None)
        object.__setattr__(identity, "profile", None)
        boot = (self.nodes[0].addrs()[0],) if self.nodes else ()
        config = NodeConfig(home=self.tmp, listen=LOOPBACK, lan=False, bootstrap=boot)
        node = Node(identity, config, portal=self.portal)
        await node.start()
        self.nodes.append(node)
        return node

    def audio(self, name: str, hz: int | None, record: bool = True) -> AudioSettings:
        """A tone (or no input), and a recording of what the node hears unless ``record`` is
        False (recording costs nothing much, but a room of forty only needs a sample)."""
        return AudioSettings(
            source=ToneSpec(hz) if hz else NoneSpec(),
            record=self.tmp / f"{name}.wav" if record else None,
        )

    async def host(self, name: str = "host", hz: int | None = 440, record: bool = True,
                   **kw) -> RoomSession:
        node = await self.node(name)
        kw.setdefault("capacity", SHARED_PROCESS)
        session = await RoomSession.host(node, title="Lab room",
                                         audio=self.audio(name, hz, record), **kw)
        return self._keep(session, name)

    async def join(self, name: str, hz: int | None = None, record: bool = True,
                   audio: AudioSettings | None = None, **kw) -> RoomSession:
        node = await self.node(name)
        host = self.sessions[0]
        kw.setdefault("capacity", SHARED_PROCESS)
        session = await RoomSession.join(node, RoomKey(host.room),
                                         audio=audio or self.audio(name, hz, record), **kw)
        return self._keep(session, name)

    def _keep(self, session: RoomSession, name: str) -> RoomSession:
        session.name = name
        self.started[session] = time.monotonic()
        self.sessions.append(session)
        self.logs[session] = DeliveryLog(session)
        return session

    async def promote(self, moderator: RoomSession, who: RoomSession) -> None:
        """Hand raise → invitation → acceptance → unmute, as a person would do it."""
        await self.until(lambda: who.me in moderator.roster or who.me == moderator.me, 10)
        await who.act(Op.RAISE_HAND)
        await moderator.act(Op.INVITE, who.me)
        await self.until(lambda: who.me in who.state.invited, 5)
        await who.act(Op.ACCEPT_INVITE)
        await who.act(Op.SELF_UNMUTE)

    async def until(self, predicate, timeout: float) -> float:
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    def at(self, session: RoomSession, moment: float) -> float:
        """``moment`` (monotonic) as seconds into ``session``'s recording."""
        return moment - self.started[session]

    def recording(self, session: RoomSession) -> np.ndarray:
        pcm, rate = read_wav(self.tmp / f"{session.name}.wav")
        assert rate == 48_000
        return pcm


def make_rogue(session: RoomSession) -> None:
    """A modified client: it sends its microphone on every link whatever the room state says."""
    media = session.media
    update = media.update

    def always_unmuted(state, present):  # type: ignore[no-untyped-def]
        update(state, present)
        media.engine.muted = False

    def send_everywhere(data: bytes):  # type: ignore[no-untyped-def]
        links = tuple(link.id for link in media.links.links().values() if link.up)
        return [Send(links, data)] if links else []

    media.update = always_unmuted  # type: ignore[method-assign]
    media.forwarder.own_audio = send_everywhere  # type: ignore[method-assign]
    media.engine.muted = False


async def kill_abruptly(session: RoomSession) -> None:
    """As on SIGKILL: the node stops sending anything at once and says no goodbye."""
    for link in session.media.links.links().values():
        link.rtc.send = lambda data: None
    session.media.links.send = lambda *args: None
    for task in list(session._tasks._tasks):
        task.cancel()
    await session.node.p2p.stop()
    session._left = Left("killed", "")  # dead: it will not say goodbye when the lab closes
    session._closed.set()
    session.killed = True  # (its media is released at the end, so no task is left behind)


def share_with(pcm: np.ndarray, hz: float, start_s: float = 0.0, end_s: float | None = None,
               window_ms: float = 100) -> float:
    """Share of the windows between ``start_s`` and ``end_s`` in which tone ``hz`` is present."""
    windows = tone_presence(pcm, 48_000, [hz], window_ms)[:, 0]
    per_s = 1000 / window_ms
    chosen = windows[int(start_s * per_s): None if end_s is None else int(end_s * per_s)]
    return float(np.mean(chosen)) if len(chosen) else 0.0


@contextlib.contextmanager
def gossip_lost(session: RoomSession):  # type: ignore[no-untyped-def]
    """While inside, nothing ``session`` publishes on the room topic reaches anyone."""
    publish = session._publish

    async def lost(data: bytes) -> None:
        return None

    session._publish = lost  # type: ignore[method-assign]
    try:
        yield
    finally:
        session._publish = publish  # type: ignore[method-assign]


@contextlib.contextmanager
def timer():
    started = time.monotonic()
    yield lambda: time.monotonic() - started
