"""A ``LanDiscovery`` in a namespace, driven by JSON lines on stdin, reporting JSON lines.

    python -m tests.node.lan_helpers.lan_node --seed 1 [--iface eth0]

Commands: ``{"cmd": "advertise", "titles": [...]}``, ``{"cmd": "withdraw"}``, ``{"cmd": "stats"}``,
``{"cmd": "stop"}`` (closing stdin stops too). Reports: ``ready`` (or ``error``), ``advert``,
``gone``, ``advertised``, ``withdrawn``, ``stats``, ``stopped`` with the thread, fd and task counts
from before ``start()`` and after ``stop()``. Times are ``time.monotonic()``, which every namespace
shares.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import sys
import threading
import time

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.directory.lan_txt import LanAdvert
from p2pvoix.directory.records import announce
from p2pvoix.errors import P2pvoixError, RejectionCounter
from p2pvoix.node.lan import LanDiscovery


def key(text: str) -> SigningKey:
    return SigningKey(hashlib.sha256(text.encode()).digest())


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def stdin_commands(loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
    # A reader on fd 0 rather than a thread or a pipe transport: neither adds a thread or an fd
    # to the counts this program reports.
    commands: asyncio.Queue = asyncio.Queue()
    buffer = bytearray()

    def readable() -> None:
        data = os.read(0, 65536)
        if not data:
            loop.remove_reader(0)
            commands.put_nowait(None)
            return
        buffer.extend(data)
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            if line.strip():
                commands.put_nowait(json.loads(line))

    loop.add_reader(0, readable)
    return commands


def zeroconf_view(lan: LanDiscovery) -> dict:
    """What zeroconf bound, read from its internals (a test's view, not the adapter's API)."""
    engine = lan._zc.zeroconf.engine
    return {"senders": sorted(w.sock_name[0] for w in engine.senders)}


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    me = key(f"lan node {args.seed}")
    commands = stdin_commands(loop)
    before = {
        "threads": threading.active_count(),
        "fds": fd_count(),
        "tasks": len(asyncio.all_tasks()),
    }

    def on_advert(advert: LanAdvert, addresses: tuple[str, ...]) -> None:
        records = [base64.b64encode(r).decode() for r in advert.announcements]
        emit(
            "advert",
            peer_id=advert.peer_id,
            addrs=list(advert.addrs),
            announcements=records,
            addresses=list(addresses),
        )

    lan = LanDiscovery(
        me.public.peer_id,
        interfaces=tuple(args.iface),
        on_advert=on_advert,
        on_gone=lambda peer: emit("gone", peer_id=peer),
        rejections=RejectionCounter(),
    )
    try:
        await lan.start()
    except P2pvoixError as exc:
        emit("error", type=type(exc).__name__, message=exc.user_message)
        return
    emit(
        "ready",
        peer_id=me.public.peer_id,
        addresses=list(lan.addresses),
        interfaces=list(lan.statistics().interfaces),
        **zeroconf_view(lan),
    )
    while (command := await commands.get()) is not None and command["cmd"] != "stop":
        try:
            await obey(command, lan, me, args)
        except P2pvoixError as exc:
            emit("error", type=type(exc).__name__, message=exc.user_message)
    started = time.monotonic()
    await lan.stop()
    stats = lan.statistics()
    loop.remove_reader(0)
    emit(
        "stopped",
        seconds=time.monotonic() - started,
        before=before,
        after={
            "threads": threading.active_count(),
            "fds": fd_count(),
            "tasks": len(asyncio.all_tasks()),
        },
        rejected=dict(stats.rejected),
        adverts_seen=stats.adverts_seen,
    )


async def obey(command: dict, lan: LanDiscovery, me: SigningKey, args: argparse.Namespace) -> None:
    if command["cmd"] == "advertise":
        addrs = [f"/ip4/{a}/tcp/{args.port}" for a in lan.addresses]
        now_ms = int(time.time() * 1000)
        records = tuple(
            announce(
                key(f"lan room {args.seed}/{title}"),
                title=title,
                host=me.public,
                host_name=f"node {args.seed}",
                addrs=addrs,
                now_ms=now_ms,
                ttl_ms=600_000,
            ).encoded
            for title in command["titles"]
        )
        started = time.monotonic()
        await lan.advertise(LanAdvert(me.public.peer_id, tuple(addrs), records))
        emit("advertised", seconds=time.monotonic() - started)
    elif command["cmd"] == "withdraw":
        await lan.withdraw()
        emit("withdrawn")
    elif command["cmd"] == "stats":
        stats = lan.statistics()
        emit("stats", **{**stats.__dict__, "rejected": dict(stats.rejected)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--iface", action="append", default=[])
    parser.add_argument("--port", type=int, default=4001)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
