"""What the room-level benchmarks share: loopback nodes, worker processes that never outlive the
benchmark, and small timing helpers.

Every node listens on 127.0.0.1 only and has LAN discovery off, so libp2p and ICE (which takes its
host candidates from the listen addresses, ``session.room.default_rtc_config``) never touch a real
interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.identity.store import Identity
from p2pvoix.node.bridge import Portal
from p2pvoix.node.config import NodeConfig
from p2pvoix.node.runtime import Node

LISTEN = ("/ip4/127.0.0.1/tcp/0",)
NO_HOME = Path("/nonexistent")  # nodes never read their home; nothing is written there


# -- nodes -----------------------------------------------------------------------------------------


def new_identity() -> Identity:
    return Identity(SigningKey(os.urandom(32)), None)


def loopback_config(bootstrap: tuple[str, ...] = (), announce_ttl_s: float = 60.0) -> NodeConfig:
    return NodeConfig(home=NO_HOME, listen=LISTEN, lan=False, bootstrap=tuple(bootstrap),
                      announce_ttl_s=announce_ttl_s)


async def start_node(portal: Portal, bootstrap: tuple[str, ...] = (), **config: Any) -> Node:
    """A started node with a new identity, on the shared ``portal``."""
    node = Node(new_identity(), loopback_config(bootstrap, **config), portal=portal)
    await node.start()
    return node


# -- worker processes ------------------------------------------------------------------------------


@contextlib.contextmanager
def worker(target: Callable[..., None], *args: Any, name: str,
           grace: float = 20.0) -> Iterator[tuple[multiprocessing.Process, Connection]]:
    """Run ``target(pipe, *args)`` in a fresh (spawned) process; yields it and our end of the pipe.

    On exit our end of the pipe is closed (the worker sees EOF: its cue to clean up and leave),
    then the worker has ``grace`` seconds before it is killed; it is always joined.
    """
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_worker_main, args=(target, name, theirs, *args), name=name,
                              daemon=True)
    process.start()
    theirs.close()  # so that a worker's death reads as EOF here
    try:
        yield process, ours
    finally:
        ours.close()
        process.join(grace)
        if process.is_alive():
            process.kill()
            process.join()


def _worker_main(target: Callable[..., None], name: str, *args: Any) -> None:
    level = os.environ.get("BENCH_LOG")  # e.g. BENCH_LOG=INFO: why a worker struggles
    if level:
        logging.basicConfig(format=f"{name} %(relativeCreated)d %(name)s: %(message)s")
        logging.getLogger("p2pvoix").setLevel(level.upper())
    target(*args)


def expect(pipe: Connection, timeout: float, what: str) -> Any:
    """The worker's next message; raises if none comes within ``timeout`` or the worker died."""
    if not pipe.poll(timeout):
        raise RuntimeError(f"no {what} within {timeout:.0f} s")
    try:
        message = pipe.recv()
    except EOFError:
        raise RuntimeError(f"the worker died before sending {what}") from None
    if isinstance(message, dict) and "error" in message:
        raise RuntimeError(f"worker failed before {what}: {message['error']}")
    return message


async def receive(pipe: Connection) -> Any:
    """The next message on ``pipe``, from asyncio (``None`` once the other end is closed)."""
    try:
        return await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    except EOFError:
        return None


# -- timing ----------------------------------------------------------------------------------------


async def wait_until(predicate: Callable[[], object], timeout: float, what: str,
                     step: float = 0.01) -> float:
    """Seconds until ``predicate()`` holds; raises ``TimeoutError`` naming ``what`` after
    ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(step)
    return time.monotonic() - started


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """p50, p95 and max in milliseconds (NaN when there is nothing to summarise)."""
    if not seconds:
        nan = float("nan")
        return {"p50_ms": nan, "p95_ms": nan, "max_ms": nan, "n": 0}
    ordered = sorted(seconds)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "n": len(ordered),
    }


def goal_mark(value: float, goal: float) -> str:
    """"ok" or "MISSED" for a figure that should be at most ``goal``."""
    if value != value:  # NaN: nothing measured
        return "n/a"
    return "ok" if value <= goal else "MISSED"


async def record_stalls(stalls: list[tuple[float, float]], clock: Callable[[], float]) -> None:
    """Append (``clock()``, seconds late) whenever this loop wakes > 50 ms late from a 10 ms
    nap; runs until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(0.01)
        late = loop.time() - asked - 0.01
        if late > 0.05:
            stalls.append((clock(), late))


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds of this process's threads so far (Linux /proc), by kind: the asyncio loop
    (media, sessions), the trio thread (libp2p), and the rest (aiortc's helper threads...)."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    totals: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        kind = {"MainThread": "asyncio", "p2pvoix-trio": "libp2p"}.get(names.get(int(tid)), "other")
        totals[kind] = totals.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return totals
