"""mDNS discovery of p2pvoix nodes on the local network (docs/protocol/discovery.md §6).

``LanDiscovery`` advertises this node as ``<peer id>._p2pvoix._tcp.local.`` with the TXT record of
``directory/lan_txt.py`` and browses for every other node's. It runs zeroconf on the node's asyncio
loop (no thread), bound to the chosen interfaces' IPv4 addresses only. Everything a peer sends
stays untrusted: a TXT record that does not decode is counted as a ``Rejected`` reason and dropped;
one that does is handed to ``on_advert`` with the addresses the record resolved to, and the node
verifies the announcements and dials the addresses as hints.

This is the only module that imports zeroconf; its work-around (take packets only from the chosen
interfaces) is ``_accept_only_from``, checked by ``tests/node/test_lan.py``.
"""

from __future__ import annotations

import array
import asyncio
import logging
import socket
import struct
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from zeroconf import IPVersion, NonUniqueNameException, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from p2pvoix.directory.lan_txt import SERVICE_TYPE, LanAdvert, decode_txt, encode_txt
from p2pvoix.errors import P2pvoixError, Rejected, RejectionCounter
from p2pvoix.node.interfaces import (
    NetInterface,
    NoLanInterface,
    UnknownInterface,
    choose_interfaces,
    system_interfaces,
)

__all__ = [
    "IdentityOnLan",
    "LanDiscovery",
    "LanReason",
    "LanStatistics",
    "NetInterface",
    "NoLanInterface",
    "UnknownInterface",
    "choose_interfaces",
    "instance_label",
    "system_interfaces",
]

logger = logging.getLogger(__name__)

OnAdvert = Callable[[LanAdvert, tuple[str, ...]], None]  # (advert, IPv4 addresses it resolved to)
OnGone = Callable[[str], None]  # peer ID

RESOLVE_TIMEOUT_MS = 3000
MAX_LABEL = 63  # bytes in one DNS label (RFC 1035 §2.3.4); Ed25519 peer IDs are 52


class LanReason(StrEnum):
    """Reasons counted for mDNS input refused here (``TxtReason`` covers the TXT itself)."""

    NAME_MISMATCH = "lan-name-mismatch"  # the instance name is not the peer ID in its TXT


# ---- errors ----


class IdentityOnLan(P2pvoixError):
    """Another node on this network already advertises your identity. Stop the other p2pvoix
    that runs with this identity, then try again."""


# ---- discovery ----


@dataclass(frozen=True)
class LanStatistics:
    interfaces: tuple[str, ...]  # "name address" of each interface mDNS runs on
    advertising: bool
    peers: int  # other nodes currently seen
    adverts_seen: int  # calls of on_advert
    gone: int  # calls of on_gone
    unresolved: int  # services that did not answer a resolve in time
    rejected: Mapping[str, int]  # refused TXT records, per reason


class LanDiscovery:
    """Advertise this node and find others on the LAN over mDNS (DNS-SD).

    ``on_advert(advert, addresses)`` runs for each other node seen and again whenever its TXT
    record changes; ``on_gone(peer_id)`` when it leaves (its goodbye, or its records expiring).
    Both run on the event loop, never inside zeroconf; an exception from either is logged and
    re-raised by ``stop()``.
    """

    def __init__(
        self,
        peer_id: str,
        *,
        interfaces: tuple[str, ...] = (),
        on_advert: OnAdvert,
        on_gone: OnGone | None = None,
        rejections: RejectionCounter | None = None,
    ) -> None:
        self.peer_id = peer_id
        self._wanted = tuple(interfaces)
        self._on_advert = on_advert
        self._on_gone = on_gone
        self._label = instance_label(peer_id)
        self._name = f"{self._label}.{SERVICE_TYPE}"
        self._sightings = _Sightings(rejections)
        self._chosen: tuple[NetInterface, ...] = ()
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._lock = asyncio.Lock()  # one registration change at a time
        self._pending: dict[str, asyncio.Task[None]] = {}  # latest work per instance name
        self._errors: list[BaseException] = []
        self._counts: Counter[str] = Counter()

    async def __aenter__(self) -> LanDiscovery:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._zc is not None

    @property
    def addresses(self) -> tuple[str, ...]:
        """The IPv4 addresses mDNS is bound to (empty until started)."""
        return tuple(i.ipv4 for i in self._chosen if i.ipv4)

    async def start(self) -> None:
        """Choose interfaces and start browsing; raises ``UnknownInterface`` or ``NoLanInterface``."""
        if self._zc is not None:
            raise RuntimeError("LanDiscovery is already running")
        table = system_interfaces()
        self._chosen = choose_interfaces(self._wanted, table)
        # Our own host talks to us over loopback (unicast replies between nodes on one machine).
        accepted = {i.index for i in self._chosen} | {i.index for i in table if i.loopback}
        try:
            zc = Zeroconf(
                interfaces=list(self.addresses), ip_version=IPVersion.V4Only, use_asyncio=True
            )
        except OSError as exc:
            raise NoLanInterface(f"mDNS could not bind port 5353: {exc.strerror}") from None
        self._zc = AsyncZeroconf(zc=zc)
        try:
            # Before the first await: the engine adopts the sockets once the loop runs.
            _accept_only_from(zc, accepted)
            await zc.async_wait_for_start()
            if not zc.engine.senders:
                raise NoLanInterface(f"mDNS could not bind {', '.join(self.addresses)}")
        except BaseException:
            await self._close_zeroconf()
            raise
        self._browser = AsyncServiceBrowser(zc, [SERVICE_TYPE], handlers=[self._on_change])

    async def advertise(self, advert: LanAdvert) -> None:
        """Publish ``advert`` (register on the first call, update after); returns once announced.

        Raises ``ValueError`` if the TXT record would not fit one packet and ``IdentityOnLan`` if
        another responder holds our name.
        """
        if advert.peer_id != self.peer_id:
            raise ValueError("a node advertises only its own peer ID")
        properties = encode_txt(advert)
        async with self._lock:
            zc = self._running()
            info = AsyncServiceInfo(
                SERVICE_TYPE,
                self._name,
                port=_tcp_port(advert.addrs),
                properties=properties,
                server=f"{self._label}.local.",
                addresses=[socket.inet_aton(address) for address in self.addresses],
            )
            if self._info is None:
                try:
                    announced = await zc.async_register_service(info)
                except NonUniqueNameException:
                    raise IdentityOnLan(self._name) from None
            elif (self._info.text, self._info.port) == (info.text, info.port):
                return  # nothing changed: no need to repeat ourselves on the network
            else:
                announced = await zc.async_update_service(info)
            self._info = info
            await announced

    async def withdraw(self) -> None:
        """Stop advertising; peers are told at once (goodbye packets, RFC 6762 §10.1)."""
        async with self._lock:
            if self._info is None or self._zc is None:
                return
            info, self._info = self._info, None
            await (await self._zc.async_unregister_service(info))

    async def stop(self) -> None:
        """Say goodbye, stop browsing and release every socket and task. Idempotent."""
        try:
            await self.withdraw()
        finally:
            if self._browser is not None:
                await self._browser.async_cancel()
                self._browser = None
            pending = list(self._pending.values())
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self._close_zeroconf()
        if self._errors:
            error, self._errors = self._errors[0], []
            raise error

    def statistics(self) -> LanStatistics:
        return LanStatistics(
            interfaces=tuple(f"{i.name} {i.ipv4}" for i in self._chosen),
            advertising=self._info is not None,
            peers=self._sightings.peers,
            adverts_seen=self._counts["adverts"],
            gone=self._counts["gone"],
            unresolved=self._counts["unresolved"],
            rejected=self._sightings.rejected(),
        )

    # ---- browsing ----

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        # Called inside zeroconf's packet handling: an exception here would close its socket, so
        # this only hands the work to a task. A newer change of a name supersedes older work.
        if name.casefold() == self._name.casefold():
            return
        previous = self._pending.pop(name, None)
        if previous is not None:
            previous.cancel()  # it cannot run past its next await: its callback never fires late
        if state_change is ServiceStateChange.Removed:
            work = self._forget(name)
        else:
            work = self._resolve(name)
        task = asyncio.get_running_loop().create_task(work, name=f"lan {name}")
        self._pending[name] = task
        task.add_done_callback(lambda done: self._finished(name, done))

    async def _resolve(self, name: str) -> None:
        assert self._zc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._zc.zeroconf, RESOLVE_TIMEOUT_MS):
            self._counts["unresolved"] += 1
            return
        addresses = tuple(info.parsed_addresses(IPVersion.V4Only))
        advert = self._sightings.seen(name, info.properties, addresses)
        if advert is not None:
            self._counts["adverts"] += 1
            self._on_advert(advert, addresses)

    async def _forget(self, name: str) -> None:
        peer_id = self._sightings.gone(name)
        if peer_id is not None:
            self._counts["gone"] += 1
            if self._on_gone is not None:
                self._on_gone(peer_id)

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        if self._pending.get(name) is task:
            del self._pending[name]
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            logger.error("LAN discovery callback failed: %r", error, exc_info=error)
            self._errors.append(error)  # type: ignore[arg-type]

    # ---- helpers ----

    def _running(self) -> AsyncZeroconf:
        if self._zc is None:
            raise RuntimeError("LanDiscovery is not running: call start() first")
        return self._zc

    async def _close_zeroconf(self) -> None:
        zc, self._zc, self._info = self._zc, None, None
        if zc is not None:
            await zc.async_close()


def instance_label(peer_id: str) -> str:
    """The DNS-SD instance label of a node: its peer ID (cut to one DNS label)."""
    return peer_id[:MAX_LABEL]


class _Sightings:
    """Which peer each mDNS instance name stands for; decodes TXT and counts what it refuses."""

    def __init__(self, rejections: RejectionCounter | None) -> None:
        self._shared = rejections
        self._rejected: Counter[str] = Counter()
        self._known: dict[str, tuple[LanAdvert, tuple[str, ...]]] = {}

    @property
    def peers(self) -> int:
        return len(self._known)

    def seen(
        self, name: str, properties: dict[bytes, bytes | None], addresses: tuple[str, ...]
    ) -> LanAdvert | None:
        """The advert to report for ``name``, or None if refused or unchanged."""
        try:
            advert = decode_txt(properties)
            label = name.removesuffix("." + SERVICE_TYPE)
            # Otherwise one node could speak for another, and its goodbye would make the node
            # forget a peer that is still here.
            if label.casefold() != instance_label(advert.peer_id).casefold():
                raise Rejected(LanReason.NAME_MISMATCH, f"{label[:70]!r}")
        except Rejected as exc:
            self._rejected[exc.reason] += 1
            if self._shared is not None:
                self._shared.count(exc.reason)
            logger.info("refused the mDNS record of %r: %s", name[:100], exc)
            return None
        if self._known.get(name) == (advert, addresses):
            return None
        self._known[name] = (advert, addresses)
        return advert

    def gone(self, name: str) -> str | None:
        """The peer that ``name`` stood for, if it was reported."""
        known = self._known.pop(name, None)
        return known[0].peer_id if known is not None else None

    def rejected(self) -> dict[str, int]:
        return dict(self._rejected)


def _tcp_port(addrs: Sequence[str]) -> int:
    """The port of the first ``…/tcp/<port>`` multiaddr (0 when there is none)."""
    for addr in addrs:
        parts = addr.split("/")
        for index, part in enumerate(parts[:-1]):
            if part == "tcp" and parts[index + 1].isdigit() and int(parts[index + 1]) < 65536:
                return int(parts[index + 1])
    return 0


def _accept_only_from(zc: Zeroconf, indexes: set[int]) -> None:
    # Work-around: zeroconf receives multicast on one socket bound to 0.0.0.0:5353. Linux hands
    # such a socket the mDNS packets of every interface where any socket on the machine joined
    # the group (avahi joins on all), so queries from an interface the user did not choose would
    # be answered there by unicast, and nodes there reported. IP_MULTICAST_ALL=0 is not enough:
    # when the only socket joined there shares our port through SO_REUSEPORT (another zeroconf of
    # the same user), Linux hands ours a share of its packets (measured: about half, and the
    # other socket loses them). A socket filter on the arrival interface drops our copy instead
    # and leaves the other socket's delivery alone.
    if not sys.platform.startswith("linux"):
        return  # BSD and macOS deliver a group only to sockets that joined it on that interface
    engine = zc.engine
    sockets = [getattr(engine, "_listen_socket", None), *getattr(engine, "_respond_sockets", [])]
    if not all(isinstance(sock, socket.socket) for sock in sockets):
        raise RuntimeError("zeroconf changed: its sockets are not where p2pvoix/node/lan.py looks")
    program = _interface_filter(sorted(indexes))
    for sock in sockets:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program.fprog)
        except OSError as exc:  # a kernel without socket filters: discovery still works
            logger.warning("mDNS may hear interfaces that were not chosen: %s", exc.strerror)
            return


class _SocketFilter:
    """A classic BPF program and the ``struct sock_fprog`` pointing at it (kept alive together)."""

    def __init__(self, instructions: list[tuple[int, int, int, int]]) -> None:
        self.code = array.array("B", b"".join(struct.pack("HBBI", *i) for i in instructions))
        self.fprog = struct.pack("HP", len(instructions), self.code.buffer_info()[0])


def _interface_filter(indexes: list[int]) -> _SocketFilter:
    """Accept a packet only if it arrived on one of the interfaces ``indexes``."""
    last = len(indexes)
    program = [(_BPF_LD_W_ABS, 0, 0, _SKF_AD_IFINDEX)]
    for position, index in enumerate(indexes, start=1):
        program.append((_BPF_JEQ_K, last + 1 - position, 0, index))  # equal: on to "accept"
    program += [(_BPF_RET_K, 0, 0, 0), (_BPF_RET_K, 0, 0, 0xFFFFFFFF)]
    return _SocketFilter(program)


# <linux/filter.h>, <asm-generic/socket.h>
_SO_ATTACH_FILTER = 26
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
_SKF_AD_IFINDEX = 0xFFFFF000 + 8  # SKF_AD_OFF + SKF_AD_IFINDEX: the arrival interface
