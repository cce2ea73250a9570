"""The processes of ``bench_relay_live``: one speaker process hosting a room, and listener
processes running many real nodes each, driven over pipes.

Every frame a node plays is tapped where the forwarder hands it to playout (a ``Play`` action of
``forwarder.on_frame``): its sequence number, arrival (wall clock), the speaker's capture time
carried in the frame (``origin_ms``, wall clock: one machine, one clock) and its hop count, so
``hops + 1`` is the listener's depth below the speaker. Only frames captured inside an *armed*
window are kept. Most listeners do not decode (``AudioSettings(playout=False)``); a listener
given a WAV path decodes and records, for a spectrum check afterwards.

Each node also keeps a short journal of its plan changes and link events (``Journal``), which
says why a listener lost audio. Commands (plain dicts, ``cmd``): ``join`` listeners (paced),
``arm`` a window, ``report`` on it once it is over, ``tree`` (where everyone sits), ``kill``
nodes at a given time as on SIGKILL; end of input makes everyone leave and the process end.
Wall-clock times (``time.time()``) are comparable across the processes of one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench._common import receive, record_stalls, start_node, thread_cpu_seconds
from p2pvoix.audio.spec import ToneSpec
from p2pvoix.cli.live import share_key
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.errors import P2pvoixError
from p2pvoix.mesh import wire
from p2pvoix.mesh.capacity import CapacityPolicy
from p2pvoix.mesh.forwarding import Mode, Play
from p2pvoix.node.bridge import Portal
from p2pvoix.session.events import LinkDown, LinkUp
from p2pvoix.session.media import AudioSettings
from p2pvoix.session.room import RoomSession

TONE_HZ = 440
JOIN_BATCH = 5  # listeners of one process joining at once
FIRST_AUDIO_WAIT_S = 15.0  # a batch's listeners still silent after this are reported, not fatal
JOIN_ATTEMPTS = 3
MASK = 0xFFFFFFFF  # origin_ms is the capture time in ms modulo 2**32


@dataclass(frozen=True)
class Listener:
    name: str
    slots: int  # relay slots it advertises (CapacityPolicy(max_slots=..., measure=False))
    relay: bool
    record: str | None = None  # a WAV path: this listener decodes and records what it hears


class Window:
    """Frames captured between ``start`` and ``end`` (wall seconds) are kept."""

    def __init__(self) -> None:
        self.start_ms = self.span_ms = 0

    def arm(self, start: float, end: float) -> None:
        self.start_ms, self.span_ms = int(start * 1000), int((end - start) * 1000)

    def holds(self, origin_ms: int) -> bool:
        return (origin_ms - self.start_ms) & MASK < self.span_ms


class Heard:
    """What one node played: when it first heard anything, and the window's frames."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.first: float | None = None
        self.frames: list[tuple[int, float, float, int]] = []  # seq, arrival s, latency ms, hops

    def tap(self, session: RoomSession) -> None:
        forwarder = session.media.forwarder
        on_frame = forwarder.on_frame

        def tapped(link: str, data: bytes, now_ms: float) -> list:  # type: ignore[type-arg]
            actions = on_frame(link, data, now_ms)
            for action in actions:
                if isinstance(action, Play):
                    self._played(action.frame)
            return actions

        forwarder.on_frame = tapped  # type: ignore[method-assign]

    def _played(self, frame: wire.AudioFrame) -> None:
        now = time.time()
        if self.first is None:
            self.first = now
        if self.window.holds(frame.origin_ms):
            # origin_ms is whole milliseconds (truncated): latencies read up to 1 ms long.
            now_ms = now * 1000
            latency = ((int(now_ms) - frame.origin_ms) & MASK) + now_ms % 1
            self.frames.append((frame.seq, now, latency, frame.hops))


class Meter:
    """This process's CPU and its event loop's stalls, sampled in the background."""

    def __init__(self) -> None:
        self.stalls: list[tuple[float, float]] = []  # (when, seconds late)
        self._task = asyncio.get_running_loop().create_task(record_stalls(self.stalls, time.time))

    def cpu_mark(self) -> tuple[float, float, dict[str, float]]:
        return time.time(), time.process_time(), thread_cpu_seconds()

    def stalls_between(self, start: float, end: float) -> dict[str, float]:
        late = [s for at, s in self.stalls if start <= at <= end]
        return {"over_100ms": sum(s > 0.1 for s in late),
                "max_ms": round(1000 * max(late, default=0.0))}

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)



async def sleep_until(wall: float) -> None:
    await asyncio.sleep(max(0.0, wall - time.time()))


def cpu_percent(marks: list[tuple[float, float, dict[str, float]]]) -> dict[str, float]:
    """CPU % of one core between two marks: the process's, and its threads' by kind."""
    (w0, c0, t0), (w1, c1, t1) = marks[0], marks[-1]
    if w1 <= w0:
        return {"process": float("nan")}
    return {"process": round(100 * (c1 - c0) / (w1 - w0), 1),
            **{kind: round(100 * (t1[kind] - t0.get(kind, 0.0)) / (w1 - w0), 1) for kind in t1}}


class Upload:
    """Bytes the speaker sends on the links peers opened to it (tree children, or every
    listener of a mesh), closed links included: sampled, since a closed link is forgotten."""

    def __init__(self, session: RoomSession) -> None:
        self._session = session
        self._seen: dict[int, tuple[Any, int]] = {}  # id(link) -> (link, bytes sent)
        self.sample()
        self._base = {key: sent for key, (_, sent) in self._seen.items()}

    def sample(self) -> None:
        for link in self._session.media.links.links().values():
            if not link.initiator:
                self._seen[id(link)] = (link, link.bytes_out)  # the link is kept: ids stay unique

    def total(self) -> int:
        return sum(sent - self._base.get(key, 0) for key, (_, sent) in self._seen.items())


def link_downs(session: RoomSession) -> Counter[str]:
    """LinkDown reasons among the session's events since the last call (others are dropped)."""
    downs: Counter[str] = Counter()
    while not session.events.empty():
        event = session.events.get_nowait()
        if isinstance(event, LinkDown):
            downs[event.reason] += 1
    return downs


# -- the speaker -----------------------------------------------------------------------------------


def speaker_process(pipe: Connection, topology: str, slots: int) -> None:
    asyncio.run(_speaker(pipe, topology, slots))


async def _speaker(pipe: Connection, topology: str, slots: int) -> None:
    portal = Portal()
    await portal.start()
    node = session = meter = None
    try:
        node = await start_node(portal)
        session = await RoomSession.host(
            node, title=f"bench: relay live ({topology})", topology=topology,
            capacity=CapacityPolicy(max_slots=slots, measure=False),
            audio=AudioSettings(source=ToneSpec(TONE_HZ)))
        meter = Meter()
        sent: list[tuple[int, int]] = []  # (seq, origin_ms) of each captured frame
        own_audio = session.media.forwarder.own_audio

        def counted(data: bytes):  # type: ignore[no-untyped-def]
            frame = wire.decode(data)
            sent.append((frame.seq, frame.origin_ms))
            return own_audio(data)

        session.media.forwarder.own_audio = counted  # type: ignore[method-assign]
        pipe.send({"key": share_key(session.room, node).text(), "peer_id": node.peer_id})
        marks: dict[str, Any] = {}
        while (asked := await receive(pipe)) is not None:
            if asked["cmd"] == "arm":
                marks = {"start": asked["start"], "end": asked["end"]}
                marking = asyncio.get_running_loop().create_task(_mark(session, meter, marks))
                pipe.send({"armed": True})
            elif asked["cmd"] == "report":
                await marking
                window = Window()
                window.arm(marks["start"], marks["end"])
                seqs = [seq for seq, origin in sent if window.holds(origin)]
                del sent[: max(0, len(sent) - 3000)]  # only the last minute matters
                pipe.send({
                    "seqs": seqs,
                    "cpu_percent": cpu_percent(marks["cpu"]),
                    "upload_bytes": marks["upload_bytes"],
                    "links": len(session.media.links.links()),
                    "children": session.media.children(),
                    "skipped": marks["skipped"][1] - marks["skipped"][0],
                    "stalls": meter.stalls_between(marks["start"], marks["end"]),
                    "link_downs": dict(marks["downs"]),
                    "plan": _plan_figures(session),
                    "roster": len(session.roster),
                })
            else:
                pipe.send({"error": f"unknown command {asked}"})
    except Exception as exc:
        with contextlib.suppress(OSError):
            pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        if meter is not None:
            await meter.stop()
        if session is not None:
            await session.leave()
        if node is not None:
            await node.stop()
        await portal.stop()


async def _mark(session: RoomSession, meter: Meter, marks: dict[str, Any]) -> None:
    """CPU, upload and skipped audio ticks at the window's start and end."""
    await sleep_until(marks["start"])
    link_downs(session)
    marks["cpu"] = [meter.cpu_mark()]
    upload = Upload(session)
    marks["skipped"] = [session.media.engine.statistics().skipped]
    while time.time() < marks["end"]:
        await asyncio.sleep(min(0.25, max(0.0, marks["end"] - time.time())))
        upload.sample()
    marks["skipped"].append(session.media.engine.statistics().skipped)
    marks["cpu"].append(meter.cpu_mark())
    marks["upload_bytes"] = upload.total()
    marks["downs"] = link_downs(session)


def _plan_figures(session: RoomSession) -> dict[str, Any]:
    """The sequencer's view of the tree (attached, depth...)."""
    if session.coordinator is None:
        return {}
    figures = session.coordinator.statistics()
    chosen = {key: figures.get(key) for key in (
        "version", "audience", "attached", "max_depth", "depth_histogram", "optimal_depth",
        "without_backup")}
    return {"statistics": {**chosen, "unattached": len(figures.get("unattached") or ())}}


# -- the listeners ---------------------------------------------------------------------------------


def listener_process(pipe: Connection, key: str, group: int) -> None:
    asyncio.run(_listeners(pipe, key, group))


class Journal:
    """A node's recent tree moves and link events, timed (wall clock): why it lost audio."""

    def __init__(self, keep: int = 200) -> None:
        self.entries: deque[tuple[float, str, str, str]] = deque(maxlen=keep)

    def tap(self, session: RoomSession) -> None:
        media = session.media
        set_plan, emit = media.set_plan, media._emit

        def planned(topology: str, parent: Any, backup: Any) -> None:
            self.entries.append((time.time(), "plan", _short(parent), _short(backup)))
            set_plan(topology, parent, backup)

        def emitted(event: Any) -> None:
            if isinstance(event, LinkDown):
                self.entries.append((time.time(), "down", _short(event.identity), event.reason))
            elif isinstance(event, LinkUp):
                self.entries.append((time.time(), "up", _short(event.identity), ""))
            emit(event)

        media.set_plan = planned  # type: ignore[method-assign]
        media._emit = emitted  # type: ignore[method-assign]

    def since(self, moment: float) -> list[tuple[float, str, str, str]]:
        return [entry for entry in self.entries if entry[0] >= moment]


def _short(key: Any) -> str:
    return key.peer_id[-6:] if key is not None else "-"


class _Member:
    def __init__(self, spec: Listener, node: Any, window: Window) -> None:
        self.spec = spec
        self.node = node
        self.session: RoomSession | None = None
        self.heard = Heard(window)
        self.journal = Journal()
        self.began = 0.0  # when its join began
        self.started = 0.0  # when its session (and recording) began
        self.killed: float | None = None
        self.marks: list[tuple[int, int]] = []  # (child bytes sent, frames forwarded)


async def _listeners(pipe: Connection, key_text: str, group: int) -> None:
    portal = Portal()
    await portal.start()
    rng = random.Random(group)
    key = RoomKey.parse(key_text)
    speaker_addr = f"{key.addresses[0].multiaddr()}/p2p/{key.host.peer_id}"
    window = Window()
    members: list[_Member] = []
    meter = Meter()
    marks: dict[str, Any] = {}
    try:
        while (asked := await receive(pipe)) is not None:
            command = asked["cmd"]
            if command == "join":
                pipe.send(await _join(asked["specs"], members, key, speaker_addr, rng, window,
                                      portal))
            elif command == "arm":
                window.arm(asked["start"], asked["end"])
                for member in members:
                    member.heard.frames.clear()
                marks = {"start": asked["start"], "end": asked["end"]}
                marking = asyncio.get_running_loop().create_task(_mark_all(members, meter, marks))
                pipe.send({"armed": True})
            elif command == "report":
                await marking
                await sleep_until(marks["end"] + 0.5)  # the window's last frames on their way
                pipe.send(_report(members, meter, marks))
            elif command == "tree":
                pipe.send([_where(m) for m in members if m.session is not None])
            elif command == "kill":
                pipe.send(await _kill(members, asked["names"], asked["at"]))
            else:
                pipe.send({"error": f"unknown command {asked}"})
    except Exception as exc:
        with contextlib.suppress(OSError):
            pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        await meter.stop()
        await _leave_all(members, portal)


async def _join(specs: list[Listener], members: list[_Member], key: RoomKey, speaker_addr: str,
                rng: random.Random, window: Window, portal: Portal) -> dict[str, Any]:
    """Join ``specs`` in batches of ``JOIN_BATCH``, each batch hearing the speaker (or given up
    on after ``FIRST_AUDIO_WAIT_S``) before the next starts."""
    retries = silent = 0
    failed: list[str] = []
    started = time.monotonic()
    for first in range(0, len(specs), JOIN_BATCH):
        batch = []
        for spec in specs[first:first + JOIN_BATCH]:
            # The first dials the speaker's node, the others a random earlier listener, as
            # peers of a real network would.
            alive = [m.node for m in members if m.killed is None]
            boot = rng.choice(alive).addrs()[0] if alive else speaker_addr
            member = _Member(spec, await start_node(portal, (boot,)), window)
            members.append(member)
            batch.append(member)
        tries, gave_up = await _join_batch(batch, key)
        retries += tries
        for member in gave_up:  # reported, and out of the room
            failed.append(member.spec.name)
            members.remove(member)
            batch.remove(member)
            with contextlib.suppress(Exception):
                await member.node.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_AUDIO_WAIT_S):
                while not all(m.heard.first for m in batch):
                    await asyncio.sleep(0.05)
        silent += sum(m.heard.first is None for m in batch)
    return {"retries": retries, "silent": silent, "failed": failed,
            "seconds": time.monotonic() - started,
            "started": {m.spec.name: m.started for m in members if m.session is not None}}


async def _join_batch(batch: list[_Member], key: RoomKey) -> tuple[int, list[_Member]]:
    """Join ``batch`` at once, trying failed joins again; returns the retries, and who still
    failed after ``JOIN_ATTEMPTS``."""
    retries = 0
    pending = list(batch)
    for _attempt in range(JOIN_ATTEMPTS):
        results = await asyncio.gather(*(_join_one(m, key) for m in pending),
                                       return_exceptions=True)
        failed = []
        for member, result in zip(pending, results, strict=True):
            if isinstance(result, (P2pvoixError, TimeoutError)):
                failed.append(member)
            elif isinstance(result, BaseException):
                raise result
        if not failed:
            return retries, []
        retries += len(failed)
        pending = failed
    return retries, pending


async def _join_one(member: _Member, key: RoomKey) -> None:
    spec = member.spec
    member.began = time.time()
    audio = (AudioSettings(record=Path(spec.record)) if spec.record
             else AudioSettings(playout=False))
    session = await RoomSession.join(
        member.node, key, audio=audio, timeout=30,
        capacity=CapacityPolicy(max_slots=spec.slots, measure=False))
    session.name = spec.name
    member.session, member.started = session, time.time()
    member.heard.tap(session)
    member.journal.tap(session)


async def _mark_all(members: list[_Member], meter: Meter, marks: dict[str, Any]) -> None:
    """CPU of this process, and each node's upload and link losses, at the window's edges."""
    await sleep_until(marks["start"])
    marks["cpu"] = [meter.cpu_mark()]
    for member in members:
        if member.session is not None:
            link_downs(member.session)
            member.marks = [_sent(member.session)]
    await sleep_until(marks["end"])
    marks["cpu"].append(meter.cpu_mark())
    marks["downs"] = {}
    for member in members:
        if member.session is not None and member.killed is None:
            member.marks.append(_sent(member.session))
            marks["downs"][member.spec.name] = dict(link_downs(member.session))


def _sent(session: RoomSession) -> tuple[int, int]:
    return session.media.links.child_bytes_sent(), session.media.forwarder.forwarded


def _report(members: list[_Member], meter: Meter, marks: dict[str, Any]) -> dict[str, Any]:
    span = marks["end"] - marks["start"]
    rows = []
    for member in members:
        if member.session is None or member.killed is not None:
            continue
        (bytes0, forwarded0), (bytes1, forwarded1) = (
            member.marks if len(member.marks) == 2 else [(0, 0), (0, 0)])
        rows.append({
            **_where(member),
            "frames": member.heard.frames,
            "upload_kbps": round((bytes1 - bytes0) * 8 / span / 1000, 1),
            "forwarded": forwarded1 - forwarded0,
            "link_downs": marks["downs"].get(member.spec.name, {}),
            "journal": member.journal.since(marks["start"]),
        })
    return {"rows": rows, "cpu_percent": cpu_percent(marks["cpu"]),
            "stalls": meter.stalls_between(marks["start"], marks["end"]), "nodes": len(rows)}


def _where(member: _Member) -> dict[str, Any]:
    """Where a node sits in the room now."""
    session = member.session
    assert session is not None
    assignment = session.plan.assignment
    return {
        "name": member.spec.name,
        "peer_id": session.me.peer_id,
        "relay": member.spec.relay,
        "record": member.spec.record,
        "started": member.started,
        "join_s": round(member.started - member.began, 2),
        "first_audio_s": round(member.heard.first - member.began, 2) if member.heard.first
        else None,
        "alive": member.killed is None,
        "parent": session.media.parent.peer_id if session.media.parent else None,
        "plan_depth": assignment.depth if assignment else None,
        "children": session.media.children(),  # fed and standby
        "fed": sum(1 for link in session.media.links.links().values()
                   if link.up and not link.initiator and link.role_asked == "child"),
        "slots": session.media.slots,
        "forwarded_total": session.media.forwarder.forwarded,
        "heard": member.heard.first is not None,
        # Why a listener may be silent: no assignment, its parent link not up, refusals.
        "assigned": assignment is not None,
        "feed_link_up": _fed_by_link(session),
        "links_up": sum(link.up for link in session.media.links.links().values()),
        "link_rejections": dict(session.media.links.rejections.statistics()),
        "roster": len(session.roster),
        "journal_tail": list(member.journal.entries)[-12:],
    }


def _fed_by_link(session: RoomSession) -> bool:
    """A link that should bring this listener audio is up: to its parent in a tree, to a
    stage member in a mesh (the ones it dialed)."""
    media = session.media
    if media.mode is Mode.TREE:
        return bool(media.parent and media.links.is_up(media.parent))
    return any(link.up and link.initiator for link in media.links.links().values())


async def _kill(members: list[_Member], names: list[str], at: float) -> dict[str, Any]:
    """At wall time ``at``, the named nodes die as on SIGKILL (tests/session/roomlab.py)."""
    from tests.session.roomlab import kill_abruptly

    chosen = [m for m in members if m.spec.name in names and m.session is not None]
    await sleep_until(at)
    killed = {}
    for member in chosen:
        # Its sends stop at the start of kill_abruptly (its sockets close later in the call).
        member.killed = killed[member.spec.name] = time.time()
        await kill_abruptly(member.session)
    return {"killed": killed}


async def _leave_all(members: list[_Member], portal: Portal) -> None:
    """Everyone leaves (a killed node's media is released), then nodes and the portal stop."""
    sessions = [m.session for m in members if m.session is not None]
    await asyncio.gather(*(s.leave() for s in sessions if s.left is None),
                         return_exceptions=True)
    await asyncio.gather(*(m.session.media.stop() for m in members
                           if m.session is not None and m.killed is not None),
                         return_exceptions=True)
    await asyncio.gather(*(m.node.stop() for m in members), return_exceptions=True)
    await portal.stop()
