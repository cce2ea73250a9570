"""STUN Binding (RFC 8489): ask a server which address and port it saw us come from.

Pure: bytes in, bytes out; the transaction ID is an argument. Only what reachability needs — a
Binding request with no attributes, and the XOR-MAPPED-ADDRESS (or the older MAPPED-ADDRESS) of a
success response. Test vectors: RFC 5769 §2.2 (IPv4) and §2.3 (IPv6).
"""

from __future__ import annotations

import ipaddress
import struct

from p2pvoix.errors import Rejected

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI12s")  # type, length, magic cookie, transaction ID
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
MAPPED_ADDRESS = 0x0001
XOR_MAPPED_ADDRESS = 0x0020
MAX_RESPONSE = 548  # RFC 8489 §6.1: a STUN message over UDP without path MTU knowledge


class StunReason:
    MALFORMED = "stun-malformed"
    NOT_OURS = "stun-not-our-transaction"
    NOT_SUCCESS = "stun-not-a-success"
    NO_ADDRESS = "stun-no-mapped-address"


def binding_request(transaction_id: bytes) -> bytes:
    """A Binding request (20 bytes) for ``transaction_id`` (12 bytes, random per request)."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction ID is 12 bytes")
    return HEADER.pack(BINDING_REQUEST, 0, MAGIC_COOKIE, transaction_id)


def parse_binding_response(data: bytes, transaction_id: bytes) -> tuple[str, int]:
    """The mapped (address, port) of a Binding success response to ``transaction_id``.

    Raises Rejected for anything else: not STUN, another transaction, an error response, or a
    success without a mapped address. XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS (RFC 8489
    §14.2: some NATs rewrite addresses they find in packets)."""
    if len(data) < HEADER.size or len(data) > MAX_RESPONSE:
        raise Rejected(StunReason.MALFORMED, f"{len(data)} bytes")
    kind, length, cookie, txid = HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE or kind & 0xC000 or length % 4 or HEADER.size + length != len(data):
        raise Rejected(StunReason.MALFORMED, "header")
    if txid != transaction_id:
        raise Rejected(StunReason.NOT_OURS)
    if kind != BINDING_SUCCESS:
        raise Rejected(StunReason.NOT_SUCCESS, f"type 0x{kind:04x}")
    found: dict[int, tuple[str, int]] = {}
    offset = HEADER.size
    while offset < len(data):
        if offset + 4 > len(data):
            raise Rejected(StunReason.MALFORMED, "attribute header")
        attribute, size = struct.unpack_from("!HH", data, offset)
        value = data[offset + 4: offset + 4 + size]
        if len(value) != size:
            raise Rejected(StunReason.MALFORMED, "attribute length")
        if attribute in (MAPPED_ADDRESS, XOR_MAPPED_ADDRESS) and attribute not in found:
            found[attribute] = _address(value, xor=attribute == XOR_MAPPED_ADDRESS,
                                        transaction_id=txid)
        offset += 4 + size + (-size % 4)  # values are padded to 4 bytes
    mapped = found.get(XOR_MAPPED_ADDRESS) or found.get(MAPPED_ADDRESS)
    if mapped is None:
        raise Rejected(StunReason.NO_ADDRESS)
    return mapped


def _address(value: bytes, *, xor: bool, transaction_id: bytes) -> tuple[str, int]:
    if len(value) not in (8, 20) or value[1] not in (1, 2) or len(value) != (8 if value[1] == 1
                                                                               else 20):
        raise Rejected(StunReason.MALFORMED, "address")
    port = struct.unpack_from("!H", value, 2)[0]
    raw = value[4:]
    if xor:
        port ^= MAGIC_COOKIE >> 16
        mask = struct.pack("!I", MAGIC_COOKIE) + transaction_id
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=False))
    address = ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)
    return str(address), port
