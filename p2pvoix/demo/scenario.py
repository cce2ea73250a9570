"""The demo's room: real nodes, real links, real Opus on this machine, following a short script.

Cast: Amina hosts and speaks (French), Daan is on stage (English), a dozen listeners join — two
of them offer relay slots, so the audience hangs from a relay tree — and Youssef raises a hand
mid-way, is invited, accepts and asks a question. Zineb is the listener whose view is shown and
whose ears are recorded to ``demo.wav``. Every node is a full p2pvoix node with its own identity
and libp2p host (sharing one trio thread, as the benchmarks do), on loopback only.

The stage, Zineb and Youssef (who will speak) run in this process; the other listeners run in
worker processes (``crowd``): fifteen nodes in one Python process starved it. Only Zineb decodes
what she hears: the others have no speaker to play to, so they forward and count their frames
without decoding, as ``p2pvoix relay`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p2pvoix.audio.files import FileSource
from p2pvoix.audio.format import FRAME_SAMPLES
from p2pvoix.crypto.keys import PublicKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.demo.crowd import Crowd, Hearing, start_node, tap_plays
from p2pvoix.demo.summary import ListenerReport, Sent, Summary
from p2pvoix.mesh import wire
from p2pvoix.mesh.capacity import CapacityPolicy
from p2pvoix.node.bridge import Portal
from p2pvoix.node.logtag import tagged
from p2pvoix.node.realtime import freeze_startup_objects
from p2pvoix.node.runtime import Node
from p2pvoix.room import Op, hand_queue
from p2pvoix.session.media import AudioSettings
from p2pvoix.session.room import RoomSession

LISTENER_NAMES = ["Zineb", "Youssef", "Karim", "Sofia", "Mehdi", "Lina", "Omar", "Nadia",
                  "Bilal", "Emma", "Hamza", "Sara", "Noah", "Aya", "Rayan", "Ines"]
RELAY_NAMES = {"Karim", "Sofia"}  # they offer relay slots: the audience hangs from them
FEATURED = "Zineb"  # the listener whose view is shown and whose ears are recorded
ASKS = "Youssef"  # the listener who raises a hand and comes up to speak
HOST_SLOTS, RELAY_SLOTS, LISTENER_SLOTS = 3, 5, 1

# The script, in seconds after everyone has joined.
HOST_SPEAKS = 0.5
HAND_RAISED = 5.0
INVITED = 9.0
SPEAKER_SPEAKS = 13.0
QUESTION = 26.0
ENDS = 35.0

Emit = Callable[[dict[str, Any], str | None], None]


@dataclass(frozen=True)
class DemoConfig:
    listeners: int = 12
    record: Path | None = Path("demo.wav")


class ScheduledClip:
    """A speech clip that starts when told to; silence before and after (a ``Source``)."""

    def __init__(self, name: str) -> None:
        self._clip = FileSource(clip_path(name))
        self._start_at: float | None = None
        self.spoken_frames = 0
        self._ended = False

    def start_at(self, moment: float) -> None:
        self._start_at = moment

    def read(self) -> np.ndarray | None:
        if self._start_at is not None and time.monotonic() >= self._start_at and not self._ended:
            frame = self._clip.read()
            if frame is not None:
                self.spoken_frames += 1
                return frame
            self._ended = True
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def close(self) -> None:
        self._clip.close()


def clip_path(name: str) -> str:
    return str(importlib.resources.files("p2pvoix") / "assets" / name)


class Demo:
    """Runs the script; ``emit`` shows what happens (JSON lines, sentences, or the console)."""

    def __init__(self, config: DemoConfig, emit: Emit) -> None:
        self.config = config
        self.emit = emit
        self.portal = Portal()
        self.nodes: list[Node] = []
        self.sessions: dict[str, RoomSession] = {}
        self.heard: dict[str, Hearing] = {}  # every listener's, here or in the crowd
        self.clips: dict[str, ScheduledClip] = {}
        self.names: dict[bytes, str] = {}
        self.keys: dict[str, bytes] = {}  # every listener's public key, here or in the crowd
        self.crowd: Crowd | None = None
        self.featured: RoomSession | None = None
        self.depths: dict[str, int | None] = {}
        self.sent: dict[str, list[tuple[float, int]]] = {}
        self.until = 0.0
        self.started_at: float | None = None  # when the script began (everyone had joined)
        self.parents: dict[str, str | None] = {}

    async def run(self) -> Summary:
        await self.portal.start()
        try:
            await self._play()
            return self._summary()
        finally:
            await asyncio.gather(*(s.leave() for s in self.sessions.values()),
                                 return_exceptions=True)
            await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)
            if self.crowd is not None:
                await self.crowd.close()
            await self.portal.stop()

    async def _play(self) -> None:
        self.say("opening", "Amina opens the room “Couscous & stories”…")
        host = await self._host()
        key = RoomKey(host.room, host.me, ())
        daan = await self._join("Daan", key, clip="speech-en.ogg", slots=0)
        await self._promote(host, daan)
        self.say("on_stage", "Daan is on stage with Amina.")
        count = max(2, min(self.config.listeners, len(LISTENER_NAMES)))
        self.crowd = Crowd(key, self.nodes[0].addrs()[0])
        for name in LISTENER_NAMES[:count]:
            slots = RELAY_SLOTS if name in RELAY_NAMES else LISTENER_SLOTS
            if name in (FEATURED, ASKS):
                clip = "speech-question.ogg" if name == ASKS else None
                record = self.config.record if name == FEATURED else None
                await self._join(name, key, clip=clip, slots=slots, record=record)
            else:
                self.keys[name] = await self.crowd.join(name, slots)
                self.names[self.keys[name]] = name
        self.featured = self.sessions[FEATURED]
        self.say("joined", f"{count} listeners joined; two of them relay for the others.",
                 listeners=count)
        freeze_startup_objects()
        await self._script(host, daan, self.sessions[ASKS])

    async def _script(self, host: RoomSession, daan: RoomSession, youssef: RoomSession) -> None:
        t0 = self.started_at = time.monotonic()
        if self.crowd is not None:
            self.crowd.measure()
        self.clips["Amina"].start_at(t0 + HOST_SPEAKS)
        self.clips["Daan"].start_at(t0 + SPEAKER_SPEAKS)
        await _until(t0 + HAND_RAISED)
        await youssef.act(Op.RAISE_HAND)
        self.say("hand", "Youssef raises a hand.")
        await _until(t0 + INVITED)
        first = hand_queue(host.state, host.node.now_ms())[0].identity
        await host.act(Op.INVITE, first)
        self.say("invite", f"Amina invites {self.names.get(first.raw, 'the first hand')} to speak.")
        for _ in range(100):
            if youssef.me in youssef.state.invited:
                break
            await asyncio.sleep(0.05)
        await youssef.act(Op.ACCEPT_INVITE)
        await youssef.act(Op.SELF_UNMUTE)
        self.say("promoted", "Youssef accepts and comes up to speak.")
        self.clips["Youssef"].start_at(t0 + QUESTION)
        await _until(t0 + ENDS)
        self.until = time.monotonic() - 0.3  # frames of the last 300 ms may still be in flight
        self._capture_tree(host)
        self.say("ending", "Amina ends the room.")
        await host.leave()
        for session in self.sessions.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.wait_closed(), 5)
        if self.crowd is not None:
            for name, hearing in (await self.crowd.report()).items():
                hearing.streams = {self._speaker_name(PublicKey(bytes.fromhex(key))): tally
                                   for key, tally in hearing.streams.items()}
                self.heard[name] = hearing

    def _speaker_name(self, speaker: PublicKey) -> str:
        return self.names.get(speaker.raw, speaker.peer_id[-6:])

    async def _host(self) -> RoomSession:
        with tagged("Amina"):  # the log (P2PVOIX_LOG) names the node each line is about
            return await self._tagged_host()

    async def _tagged_host(self) -> RoomSession:
        node = await self._node("Amina")
        self.clips["Amina"] = ScheduledClip("speech-fr.ogg")
        session = await RoomSession.host(
            node, title="Couscous & stories", tags=("diaspora", "food"), language="fr",
            audio=AudioSettings(custom_source=self.clips["Amina"]),
            capacity=CapacityPolicy(max_slots=HOST_SLOTS, measure=False),
        )
        self.sessions["Amina"] = session
        self.names[session.me.raw] = "Amina"
        self._count_sent("Amina", session)
        return session

    async def _join(self, name: str, key: RoomKey, *, clip: str | None, slots: int,
                    record: Path | None = None) -> RoomSession:
        with tagged(name):
            return await self._tagged_join(name, key, clip=clip, slots=slots, record=record)

    async def _tagged_join(self, name: str, key: RoomKey, *, clip: str | None, slots: int,
                           record: Path | None = None) -> RoomSession:
        playout = name == FEATURED
        node = await self._node(name)
        source = None
        if clip is not None:
            source = self.clips[name] = ScheduledClip(clip)
        hearing = Hearing()
        session = await RoomSession.join(
            node, key, audio=AudioSettings(custom_source=source, record=record,
                                           playout=playout),
            capacity=CapacityPolicy(max_slots=slots, measure=False), timeout=20,
        )
        self.sessions[name] = session
        self.names[session.me.raw] = name
        self.keys[name] = session.me.raw
        self.heard[name] = hearing
        # Latencies count once everyone is in (the script has started).
        tap_plays(session, lambda play: hearing.played(self._speaker_name(play.speaker), play,
                                                       self.started_at is not None))
        if clip is not None:
            self._count_sent(name, session)
        return session

    async def _node(self, name: str) -> Node:
        boot = (self.nodes[0].addrs()[0],) if self.nodes else ()
        node = await start_node(name, self.portal, boot)
        self.nodes.append(node)
        return node

    async def _promote(self, host: RoomSession, who: RoomSession) -> None:
        for _ in range(100):
            if who.me in host.roster:
                break
            await asyncio.sleep(0.05)
        await who.act(Op.RAISE_HAND)
        await host.act(Op.INVITE, who.me)
        for _ in range(100):
            if who.me in who.state.invited:
                break
            await asyncio.sleep(0.05)
        await who.act(Op.ACCEPT_INVITE)
        await who.act(Op.SELF_UNMUTE)

    def _count_sent(self, name: str, session: RoomSession) -> None:
        """Remember every frame this speaker sent while it could be heard: (when, seq)."""
        sent = self.sent.setdefault(name, [])
        forwarder = session.media.forwarder
        own_audio = forwarder.own_audio

        def counted(data: bytes):  # type: ignore[no-untyped-def]
            actions = own_audio(data)
            if actions:
                sent.append((time.monotonic(), wire.decode(data).seq))
            return actions

        forwarder.own_audio = counted  # type: ignore[method-assign]

    def _capture_tree(self, host: RoomSession) -> None:
        """Each listener's depth in the relay tree, read from the plan before the room ends."""
        planner = host.coordinator.planner if host.coordinator else None
        for name, key in self.keys.items():
            if planner is not None and key in planner:
                self.depths[name] = planner.depth_of(key)
                parent = planner.parent_of(key)
                self.parents[name] = self.names.get(parent) if parent is not None else None

    def _summary(self) -> Summary:
        spoke = {name: clip.spoken_frames * 0.02 for name, clip in self.clips.items()
                 if clip.spoken_frames}
        reports = [
            ListenerReport(name, self.heard[name].first_audio_s, self.heard[name].streams,
                           self.depths.get(name), self.parents.get(name))
            for name in LISTENER_NAMES if name in self.keys
        ]
        sent = {name: Sent(tuple(frames)) for name, frames in self.sent.items()}
        return Summary(spoke, reports, sent, self.until)

    def say(self, step: str, text: str, **fields: Any) -> None:
        self.emit({"type": "demo", "step": step, "text": text, **fields}, f"» {text}")


async def _until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))
