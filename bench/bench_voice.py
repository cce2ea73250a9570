"""Voice rooms on loopback: p2pvoix room sessions against stock aiortc, side by side in one run.

1. Send -> playout latency, with clicks: the speaker's source gives a 20 ms noise burst every
   500 ms (its read time is the send time); at the listener the frames leaving the playout path
   are timestamped, and the first loud frame after a quiet stretch is a click's onset. Ours: a host
   ``RoomSession`` speaking into joined listener ``RoomSession``s (real nodes, links, Opus, the
   adaptive playout buffer); onsets in what each listener's engine writes to its sink. Listeners
   tick at their own phase against the speaker's 20 ms clock and the figure depends on it, so a
   few are pooled. Stock: an ``RTCPeerConnection`` pair, a track of raw frames (the sender
   encodes), the stock receiver with its default JitterBuffer; onsets in what ``recv()`` returns.
2. One speaker node and N listeners: the host's node in its own process (its CPU is its own, the
   trio thread's included, split by thread), listeners (real nodes and sessions, ``PER_PROCESS``
   to a process) in others. The room is a mesh, so the speaker sends to every listener itself, as
   the stock side does; the default relay tree caps the speaker's links at its slots. Listeners
   count the frames that reach their playout input (``engine.deliver``) without decoding them: 80
   decoding listeners do not fit on this 2-core box beside the speaker. Stock: ``bench_rtc``'s
   fan-out, each ``RTCRtpSender`` encoding for its own listener.
   Joins are paced (one process at a time, ``JOIN_BATCH`` at once, each batch hearing audio
   before the next): every listener is connected to the speaker's node, which is therefore the
   hub of the room's gossip, and overlapping joins make its libp2p thread — and, through the GIL,
   its event loop — fall behind; stalls over 1.5 s time links out (reported under the table).
3. Join -> first audio: ``RoomSession.join`` called on a node that is up, until ``FirstAudio``;
   with the key as shared by ``p2pvoix host`` (host address hints) and with the bare key.
4. Dead peer: a listener in its own process is SIGKILLed; time until the speaker's session says
   ``LinkDown(reason="timeout")``. Stock: time until ``connectionState`` leaves "connected" after
   the peer is killed (measured only in full runs: it takes over 30 s).

Audio sources and sinks are plugged in where a device would be (``session.media``'s
``open_source``/``open_sink``), so the room, links, forwarder and engine are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator
from unittest import mock

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from bench._common import (
    expect,
    goal_mark,
    receive,
    record_stalls,
    start_node,
    summary_ms,
    thread_cpu_seconds,
    wait_until,
    worker,
)
from bench.bench_rtc import (
    LOOPBACK,
    RATE,
    SAMPLES,
    TIME_BASE,
    _connect_stock,
    _PacedPcmTrack,
    _run_fanout,
)
from p2pvoix.audio.format import FRAME_SAMPLES, INT16_MAX
from p2pvoix.audio.spec import ToneSpec
from p2pvoix.cli.live import share_key
from p2pvoix.crypto.keys import PublicKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.errors import P2pvoixError
from p2pvoix.mesh import wire
from p2pvoix.mesh.capacity import CapacityPolicy
from p2pvoix.mesh.rtc import using_host_addresses
from p2pvoix.node.bridge import Portal
from p2pvoix.session import media as media_module
from p2pvoix.session.events import FirstAudio, LinkDown, LinkUp
from p2pvoix.session.media import AudioSettings
from p2pvoix.session.room import RoomSession

CLICK_EVERY = 25  # frames: one click every 500 ms
CLICK_PERIOD = CLICK_EVERY * SAMPLES / RATE
LOUD = 3000  # a frame whose peak reaches this is loud...
QUIET = 1000  # ...and an onset if the frames before it stayed under this
QUIET_FRAMES = 10

# Nodes sharing a process cannot size their relay capacity from the process's CPU time: they
# advertise the initial number of slots unmeasured, as the tests do.
SHARED = CapacityPolicy(measure=False)
JOIN_BATCH = 5  # listeners of one process joining at once
FIRST_AUDIO_WAIT_S = 15.0  # a batch's listeners still silent after this are reported
PER_PROCESS = 20  # listener nodes per process

GOAL_LATENCY_MS = 25
GOAL_CPU_PERCENT = 30
GOAL_JOIN_MS = 1000
GOAL_DEAD_MS = 3000
STOCK_DEAD_FROM_NOTES_S = 31.5  # /work/shared/docs/notes-aiortc.md, "Failure detection"


def main(quick: bool) -> dict:
    clicks = 20 if quick else 40
    listeners = 2 if quick else 4
    warmup = 2.0 if quick else 3.0
    window = 3.0 if quick else 10.0
    settle = 2.0 if quick else 3.0  # after the last join: a joiner gossips presence for 2 s
    sizes = (1, 10, 40) if quick else (1, 10, 40, 80)
    joins = 5 if quick else 8
    kills = 1 if quick else 3

    with contextlib.ExitStack() as stack:
        took: dict[str, float] = {}
        started = time.monotonic()
        figures: dict = {"latency": asyncio.run(_latency(clicks, warmup, listeners))}
        took["latency"], started = time.monotonic() - started, time.monotonic()
        # The stock dead-peer figure takes over 30 s of waiting: it runs in processes of its own,
        # idle but for ICE consent checks, while the fan-out is measured (not the latency: their
        # start-up would disturb it).
        stock_dead = None if quick else stack.enter_context(_StockDeadPeer.started())
        ours = _fanout_ours(sizes, window, settle)
        took["fanout_ours"], started = time.monotonic() - started, time.monotonic()
        figures["fanout"] = [{"n": o["n"], "ours": o, "stock": _run_fanout("stock", o["n"], window)}
                             for o in ours]
        took["fanout_stock"], started = time.monotonic() - started, time.monotonic()
        figures.update(asyncio.run(_room_timings(joins, kills)))
        took["join_and_kill"] = time.monotonic() - started
        figures["seconds_by_part"] = {k: round(v, 1) for k, v in took.items()}
        if stock_dead is not None:
            figures["dead_peer"]["stock"] = stock_dead.result()
        else:
            figures["dead_peer"]["stock"] = {"seconds": STOCK_DEAD_FROM_NOTES_S,
                                             "measured": False}
    figures["window_s"] = window
    figures["fanout_topology"] = "mesh"
    _print_tables(figures, window)
    return figures


# -- clicks ----------------------------------------------------------------------------------------


def _click() -> np.ndarray:
    """20 ms of loud noise with a sharp start and a 2 ms fade-out."""
    noise = np.random.default_rng(7).uniform(-0.6, 0.6, FRAME_SAMPLES) * INT16_MAX
    noise[-96:] *= np.linspace(1, 0, 96)
    return noise.astype(np.int16)


class ClickSource:
    """A p2pvoix ``Source``: a click every ``CLICK_EVERY`` frames, silence between; the time of
    each read that returned a click is its send time."""

    def __init__(self) -> None:
        self._click = _click()
        self._index = 0
        self.sent: list[float] = []

    def read(self) -> np.ndarray:
        index, self._index = self._index, self._index + 1
        if index % CLICK_EVERY == 0:
            self.sent.append(time.monotonic())
            return self._click.copy()
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def close(self) -> None:
        pass


class ClickPcm:
    """The same clicks as mono AudioFrames for a stock track (``_PacedPcmTrack`` times them)."""

    def __init__(self) -> None:
        self._click = _click()
        self._index = 0

    def next_frame(self) -> av.AudioFrame:
        click = self._index % CLICK_EVERY == 0
        pcm = self._click if click else np.zeros(FRAME_SAMPLES, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._index * SAMPLES
        frame.time_base = TIME_BASE
        self._index += 1
        return frame


class Onsets:
    """Click onsets in a stream of output frames: a loud frame after a quiet stretch."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._quiet_run = 0

    def feed(self, samples: np.ndarray, at: float) -> None:
        peak = int(np.abs(samples.astype(np.int32)).max()) if samples.size else 0
        if peak >= LOUD and self._quiet_run >= QUIET_FRAMES:
            self.times.append(at)
        self._quiet_run = self._quiet_run + 1 if peak < QUIET else 0


class OnsetSink:
    """A p2pvoix ``Sink`` in the place of the speakers: timestamps each frame the engine plays."""

    realtime = True  # like a device: after a stall the engine must not feed it a backlog

    def __init__(self) -> None:
        self.onsets = Onsets()
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        self.onsets.feed(frame, time.monotonic())
        self.frames_written += 1

    def close(self) -> None:
        pass


def _click_latencies(sent: list[float], onsets: list[float], after: float) -> list[float]:
    """Each onset minus the send time of the click before it; clicks sent before ``after`` are
    warm-up. Onsets more than a period after any click (there should be none) are ignored."""
    latencies = []
    for onset in onsets:
        earlier = [s for s in sent if s <= onset]
        if earlier and earlier[-1] >= after and onset - earlier[-1] < CLICK_PERIOD * 0.8:
            latencies.append(onset - earlier[-1])
    return latencies


@contextlib.contextmanager
def _plugged(source: object | None = None, sink: object | None = None) -> Iterator[None]:
    """While a session is made, its audio source/sink is ``source``/``sink``: they sit where a
    microphone and speakers would, everything between them is the real media plane."""
    with contextlib.ExitStack() as stack:
        if source is not None:
            stack.enter_context(
                mock.patch.object(media_module, "open_source", lambda spec, **kw: source))
        if sink is not None:
            stack.enter_context(mock.patch.object(media_module, "open_sink", lambda spec: sink))
        yield


# -- 1. latency ------------------------------------------------------------------------------------


async def _latency(clicks: int, warmup: float, listeners: int) -> dict:
    ours = await _latency_ours(clicks, warmup, listeners)
    stock = await _latency_stock(clicks, warmup)
    return {"ours": ours, "stock": stock,
            "ratio_p50": round(stock["p50_ms"] / ours["p50_ms"], 1) if ours["n"] else None}


async def _latency_ours(clicks: int, warmup: float, listeners: int) -> dict:
    """Several listeners, joined one after another: each engine ticks with its own phase against
    the speaker's, and the latency depends on that phase, so the figures pool all of them."""
    portal = Portal()
    await portal.start()
    nodes, sessions = [], []
    try:
        host_node = await start_node(portal)
        nodes.append(host_node)
        source = ClickSource()
        with _plugged(source=source):
            # A mesh: each listener hears the speaker over one link (a relay tree may move them).
            host = await RoomSession.host(host_node, title="bench: clicks", capacity=SHARED,
                                          topology="mesh",
                                          audio=AudioSettings(source=ToneSpec(1000)))
        sessions.append(host)
        sinks = []
        for _ in range(listeners):
            node = await start_node(portal, (host_node.addrs()[0],))
            nodes.append(node)
            sink = OnsetSink()
            with _plugged(sink=sink):
                listener = await RoomSession.join(node, RoomKey(host.room), capacity=SHARED)
            sessions.append(listener)
            sinks.append(sink)
            await _next_event(listener, lambda e: isinstance(e, FirstAudio), 15)
            await asyncio.sleep(random.uniform(0, 0.02))  # the next one at another tick phase
        measured_from = time.monotonic() + warmup
        await asyncio.sleep(warmup + clicks * CLICK_PERIOD + 0.3)
        per_listener = [_click_latencies(source.sent, s.onsets.times, measured_from)
                        for s in sinks]
        result = summary_ms([x for latencies in per_listener for x in latencies])
        result["clicks_sent"] = listeners * sum(1 for s in source.sent if measured_from <= s)
        result["p50_per_listener_ms"] = [summary_ms(x)["p50_ms"] for x in per_listener]
        result["playout_delay_ms"] = [_playout_delay(s, host) for s in sessions[1:]]
        return result
    finally:
        await _leave_and_stop(sessions, nodes, portal)


def _playout_delay(listener: RoomSession, host: RoomSession) -> tuple[float, float] | None:
    """(target, current) delay of the listener's playout buffer for the host's stream."""
    stream = listener.media.engine.statistics().streams.get(host.me.peer_id)
    if stream is None or stream.current_delay_ms is None:
        return None
    return round(stream.target_delay_ms, 1), round(stream.current_delay_ms, 1)


async def _latency_stock(clicks: int, warmup: float) -> dict:
    frames = int((warmup + clicks * CLICK_PERIOD) / (SAMPLES / RATE)) + 1
    track = _PacedPcmTrack(ClickPcm(), frames)
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    a.addTrack(track)
    received: list = []
    b.on("track", received.append)
    onsets = Onsets()
    try:
        await _connect_stock(a, b)
        await wait_until(lambda: received, 10, "stock remote track")
        while True:
            try:
                frame = await asyncio.wait_for(received[0].recv(), 1.0)
            except (TimeoutError, MediaStreamError):
                break
            onsets.feed(frame.to_ndarray(), time.monotonic())
    finally:
        await asyncio.gather(a.close(), b.close())
    clicks_at = [track.sent[i] for i in sorted(track.sent) if i % CLICK_EVERY == 0]
    measured_from = min(track.sent.values(), default=0.0) + warmup
    result = summary_ms(_click_latencies(clicks_at, onsets.times, measured_from))
    result["clicks_sent"] = sum(1 for s in clicks_at if measured_from <= s)
    return result


# -- 2. one speaker, N listeners -------------------------------------------------------------------


def _fanout_ours(sizes: tuple[int, ...], window: float, settle: float,
                 topology: str = "mesh") -> list[dict]:
    """One speaker node for every size: listeners are added (``PER_PROCESS`` to a process, one
    process joining at a time, ``JOIN_BATCH`` at once, every batch hearing audio before the next
    joins) and the speaker measures a window at each size. Joining is the slow part: every join
    gossips presence to every node of the room, and py-libp2p spends milliseconds of CPU on each
    gossip message at each node."""
    results = []
    with worker(_speaker_process, topology, name="bench speaker") as (_, speaker):
        room = expect(speaker, 60, "the speaker's room")
        with contextlib.ExitStack() as stack:
            groups: list[list] = []  # [pipe, listeners joined]
            joined = retries = 0
            for n in sizes:
                started = time.monotonic()
                silent = 0
                # One process joins at a time (see the module's notes on pacing).
                while joined < n:
                    if not groups or groups[-1][1] == PER_PROCESS:
                        index = len(groups)
                        _, pipe = stack.enter_context(worker(
                            _listener_process, room, index, name=f"bench listeners {index}"))
                        groups.append([pipe, 0])
                    group = groups[-1]
                    count = min(n - joined, PER_PROCESS - group[1])
                    group[0].send({"join": count})
                    report = expect(group[0], 60 + 40 * count / JOIN_BATCH, "listeners joined")
                    retries += report["retries"]
                    group[1] += count
                    joined += count
                for pipe, _ in groups:  # every listener so far, whichever process it is in
                    pipe.send({"silent?": True})
                    silent += expect(pipe, 10, "silent listeners")["silent"]
                join_s = time.monotonic() - started
                speaker.send({"listeners": n, "settle": settle, "window": window})
                measured = expect(speaker, 60 + settle + window, "the speaker's figures")
                counts: list[int] = []
                gaps: list[int] = []
                listener_cpu = []
                for pipe, _ in groups:
                    pipe.send(measured)
                    report = expect(pipe, 30, "frame counts")
                    counts += report["counts"]
                    gaps += report["longest_gaps"]
                    listener_cpu.append(report["cpu_percent"])
                results.append({
                    "n": n,
                    "cpu_percent": round(100 * measured["cpu"] / measured["wall"], 1),
                    "cpu_by_thread": measured["threads"],
                    "frames_expected": len(measured["seqs"]),
                    "frames_min": min(counts),
                    "frames_mean": round(sum(counts) / len(counts), 1),
                    "links_per_frame_min": measured["links_min"],
                    "listeners_missing_frames": sum(c < len(measured["seqs"]) for c in counts),
                    "longest_gap_frames": max(gaps),
                    "sender_dropped": measured["sender_dropped"],
                    "listener_processes_cpu_percent": listener_cpu,
                    "joining_s": round(join_s, 1),
                    "ticks_skipped": measured["ticks_skipped"],
                    "speaker_window": measured["window_trouble"],
                    "speaker_joining": measured["joining_trouble"],
                    "join_retries": retries,
                    "listeners_never_heard": silent,
                })
    return results


def _speaker_process(pipe, topology: str) -> None:
    asyncio.run(_speaker(pipe, topology))


async def _speaker(pipe, topology: str) -> None:
    portal = Portal()
    await portal.start()
    node = session = watch = None
    try:
        node = await start_node(portal)
        session = await RoomSession.host(node, title="bench: fan-out", topology=topology,
                                         audio=AudioSettings(source=ToneSpec(440)))
        captured: list[tuple[int, int]] = []  # (seq, links it went to) of each captured frame
        forwarder = session.media.forwarder
        own_audio = forwarder.own_audio

        def counted(data: bytes):  # type: ignore[no-untyped-def]
            actions = own_audio(data)
            captured.append((wire.decode(data).seq, sum(len(a.links) for a in actions)))
            return actions

        forwarder.own_audio = counted  # type: ignore[method-assign]
        watch = _SpeakerWatch(session)
        # What `p2pvoix host` tells its user to share: the key with the host's addresses.
        pipe.send({"key": share_key(session.room, node).text()})
        since = time.monotonic()
        # Every listener has heard the speaker before we are asked: no need to count links
        # (with a relay tree the speaker has fewer links than listeners anyway).
        while (asked := await receive(pipe)) is not None:
            await asyncio.sleep(asked["settle"])
            captured.clear()
            dropped0 = _sender_drops(session)
            skipped0 = session.media.engine.statistics().skipped
            threads0 = thread_cpu_seconds()
            cpu0, wall0 = time.process_time(), time.monotonic()
            await asyncio.sleep(asked["window"])
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            threads = {kind: round(100 * (seconds - threads0.get(kind, 0.0)) / wall, 1)
                       for kind, seconds in thread_cpu_seconds().items()}
            pipe.send({
                "cpu": cpu, "wall": wall, "start": wall0, "end": wall0 + wall, "threads": threads,
                "seqs": [seq for seq, _ in captured],
                "links_min": min((links for _, links in captured), default=0),
                "sender_dropped": _sender_drops(session) - dropped0,
                "ticks_skipped": session.media.engine.statistics().skipped - skipped0,
                "window_trouble": watch.between(wall0, wall0 + wall),
                "joining_trouble": watch.between(since, wall0),
            })
            since = wall0 + wall
    except Exception as exc:
        with contextlib.suppress(OSError):
            pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        if watch is not None:
            await watch.stop()
        await _leave_and_stop([session] if session else [], [node] if node else [], portal)


class _SpeakerWatch:
    """What went wrong at the speaker, if anything: event-loop stalls (its audio clock and link
    liveness run on that loop) and links that went down, with the session's reason."""

    def __init__(self, session: RoomSession) -> None:
        self._session = session
        self._stalls: list[tuple[float, float]] = []  # (when, seconds late)
        self._downs: list[tuple[float, str]] = []
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(record_stalls(self._stalls, time.monotonic)), loop.create_task(self._events())]

    def between(self, start: float, end: float) -> dict:
        stalls = [late for at, late in self._stalls if start <= at <= end]
        downs: dict[str, int] = {}
        for at, reason in self._downs:
            if start <= at <= end:
                downs[reason] = downs.get(reason, 0) + 1
        return {"stalls_over_100ms": sum(late > 0.1 for late in stalls),
                "max_stall_ms": round(1000 * max(stalls, default=0.0)), "links_down": downs}

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _events(self) -> None:
        while True:
            event = await self._session.events.get()
            if isinstance(event, LinkDown):
                self._downs.append((time.monotonic(), event.reason))


def _sender_drops(session: RoomSession) -> int:
    """Frames the speaker's links dropped from their send queues (full, or closing)."""
    return sum(link.rtc.statistics().frames_dropped
               for link in session.media.links.links().values())


def _listener_process(pipe, room: dict, group: int) -> None:
    asyncio.run(_listeners(pipe, room, group))


async def _listeners(pipe, room: dict, group: int) -> None:
    """Listener nodes of one process: joins on request, and counts each one's frames."""
    portal = Portal()
    await portal.start()
    rng = random.Random(group)
    key = RoomKey.parse(room["key"])
    speaker_addr = f"{key.addresses[0].multiaddr()}/p2p/{key.host.peer_id}"
    nodes: list = []
    sessions: list[RoomSession] = []
    heard: list[set[int]] = []
    cpu_samples: list[tuple[float, float]] = []
    sampler = asyncio.get_running_loop().create_task(_sample_cpu(cpu_samples))
    try:
        while (asked := await receive(pipe)) is not None:
            if "join" in asked:
                retries = 0
                end = len(nodes) + asked["join"]
                for first in range(len(nodes), end, JOIN_BATCH):
                    batch = range(first, min(end, first + JOIN_BATCH))
                    for _ in batch:
                        # The first dials the speaker's node, the others a random earlier
                        # listener, as peers of a real network would.
                        boot = rng.choice(nodes).addrs()[0] if nodes else speaker_addr
                        nodes.append(await start_node(portal, (boot,)))
                        heard.append(set())
                    retries += await _join_batch(nodes, batch, key, sessions, heard)
                pipe.send({"retries": retries})
            elif "silent?" in asked:
                pipe.send({"silent": sum(not mine for mine in heard)})
            else:  # the speaker's window: count, for each listener, the frames it received
                window = set(asked["seqs"])
                await asyncio.sleep(0.5)  # the window's last frames are still on their way
                pipe.send({
                    "counts": [len(window & mine) for mine in heard],
                    "longest_gaps": [_longest_gap(asked["seqs"], mine) for mine in heard],
                    "cpu_percent": _cpu_between(cpu_samples, asked["start"], asked["end"]),
                })
                for mine in heard:
                    mine.clear()
    except Exception as exc:
        with contextlib.suppress(OSError):
            pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        sampler.cancel()
        await _leave_and_stop(sessions, nodes, portal)


def _longest_gap(sent: list[int], heard: set[int]) -> int:
    """The longest run of consecutive frames of ``sent`` missing from ``heard``."""
    longest = run = 0
    for seq in sent:
        run = 0 if seq in heard else run + 1
        longest = max(longest, run)
    return longest


async def _join_batch(nodes: list, batch: range, key: RoomKey, sessions: list[RoomSession],
                      heard: list[set[int]]) -> int:
    """Join ``nodes[batch]`` at once and wait (a while) until each hears the speaker; returns
    how many joins had to be tried again (a refused or timed-out join on a loaded box)."""
    retries = 0
    pending = list(batch)
    for _attempt in range(3):
        results = await asyncio.gather(*(RoomSession.join(nodes[i], key, capacity=SHARED)
                                         for i in pending),
                                       return_exceptions=True)
        failed = []
        for i, result in zip(pending, results, strict=True):
            if isinstance(result, RoomSession):
                sessions.append(result)
                _count_deliveries(result, heard[i])
            elif isinstance(result, (P2pvoixError, TimeoutError)):
                failed.append(i)
            else:
                raise result
        if not failed:
            break
        retries += len(failed)
        pending = failed
    else:
        raise RuntimeError(f"listeners {pending} could not join in 3 attempts")
    with contextlib.suppress(TimeoutError):  # a listener still silent is reported, not fatal
        await wait_until(lambda: all(heard[i] for i in batch), FIRST_AUDIO_WAIT_S, "first audio")
    return retries


def _count_deliveries(session: RoomSession, seqs: set[int]) -> None:
    """Frames reaching this listener's playout input are counted, not decoded (decoding is the
    listener's cost, not the speaker's, and the box is already full)."""

    def deliver(stream_id, seq, payload, arrival_ms=None):  # type: ignore[no-untyped-def]
        seqs.add(seq)

    session.media.engine.deliver = deliver  # type: ignore[method-assign]


async def _sample_cpu(samples: list[tuple[float, float]]) -> None:
    while True:
        samples.append((time.monotonic(), time.process_time()))
        await asyncio.sleep(0.25)


def _cpu_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """This process's CPU % between the samples nearest ``start`` and ``end``."""
    inside = [s for s in samples if start <= s[0] <= end] or samples[-2:]
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return round(100 * (c1 - c0) / (t1 - t0), 1) if t1 > t0 else float("nan")


async def _leave_and_stop(sessions: list[RoomSession], nodes: list,
                          portal: Portal | None) -> None:
    """Leave every session, stop every node and the portal (if ours), whatever fails on the way:
    ``leave`` can raise (see ``main``'s notes), ``stop`` must still run."""
    await asyncio.gather(*(s.leave() for s in sessions), return_exceptions=True)
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)
    if portal is not None:
        await portal.stop()


# -- 3 and 4. joining, and a dead peer -------------------------------------------------------------


async def _room_timings(joins: int, kills: int) -> dict:
    portal = Portal()
    await portal.start()
    nodes, sessions = [], []
    try:
        host_node = await start_node(portal)
        nodes.append(host_node)
        host = await RoomSession.host(host_node, title="bench: joins", capacity=SHARED,
                                      audio=AudioSettings(source=ToneSpec(440)))
        sessions.append(host)
        shared = share_key(host.room, host_node)
        join = {
            "shared key": [await _one_join(portal, host_node, shared) for _ in range(joins)],
            "bare key": [await _one_join(portal, host_node, shared.bare())
                         for _ in range(joins)],
        }
        dead = [await _one_kill(host_node, host) for _ in range(kills)]
    finally:
        await _leave_and_stop(sessions, nodes, portal)
    return {
        "join": {
            how: {step: summary_ms([j[step] for j in runs])
                  for step in ("joined", "link_up", "first_audio")}
            for how, runs in join.items()
        },
        "dead_peer": {"ours": {**summary_ms([d["seconds"] for d in dead]),
                               "reasons": sorted({d["reason"] for d in dead})}},
    }


async def _one_join(portal: Portal, host_node, key: RoomKey) -> dict:
    """A node that is up (bootstrapped from the host's node) joins: when join() returns, when
    its link is up, when the first frame reaches its playout."""
    node = await start_node(portal, (host_node.addrs()[0],))
    session = None
    try:
        started = time.monotonic()
        session = await RoomSession.join(node, key, capacity=SHARED)
        joined = time.monotonic() - started
        link_up, _ = await _next_event(session, lambda e: isinstance(e, LinkUp), 10)
        first_audio, _ = await _next_event(session, lambda e: isinstance(e, FirstAudio), 10)
        return {"joined": joined, "link_up": link_up - started,
                "first_audio": first_audio - started}
    finally:
        await _leave_and_stop([session] if session else [], [node], None)


async def _one_kill(host_node, host: RoomSession) -> dict:
    with worker(_doomed_listener, host.room.raw, host_node.addrs()[0],
                name="bench doomed listener") as (process, pipe):
        ready = await receive(pipe)
        if not isinstance(ready, dict) or "peer_id" not in ready:
            raise RuntimeError(f"the doomed listener did not join: {ready!r}")
        peer = PublicKey.from_peer_id(ready["peer_id"])
        await wait_until(lambda: host.media.links.is_up(peer), 10, "host's link to the listener")
        _drain(host)
        os.kill(process.pid, signal.SIGKILL)
        killed = time.monotonic()
        down, event = await _next_event(
            host, lambda e: isinstance(e, LinkDown) and e.identity == peer, 40)
        return {"seconds": down - killed, "reason": event.reason}


def _doomed_listener(pipe, room: bytes, addr: str) -> None:
    asyncio.run(_doomed(pipe, room, addr))


async def _doomed(pipe, room: bytes, addr: str) -> None:
    portal = Portal()
    await portal.start()
    nodes, sessions = [], []
    try:
        node = await start_node(portal, (addr,))
        nodes.append(node)
        session = await RoomSession.join(node, RoomKey(PublicKey(room)))
        sessions.append(session)
        await _next_event(session, lambda e: isinstance(e, FirstAudio), 15)
        pipe.send({"peer_id": node.peer_id})
        await receive(pipe)  # SIGKILL comes first, unless the benchmark gave up on us
    finally:
        await _leave_and_stop(sessions, nodes, portal)


async def _next_event(session: RoomSession, match, timeout: float) -> tuple[float, object]:
    """The next event of ``session`` that ``match``es, and when it was read: events are read as
    they come, so that is when it was emitted."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no matching session event within {timeout} s")
        event = await asyncio.wait_for(session.events.get(), remaining)
        if match(event):
            return time.monotonic(), event


def _drain(session: RoomSession) -> None:
    while not session.events.empty():
        session.events.get_nowait()


# -- 4, stock: aiortc after its peer is killed -----------------------------------------------------


class _StockDeadPeer:
    """A stock RTCPeerConnection pair, each end in its own process; the answerer is SIGKILLed and
    the offerer reports when its connectionState leaves "connected"."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._survivor, self._survivor_pipe = stack.enter_context(
            worker(_stock_survivor, name="bench stock survivor", grace=5))
        self._victim, victim_pipe = stack.enter_context(
            worker(_stock_victim, name="bench stock victim", grace=5))
        offer = expect(self._survivor_pipe, 30, "stock offer")
        victim_pipe.send(offer)
        self._survivor_pipe.send(expect(victim_pipe, 30, "stock answer"))
        expect(self._survivor_pipe, 30, "stock connected")
        os.kill(self._victim.pid, signal.SIGKILL)
        self._killed = time.monotonic()

    @classmethod
    @contextlib.contextmanager
    def started(cls) -> Iterator[_StockDeadPeer]:
        with contextlib.ExitStack() as stack:
            yield cls(stack)

    def result(self) -> dict:
        report = expect(self._survivor_pipe, 60, "the stock peer's verdict")
        return {"seconds": round(report["at"] - self._killed, 1), "state": report["state"],
                "measured": True}


def _stock_survivor(pipe) -> None:
    asyncio.run(_survivor(pipe))


async def _survivor(pipe) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    changed = asyncio.Event()
    pc.on("connectionstatechange", changed.set)
    pc.addTransceiver("audio", direction="sendrecv")
    try:
        with using_host_addresses(LOOPBACK):
            await pc.setLocalDescription(await pc.createOffer())
        pipe.send(pc.localDescription.sdp)
        answer = await receive(pipe)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        async with asyncio.timeout(10):
            while pc.connectionState != "connected":
                changed.clear()
                await changed.wait()
        pipe.send("connected")
        async with asyncio.timeout(60):
            while pc.connectionState == "connected":
                changed.clear()
                await changed.wait()
        pipe.send({"at": time.monotonic(), "state": pc.connectionState})
    finally:
        await pc.close()


def _stock_victim(pipe) -> None:
    asyncio.run(_victim(pipe))


async def _victim(pipe) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        offer = await receive(pipe)
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        with using_host_addresses(LOOPBACK):
            await pc.setLocalDescription(await pc.createAnswer())
        pipe.send(pc.localDescription.sdp)
        await receive(pipe)  # SIGKILL comes first
    finally:
        await pc.close()


def _trouble(o: dict) -> str:
    """What went wrong at the speaker or its listeners during a fan-out measurement."""
    notes = []
    if o["ticks_skipped"]:
        notes.append(f"speaker's audio clock skipped {o['ticks_skipped']} ticks")
    for phase in ("window", "joining"):
        t = o[f"speaker_{phase}"]
        if t["stalls_over_100ms"]:
            notes.append(f"{phase}: speaker loop stalled >100 ms {t['stalls_over_100ms']}x "
                         f"(max {t['max_stall_ms']} ms)")
        if t["links_down"]:
            notes.append(f"{phase}: speaker links down {t['links_down']}")
    if o["listeners_missing_frames"]:
        notes.append(f"{o['listeners_missing_frames']} listener(s) missed frames (longest gap "
                     f"{o['longest_gap_frames']})")
    if o["listeners_never_heard"]:
        notes.append(f"{o['listeners_never_heard']} listener(s) never heard the speaker")
    if o["join_retries"]:
        notes.append(f"{o['join_retries']} join(s) retried")
    return "; ".join(notes)


# -- the table -------------------------------------------------------------------------------------


def _print_tables(figures: dict, window: float) -> None:
    lat = figures["latency"]
    ours, stock = lat["ours"], lat["stock"]
    print("1. send -> playout latency, a click every 500 ms, one loopback link (ms)")
    print(f"  {'':38} {'p50':>7} {'p95':>7} {'max':>7} {'clicks':>9}")
    for label, r in (("p2pvoix room (engine -> sink)", ours),
                     ("stock aiortc (track.recv())", stock)):
        print(f"  {label:38} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f} {r['max_ms']:7.1f} "
              f"{r['n']:>4}/{r['clicks_sent']:<4}")
    print(f"  stock / p2pvoix p50: x{lat['ratio_p50']}; goal p2pvoix p50 <= {GOAL_LATENCY_MS} ms: "
          f"{goal_mark(ours['p50_ms'], GOAL_LATENCY_MS)}")
    delays = ", ".join(f"{d[0]:.0f}/{d[1]:.0f}" for d in ours["playout_delay_ms"] if d)
    print(f"  p2pvoix per listener: p50 {ours['p50_per_listener_ms']} ms; playout target/current "
          f"delay {delays} ms")
    print()
    print(f"2. one speaker node (mesh: it sends to every listener itself), N listeners, "
          f"{window:.0f} s window; CPU of the speaker's process, 100 % = one core")
    print(f"  {'N':>3} | {'p2pvoix CPU':>11} {'(loop+libp2p)':>13} {'frames min/mean of sent':>24} | "
          f"{'stock CPU':>9} {'frames min/mean of sent':>24} | {'stock/ours':>10} | "
          f"goal <={GOAL_CPU_PERCENT} %, every frame")
    for row in figures["fanout"]:
        o, s = row["ours"], row["stock"]
        ratio = s["cpu_percent"] / o["cpu_percent"] if o["cpu_percent"] else float("nan")
        every = o["frames_min"] >= o["frames_expected"] and o["ticks_skipped"] == 0
        verdict = "ok" if o["cpu_percent"] <= GOAL_CPU_PERCENT and every else "MISSED"
        threads = o["cpu_by_thread"]
        split = f"({threads.get('asyncio', 0):.0f}+{threads.get('libp2p', 0):.0f})"
        print(f"  {row['n']:>3} | {o['cpu_percent']:>10.1f}% {split:>13} "
              f"{o['frames_min']:>9}/{o['frames_mean']:<7} of {o['frames_expected']:<4} | "
              f"{s['cpu_percent']:>8.1f}% {s['frames_min']:>9}/{s['frames_mean']:<7} of "
              f"{s['frames_expected']:<4} | x{ratio:>9.1f} | {verdict}")
        trouble = _trouble(o)
        if trouble:
            print(f"      ! N={row['n']}: {trouble}")
    last = figures["fanout"][-1]["ours"]
    print(f"  p2pvoix listeners: real nodes and sessions, {PER_PROCESS} to a process "
          f"(process CPU {last['listener_processes_cpu_percent']} % at N={last['n']}), frames "
          f"counted at their playout input, not decoded; joining all took "
          f"{sum(r['ours']['joining_s'] for r in figures['fanout']):.0f} s. Stock listeners count "
          f"RTP packets (bench_rtc's fan-out).")
    print()
    print("3. join -> first audio, on a node that is up (ms)")
    print(f"  {'':40} {'p50':>7} {'p95':>7} {'max':>7} {'n':>4}")
    for how, steps in figures["join"].items():
        for label, step in (("join() returned", "joined"), ("media link up", "link_up"),
                            ("FirstAudio", "first_audio")):
            r = steps[step]
            print(f"  {how + ': ' + label:40} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f} "
                  f"{r['max_ms']:7.1f} {r['n']:>4}")
        print(f"  {how}: goal FirstAudio p50 <= {GOAL_JOIN_MS} ms: "
              f"{goal_mark(steps['first_audio']['p50_ms'], GOAL_JOIN_MS)}")
    print()
    dead = figures["dead_peer"]
    ours_dead, stock_dead = dead["ours"], dead["stock"]
    print("4. dead peer (a listener SIGKILLed) -> noticed by the speaker's session")
    print(f"  p2pvoix LinkDown: p50 {ours_dead['p50_ms'] / 1000:.2f} s, max "
          f"{ours_dead['max_ms'] / 1000:.2f} s over {ours_dead['n']} kill(s), reason "
          f"{'/'.join(ours_dead['reasons'])}; goal <= {GOAL_DEAD_MS / 1000:.0f} s: "
          f"{goal_mark(ours_dead['max_ms'], GOAL_DEAD_MS)}")
    if stock_dead["measured"]:
        print(f"  stock aiortc connectionState -> {stock_dead['state']}: "
              f"{stock_dead['seconds']:.1f} s (measured)")
    else:
        print(f"  stock aiortc connectionState -> closed: {stock_dead['seconds']:.1f} s "
              "(from notes-aiortc.md, NOT measured: --quick)")
    ratio = stock_dead["seconds"] * 1000 / ours_dead["p50_ms"] if ours_dead["n"] else float("nan")
    print(f"  stock / p2pvoix: x{ratio:.0f}")


if __name__ == "__main__":
    main(quick=True)
