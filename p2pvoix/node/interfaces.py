"""The machine's network interfaces, and which ones a node uses on the LAN.

Read from the kernel directly (ioctl on Linux, no subprocess), so it works inside network
namespaces exactly as it does on a laptop. mDNS (``lan.py``) runs only on the chosen interfaces,
and ICE uses their addresses when the user named interfaces.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from p2pvoix.errors import P2pvoixError, UsageError


class UnknownInterface(UsageError):
    """No network interface has that name. Name one of the interfaces listed below, or name none
    to use every interface that is up."""


class NoLanInterface(P2pvoixError):
    """LAN discovery is off: no network interface is up with an IPv4 address. Connect to a
    network (or name one that is up) and start again."""


@dataclass(frozen=True)
class NetInterface:
    """A network interface as the kernel reports it."""

    name: str
    index: int
    ipv4: str | None  # its (primary) IPv4 address
    up: bool
    loopback: bool
    multicast: bool


def choose_interfaces(
    names: Sequence[str], present: Sequence[NetInterface]
) -> tuple[NetInterface, ...]:
    """The interfaces to run mDNS on: those named, or with none named every interface that is
    up, has IPv4, can multicast and is not loopback. Named interfaces that cannot carry mDNS are
    skipped; raises ``UnknownInterface`` for a name that does not exist and ``NoLanInterface``
    when nothing usable is left."""
    by_name = {interface.name: interface for interface in present}
    existing = ", ".join(sorted(by_name)) or "none"
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise UnknownInterface(f"{', '.join(unknown)}: not found; interfaces here: {existing}")
    if names:
        candidates = [by_name[name] for name in dict.fromkeys(names)]
    else:
        candidates = [interface for interface in present if not interface.loopback]
    chosen = tuple(interface for interface in candidates if _unusable(interface) is None)
    if not chosen:
        why = "; ".join(f"{i.name} {_unusable(i)}" for i in candidates)
        raise NoLanInterface(why or f"interfaces here: {existing}")
    return chosen


def system_interfaces() -> tuple[NetInterface, ...]:
    """Every interface of this machine (of this network namespace) with its flags and IPv4."""
    if not sys.platform.startswith("linux"):
        return _ifaddr_interfaces()
    import fcntl  # Linux only, like the ioctl numbers below

    interfaces = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for index, name in socket.if_nameindex():
            request = struct.pack("16s16x", name.encode()[:15])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(probe, _SIOCGIFFLAGS, request), 16)[0]
            except OSError:
                continue  # vanished since if_nameindex()
            try:
                reply = fcntl.ioctl(probe, _SIOCGIFADDR, request)
                ipv4: str | None = socket.inet_ntoa(reply[20:24])
            except OSError as exc:
                if exc.errno not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                    raise
                ipv4 = None
            interfaces.append(
                NetInterface(
                    name,
                    index,
                    ipv4,
                    up=bool(flags & _IFF_UP),
                    loopback=bool(flags & _IFF_LOOPBACK),
                    multicast=bool(flags & _IFF_MULTICAST),
                )
            )
    return tuple(interfaces)


def _unusable(interface: NetInterface) -> str | None:
    if not interface.up:
        return "is down"
    if interface.ipv4 is None:
        return "has no IPv4 address"
    if interface.loopback:
        return "is loopback"
    if not interface.multicast:
        return "cannot multicast"
    return None


def _ifaddr_interfaces() -> tuple[NetInterface, ...]:
    # Not Linux: no SIOCGIF* numbers to rely on; ifaddr (a zeroconf dependency) lists adapters
    # with addresses only, so "up" means "has an address".
    import ifaddr

    interfaces = []
    for adapter in ifaddr.get_adapters():
        ipv4 = next((ip.ip for ip in adapter.ips if ip.is_IPv4), None)
        loopback = isinstance(ipv4, str) and ipv4.startswith("127.")
        interfaces.append(
            NetInterface(adapter.name, adapter.index or 0, ipv4, True, loopback, not loopback)
        )
    return tuple(interfaces)


# <linux/sockios.h>, <net/if.h>
_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_MULTICAST = 0x1000
