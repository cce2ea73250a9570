"""The dial-back protocol, ``/p2pvoix/dialback/1.0.0`` (docs/protocol/reachability.md).

A node asks a connected peer to open TCP connections back to it, on the ports it listens on, at the
address the peer sees the request come from: if one gets through, the node can be reached from
outside. The peer never dials an address the asker names — only the one its own connection comes
from — so the service cannot be used to aim connections at a third party.

Pure: the codec and the checks. Both messages are canonical CBOR maps.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from p2pvoix.crypto import cbor
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.errors import Rejected

PROTOCOL = "/p2pvoix/dialback/1.0.0"
MAX_PORTS = 4
MAX_REQUEST = 64
MAX_REPLY = 128


class DialBackReason:
    MALFORMED = "dialback-malformed"
    TOO_SOON = "dialback-too-soon"
    BUSY = "dialback-busy"
    NO_ADDRESS = "dialback-no-address"


@dataclass(frozen=True)
class DialBack:
    """What one peer saw of us: the address our connection came from, and which of our
    ports it could open a TCP connection to there."""

    seen_ip: str
    seen_port: int
    open_ports: tuple[int, ...]


def encode_request(ports: tuple[int, ...]) -> bytes:
    return cbor.encode({"v": 1, "ports": list(_ports(list(ports)))})


def decode_request(data: bytes) -> tuple[int, ...]:
    value = _decode(data, MAX_REQUEST)
    if set(value) != {"v", "ports"}:
        raise Rejected(DialBackReason.MALFORMED, "fields")
    return _ports(value["ports"])


def encode_reply(reply: DialBack) -> bytes:
    return cbor.encode({"v": 1, "ip": reply.seen_ip, "port": reply.seen_port,
                        "open": list(reply.open_ports)})


def decode_reply(data: bytes) -> DialBack:
    value = _decode(data, MAX_REPLY)
    if set(value) != {"v", "ip", "port", "open"}:
        raise Rejected(DialBackReason.MALFORMED, "fields")
    ip, port = value["ip"], value["port"]
    if not isinstance(ip, str) or not _is_ip(ip) or not _is_port(port):
        raise Rejected(DialBackReason.MALFORMED, "seen address")
    return DialBack(ip, port, _ports(value["open"], allow_empty=True))


def _decode(data: bytes, max_size: int) -> dict[str, Any]:
    try:
        value = cbor.decode(data, max_size=max_size)
    except EnvelopeError as exc:
        raise Rejected(DialBackReason.MALFORMED, exc.reason) from None
    if not isinstance(value, dict) or type(value.get("v")) is not int or value["v"] != 1:
        raise Rejected(DialBackReason.MALFORMED, "not version 1")
    return value


def _ports(value: Any, allow_empty: bool = False) -> tuple[int, ...]:
    if (not isinstance(value, list) or len(value) > MAX_PORTS or (not value and not allow_empty)
            or not all(_is_port(p) for p in value) or len(set(value)) != len(value)):
        raise Rejected(DialBackReason.MALFORMED, "ports")
    return tuple(value)


def _is_port(value: Any) -> bool:
    return type(value) is int and 1 <= value <= 65535


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
