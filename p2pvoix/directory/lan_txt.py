"""The mDNS TXT record of a p2pvoix node on a LAN (docs/protocol/discovery.md §6).

DNS-SD TXT strings are at most 255 bytes each and the whole record should stay in one multicast
packet, so a node's signed room announcements are carried base64url-encoded in numbered chunks.
Everything decoded here is still untrusted: announcements are verified like any other before they
reach the directory, and addresses are only dial hints.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from enum import StrEnum

from p2pvoix.errors import Rejected

SERVICE_TYPE = "_p2pvoix._tcp.local."
TXT_VERSION = b"1"
MAX_ADDRS = 8
MAX_ROOMS = 2
MAX_TXT_BYTES = 1300  # keeps one mDNS response within a single Ethernet-sized packet
_CHUNK = 200
# Matched with fullmatch: "$" would also match before a final newline.
_PEER_ID = re.compile(rb"[1-9A-HJ-NP-Za-km-z]{40,60}")
_ADDR = re.compile(rb"/[\x21-\x7e]{1,127}")
_ROOM_CHUNK = re.compile(rb"r([0-9])\.([0-9])")
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]+")


class TxtReason(StrEnum):
    MALFORMED = "txt-malformed"
    VERSION = "txt-unknown-version"
    TOO_LARGE = "txt-too-large"


@dataclass(frozen=True)
class LanAdvert:
    """What a node says about itself on the LAN (unverified until its records are checked)."""

    peer_id: str
    addrs: tuple[str, ...]
    announcements: tuple[bytes, ...]


def encode_txt(advert: LanAdvert) -> dict[bytes, bytes]:
    """TXT properties for ``advert``; raises ``ValueError`` if they would not fit one packet."""
    props: dict[bytes, bytes] = {b"v": TXT_VERSION, b"p": advert.peer_id.encode()}
    for index, addr in enumerate(advert.addrs[:MAX_ADDRS]):
        props[b"a%d" % index] = addr.encode()
    for room_index, record in enumerate(advert.announcements[:MAX_ROOMS]):
        text = base64.urlsafe_b64encode(record).rstrip(b"=")
        chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)]
        if len(chunks) > 10:
            raise ValueError("announcement too large for a TXT record")
        for chunk_index, chunk in enumerate(chunks):
            props[b"r%d.%d" % (room_index, chunk_index)] = chunk
    if txt_size(props) > MAX_TXT_BYTES:
        raise ValueError(f"TXT record of {txt_size(props)} bytes > {MAX_TXT_BYTES}")
    return props


def decode_txt(props: dict[bytes, bytes | None]) -> LanAdvert:
    """Parse TXT properties from the network; raises ``Rejected`` for anything off-format."""
    if txt_size(props) > MAX_TXT_BYTES * 2:
        raise Rejected(TxtReason.TOO_LARGE, f"{txt_size(props)} bytes")
    if props.get(b"v") != TXT_VERSION:
        raise Rejected(TxtReason.VERSION, repr(props.get(b"v"))[:20])
    peer = props.get(b"p")
    if not isinstance(peer, bytes) or not _PEER_ID.fullmatch(peer):
        raise Rejected(TxtReason.MALFORMED, "peer id")
    addrs = []
    for index in range(MAX_ADDRS):
        addr = props.get(b"a%d" % index)
        if addr is None:
            break
        if not _ADDR.fullmatch(addr):
            raise Rejected(TxtReason.MALFORMED, f"address {index}")
        addrs.append(addr.decode())
    chunks: dict[int, dict[int, bytes]] = {}
    for key, value in props.items():
        match = _ROOM_CHUNK.fullmatch(key)
        if match is None:
            continue  # unknown keys are ignored (RFC 6763 §6.4)
        if not isinstance(value, bytes) or not value:
            raise Rejected(TxtReason.MALFORMED, f"{key!r} has no value")
        chunks.setdefault(int(match[1]), {})[int(match[2])] = value
    records = []
    for room_index in sorted(chunks)[:MAX_ROOMS]:
        parts = chunks[room_index]
        if sorted(parts) != list(range(len(parts))):
            raise Rejected(TxtReason.MALFORMED, f"room {room_index} has missing chunks")
        text = b"".join(parts[i] for i in range(len(parts)))
        # b64decode with altchars would also take "+", "/" and "=" inside the text.
        if not _BASE64URL.fullmatch(text):
            raise Rejected(TxtReason.MALFORMED, f"room {room_index} is not base64url")
        try:
            # validate=True: the default silently drops characters outside the alphabet.
            padded = text + b"=" * (-len(text) % 4)
            records.append(base64.b64decode(padded, altchars=b"-_", validate=True))
        except ValueError:
            raise Rejected(TxtReason.MALFORMED, f"room {room_index} is not base64url") from None
    return LanAdvert(peer.decode(), tuple(addrs), tuple(records))


def txt_size(props: dict[bytes, bytes | None]) -> int:
    """Wire size of the TXT strings (``key=value`` each with a length byte)."""
    return sum(1 + len(key) + (1 + len(value) if value is not None else 0)
               for key, value in props.items())
