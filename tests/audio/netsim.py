"""A tiny network and a tick loop for driving a PlayoutBuffer in simulated time (no event loop)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from p2pvoix.audio.playout import PlayoutBuffer, PlayoutItem

FRAME_MS = 20.0


@dataclass(frozen=True)
class Arrival:
    at_ms: float
    seq: int
    payload: bytes


def payload_of(seq: int) -> bytes:
    return seq.to_bytes(4, "big")


def send(
    frames: int,
    *,
    start_seq: int = 0,
    transit_ms: float = 30.0,
    jitter: Callable[[random.Random], float] = lambda rng: 0.0,
    loss: float = 0.0,
    duplicate: float = 0.0,
    seed: int = 0,
    payloads: Callable[[int], bytes] = payload_of,
    clock_rate: float = 1.0,
) -> list[Arrival]:
    """Frames sent every 20 ms (``clock_rate`` > 1: the sender's clock runs fast), each lost
    with probability ``loss``, delayed by ``transit_ms + jitter(rng)``, and sometimes doubled;
    returned in arrival order."""
    rng = random.Random(seed)
    out = []
    for i in range(frames):
        if rng.random() < loss:
            continue
        seq = (start_seq + i) % (1 << 32)
        sent = i * FRAME_MS / clock_rate
        copies = 2 if rng.random() < duplicate else 1
        for _ in range(copies):
            out.append(Arrival(sent + transit_ms + max(0.0, jitter(rng)), seq, payloads(i)))
    out.sort(key=lambda a: a.at_ms)
    return out


def run(
    buffer: PlayoutBuffer,
    arrivals: Iterable[Arrival],
    ticks: Iterable[float],
    observe: Callable[[float, PlayoutBuffer], None] | None = None,
) -> list[tuple[float, PlayoutItem]]:
    """Push every arrival up to each tick, then pull once (and call ``observe``); returns
    (tick, item) pairs."""
    pending = sorted(arrivals, key=lambda a: a.at_ms)
    out, i = [], 0
    for now in ticks:
        while i < len(pending) and pending[i].at_ms <= now:
            buffer.push(pending[i].seq, pending[i].payload, pending[i].at_ms)
            i += 1
        out.append((now, buffer.pull(now)))
        if observe is not None:
            observe(now, buffer)
    return out


def ticks(duration_ms: float, phase_ms: float = 7.0, start_ms: float = 0.0) -> list[float]:
    """Output ticks every 20 ms."""
    count = int(duration_ms // FRAME_MS)
    return [start_ms + phase_ms + k * FRAME_MS for k in range(count)]
