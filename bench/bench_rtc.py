"""Media links on loopback: p2pvoix pass-through (mesh/rtc.py) against stock aiortc, in one run.

1. Latency from send to delivery, one link, 20 ms frames. Ours: ``RtcLink.send()`` to the
   ``on_frame`` callback. Stock: a track of raw AudioFrames (encoded by the sender) to the stock
   receiver's ``track.recv()`` (default JitterBuffer, decoder thread).
2. Fan-out: one sender node (its own process, so its CPU is its own) feeding N listeners for a fixed
   window. Ours: each 20 ms frame Opus-encoded once, the same link frame sent on N links. Stock: N
   tracks of raw frames, each RTCRtpSender encoding for itself. The listeners (another process)
   are pass-through RtcLinks in both cases, so only the sender differs; they count RTP packets.
   Their process's CPU is reported too (pass-through rows): what receiving costs per stream.

CPU is ``time.process_time()`` over the window divided by its wall time (100 % = one core).
"""

from __future__ import annotations

import asyncio
import fractions
import multiprocessing
import statistics
import time
from collections import deque

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from p2pvoix.mesh.rtc import RtcConfig, RtcLink, using_host_addresses

LOOPBACK = ("127.0.0.1",)
RATE = 48000
SAMPLES = 960  # 20 ms
TICK = SAMPLES / RATE
TIME_BASE = fractions.Fraction(1, RATE)
WARMUP_FRAMES = 25


def main(quick: bool) -> dict:
    latency_frames = 150 if quick else 500
    window = 3.0 if quick else 10.0
    sizes = (1, 10, 40) if quick else (1, 10, 40, 80)

    latency = asyncio.run(_latency(latency_frames))
    fanout = []
    for n in sizes:
        for mode in ("passthrough", "stock"):
            fanout.append(_run_fanout(mode, n, window))

    by = {(r["mode"], r["n"]): r for r in fanout}
    cpu_ratio = {
        n: round(
            by[("stock", n)]["cpu_percent"] / max(by[("passthrough", n)]["cpu_percent"], 0.1), 1
        )
        for n in sizes
    }
    _print_tables(latency, fanout, window)
    return {
        "latency_ms": latency,
        "fanout": fanout,
        "cpu_ratio_stock_vs_ours": cpu_ratio,
        "window_s": window,
    }


# -- latency ---------------------------------------------------------------------------------------


async def _latency(frames: int) -> dict:
    ours = await _latency_ours(frames)
    stock = await _latency_stock(frames)
    return {
        "ours": ours,
        "stock": stock,
        "ratio_p50": round(stock["p50"] / ours["p50"], 1),
        "ratio_p95": round(stock["p95"] / ours["p95"], 1),
    }


async def _latency_ours(frames: int) -> dict:
    config = RtcConfig(host_addresses=LOOPBACK)
    sent: dict[int, float] = {}
    delays: list[float] = []

    def on_frame(frame: bytes, arrival: float) -> None:
        seq = int.from_bytes(frame[:4], "big")
        if seq >= WARMUP_FRAMES and seq in sent:
            delays.append(arrival - sent[seq])

    a = RtcLink(config, on_frame=lambda f, t: None)
    b = RtcLink(config, on_frame=on_frame)
    try:
        await _connect_links(a, b)
        packets = _OpusSource()
        start = time.monotonic()
        for seq in range(frames):
            await _sleep_until(start + seq * TICK)
            frame = seq.to_bytes(4, "big") + packets.next_packet()
            sent[seq] = time.monotonic()
            a.send(frame)
        await asyncio.sleep(0.3)
    finally:
        await asyncio.gather(a.close(), b.close())
    return _percentiles(delays, frames - WARMUP_FRAMES)


async def _latency_stock(frames: int) -> dict:
    source = _PcmSource()
    track = _PacedPcmTrack(source, frames)
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    a.addTrack(track)
    delays: list[float] = []
    received: list[MediaStreamTrack] = []
    b.on("track", received.append)
    try:
        await _connect_stock(a, b)
        while not received:
            await asyncio.sleep(0.005)
        remote = received[0]
        while True:
            try:
                frame = await asyncio.wait_for(remote.recv(), 1.0)
            except (TimeoutError, MediaStreamError):
                break
            now = time.monotonic()
            index = frame.pts // SAMPLES
            if index >= WARMUP_FRAMES and index in track.sent:
                delays.append(now - track.sent[index])
    finally:
        await asyncio.gather(a.close(), b.close())
    return _percentiles(delays, frames - WARMUP_FRAMES)


# -- fan-out -----------------------------------------------------------------------------------


def _run_fanout(mode: str, n: int, window: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    sender = ctx.Process(target=_sender_process, args=(theirs, mode, n, window), daemon=True)
    sender.start()
    try:
        result = asyncio.run(_listeners(ours, n, window))
    finally:
        sender.join(timeout=30)
        if sender.is_alive():
            sender.kill()
            sender.join()
    result.update(mode=mode, n=n)
    return result


async def _listeners(pipe, n: int, window: float) -> dict:
    loop = asyncio.get_running_loop()
    counts = [0] * n
    links = []
    for i in range(n):

        def count(_frame: bytes, _arrival: float, i: int = i) -> None:
            counts[i] += 1

        links.append(RtcLink(RtcConfig(host_addresses=LOOPBACK), on_frame=count))
    try:
        offers = await loop.run_in_executor(None, pipe.recv)
        answers = await asyncio.gather(
            *(link.accept_offer(offer) for link, offer in zip(links, offers, strict=True))
        )
        pipe.send(answers)
        async with asyncio.timeout(30):
            connected = await asyncio.gather(*(link.wait_connected() for link in links))
        if not all(connected):
            raise RuntimeError("a listener link did not connect")
        pipe.send("go")
        cpu0, wall0 = time.process_time(), time.monotonic()
        sender = await loop.run_in_executor(None, pipe.recv)  # after the window
        # This process holds only the listeners: its CPU over the window is theirs.
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        await asyncio.sleep(0.5)  # frames still in flight
        pipe.send("bye")
    finally:
        await asyncio.gather(*(link.close() for link in links))
    expected = int(round(window / TICK))
    return {
        "cpu_percent": round(100 * sender["cpu"] / sender["wall"], 1),
        "listeners_cpu_percent": round(100 * cpu / wall, 1),
        "frames_expected": expected,
        "frames_min": min(counts),
        "frames_mean": round(sum(counts) / n, 1),
        "sender_dropped": sender["dropped"],
    }


def _sender_process(pipe, mode: str, n: int, window: float) -> None:
    asyncio.run(_sender(pipe, mode, n, window))


async def _sender(pipe, mode: str, n: int, window: float) -> None:
    loop = asyncio.get_running_loop()
    frames = int(round(window / TICK))
    if mode == "passthrough":
        links = [
            RtcLink(RtcConfig(host_addresses=LOOPBACK), on_frame=lambda f, t: None)
            for _ in range(n)
        ]
        offers = [await link.create_offer() for link in links]
    else:
        pcs, tracks = [], []
        for _ in range(n):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            track = _QueuedPcmTrack()
            pc.addTrack(track)
            pcs.append(pc)
            tracks.append(track)
        offers = []
        for pc in pcs:
            with using_host_addresses(LOOPBACK):
                await pc.setLocalDescription(await pc.createOffer())
            offers.append(pc.localDescription.sdp)
    try:
        pipe.send(offers)
        answers = await loop.run_in_executor(None, pipe.recv)
        if mode == "passthrough":
            for link, answer in zip(links, answers, strict=True):
                await link.accept_answer(answer)
        else:
            for pc, answer in zip(pcs, answers, strict=True):
                await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await loop.run_in_executor(None, pipe.recv)  # "go": every listener is connected

        cpu0, wall0 = time.process_time(), time.monotonic()
        if mode == "passthrough":
            packets = _OpusSource()
            for seq in range(frames):
                await _sleep_until(wall0 + seq * TICK)
                frame = seq.to_bytes(4, "big") + packets.next_packet()  # encoded once
                for link in links:
                    link.send(frame)
        else:
            pcm = _PcmSource()
            for seq in range(frames):
                await _sleep_until(wall0 + seq * TICK)
                frame = pcm.next_frame()
                for track in tracks:
                    track.push(frame)
        await asyncio.sleep(0.1)  # let the last frames leave
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        if mode == "passthrough":
            dropped = sum(link.statistics().frames_dropped for link in links)
        else:
            dropped = sum(track.dropped for track in tracks)
        pipe.send({"cpu": cpu, "wall": wall, "dropped": dropped})
        await loop.run_in_executor(None, pipe.recv)  # "bye"
    finally:
        if mode == "passthrough":
            await asyncio.gather(*(link.close() for link in links))
        else:
            await asyncio.gather(*(pc.close() for pc in pcs))


# -- sources and tracks --------------------------------------------------------------------------


class _PcmSource:
    """A 440 Hz tone with some noise, 20 ms mono s16 AudioFrames."""

    def __init__(self) -> None:
        t = np.arange(RATE) / RATE
        rng = np.random.default_rng(1)
        tone = 8000 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 500, RATE)
        self._pcm = tone.astype(np.int16)
        self._index = 0

    def next_frame(self) -> av.AudioFrame:
        offset = (self._index * SAMPLES) % RATE
        frame = av.AudioFrame.from_ndarray(
            self._pcm[offset : offset + SAMPLES].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = self._index * SAMPLES
        frame.time_base = TIME_BASE
        self._index += 1
        return frame


class _OpusSource:
    """The same tone, Opus-encoded once per frame (mono, 32 kbit/s, voip), as a node would."""

    def __init__(self) -> None:
        self._pcm = _PcmSource()
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.bit_rate = 32000
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = RATE
        self._codec.time_base = TIME_BASE
        self._codec.options = {"application": "voip"}

    def next_packet(self) -> bytes:
        while True:
            packets = self._codec.encode(self._pcm.next_frame())
            if packets:
                return bytes(packets[0])


class _PacedPcmTrack(MediaStreamTrack):
    """Stock-style source: recv() waits for the next 20 ms slot, then returns a raw frame."""

    kind = "audio"

    def __init__(self, source: _PcmSource, frames: int) -> None:
        super().__init__()
        self._source = source
        self._frames = frames
        self._start: float | None = None
        self._index = 0
        self.sent: dict[int, float] = {}

    async def recv(self) -> av.AudioFrame:
        if self._index >= self._frames:
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        await _sleep_until(self._start + self._index * TICK)
        frame = self._source.next_frame()
        self.sent[self._index] = time.monotonic()
        self._index += 1
        return frame


class _QueuedPcmTrack(MediaStreamTrack):
    """One listener's copy of the raw frames; bounded (drop oldest) so overload shows as loss."""

    kind = "audio"

    def __init__(self, limit: int = 16) -> None:
        super().__init__()
        self._frames: deque[av.AudioFrame] = deque()
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = 0

    def push(self, frame: av.AudioFrame) -> None:
        if len(self._frames) >= self._limit:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append(frame)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def recv(self) -> av.AudioFrame:
        while not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._frames.popleft()


# -- helpers ---------------------------------------------------------------------------------------


async def _connect_links(offerer: RtcLink, answerer: RtcLink) -> None:
    answer = await answerer.accept_offer(await offerer.create_offer())
    await offerer.accept_answer(answer)
    async with asyncio.timeout(10):
        if not (await offerer.wait_connected() and await answerer.wait_connected()):
            raise RuntimeError("links did not connect")


async def _connect_stock(a: RTCPeerConnection, b: RTCPeerConnection) -> None:
    with using_host_addresses(LOOPBACK):
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    async with asyncio.timeout(10):
        while a.connectionState != "connected" or b.connectionState != "connected":
            await asyncio.sleep(0.005)


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _percentiles(delays: list[float], expected: int) -> dict:
    if not delays:
        return {"p50": float("nan"), "p95": float("nan"), "frames": 0, "expected": expected}
    ms = sorted(d * 1000 for d in delays)
    return {
        "p50": round(statistics.median(ms), 2),
        "p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
        "frames": len(ms),
        "expected": expected,
    }


def _print_tables(latency: dict, fanout: list[dict], window: float) -> None:
    ours, stock = latency["ours"], latency["stock"]
    print("latency send -> delivery, one loopback link, 20 ms frames (ms)")
    print(f"  {'':28} {'p50':>8} {'p95':>8} {'frames':>9}")
    print(
        f"  {'p2pvoix pass-through':28} {ours['p50']:8.2f} {ours['p95']:8.2f} "
        f"{ours['frames']:>4}/{ours['expected']}"
    )
    print(
        f"  {'stock aiortc (encode+jitter)':28} {stock['p50']:8.2f} {stock['p95']:8.2f} "
        f"{stock['frames']:>4}/{stock['expected']}"
    )
    print(f"  stock / ours: p50 x{latency['ratio_p50']}, p95 x{latency['ratio_p95']}")
    print()
    print(
        f"fan-out: one sender node, N listeners, {window:.0f} s window "
        f"({int(round(window / TICK))} frames each)"
    )
    print(
        f"  {'N':>3} | {'pass-through CPU':>16} {'frames min/mean':>16} {'receivers CPU':>13} | "
        f"{'stock CPU':>10} {'frames min/mean':>16} | {'CPU ratio':>9}"
    )
    by = {(r["mode"], r["n"]): r for r in fanout}
    for n in sorted({r["n"] for r in fanout}):
        p, s = by[("passthrough", n)], by[("stock", n)]
        ratio = s["cpu_percent"] / p["cpu_percent"] if p["cpu_percent"] else float("nan")
        print(
            f"  {n:>3} | {p['cpu_percent']:>15.1f}% {p['frames_min']:>7}/{p['frames_mean']:<8} "
            f"{p['listeners_cpu_percent']:>12.1f}% | "
            f"{s['cpu_percent']:>9.1f}% {s['frames_min']:>7}/{s['frames_mean']:<8} | "
            f"x{ratio:>8.1f}"
        )


if __name__ == "__main__":
    main(quick=True)
