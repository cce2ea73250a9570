"""Room keys as text people paste into a chat (spec: docs/protocol/room-key.md).

``pv1`` + bech32m of: a 5-bit format version (0), then the bytes of the room's Ed25519 public key
and optional hints (the host node's key and TCP addresses) as type-length-value records. Without
hints a key is 62 characters; the key alone is always enough to find the room through the DHT.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from p2pvoix.crypto import bech32
from p2pvoix.crypto.keys import PUBLIC_KEY_SIZE, PublicKey
from p2pvoix.errors import UsageError

HRP = "pv"
FORMAT_VERSION = 0
MAX_TEXT_LENGTH = 256
MAX_ADDRESSES = 4

_HINT_HOST = 0x01
_HINT_TCP4 = 0x02
_HINT_TCP6 = 0x03


class RoomKeyReason(StrEnum):
    EMPTY = "empty"
    NOT_A_ROOM_KEY = "not-a-room-key"
    TOO_LONG = "too-long"
    MIXED_CASE = "mixed-case"
    BAD_CHARACTER = "bad-character"
    BAD_CHECKSUM = "bad-checksum"
    UNKNOWN_VERSION = "unknown-version"
    TRUNCATED = "truncated"
    BAD_HINTS = "bad-hints"


class RoomKeyError(UsageError):
    """That is not a valid p2pvoix room key. Copy the whole key (it starts with pv1) again."""

    def __init__(self, reason: RoomKeyReason, detail: str, position: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.position = position

    def pointer(self, text: str) -> str:
        """``text`` with a caret under the character at fault, when one is known."""
        if self.position is None or not 0 <= self.position < len(text):
            return text
        return f"{text}\n{' ' * self.position}^"


@dataclass(frozen=True)
class TcpAddress:
    host: str  # IPv4 or IPv6 literal
    port: int

    def multiaddr(self) -> str:
        family = "ip6" if ":" in self.host else "ip4"
        return f"/{family}/{self.host}/tcp/{self.port}"


@dataclass(frozen=True)
class RoomKey:
    """A room's public key, plus where its host was last reachable (hints, optional)."""

    key: PublicKey
    host: PublicKey | None = None
    addresses: tuple[TcpAddress, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.addresses) > MAX_ADDRESSES:
            raise ValueError(f"at most {MAX_ADDRESSES} address hints")
        if self.addresses and self.host is None:
            raise ValueError("address hints need the host key")

    @property
    def raw(self) -> bytes:
        return self.key.raw

    def bare(self) -> RoomKey:
        """The same room without hints."""
        return RoomKey(self.key)

    def text(self) -> str:
        payload = bytearray(self.key.raw)
        if self.host is not None:
            payload += bytes([_HINT_HOST, PUBLIC_KEY_SIZE]) + self.host.raw
        for address in self.addresses:
            ip = ipaddress.ip_address(address.host)
            kind = _HINT_TCP6 if ip.version == 6 else _HINT_TCP4
            value = ip.packed + address.port.to_bytes(2, "big")
            payload += bytes([kind, len(value)]) + value
        data = [FORMAT_VERSION] + bech32.convert_bits(bytes(payload), 8, 5, pad=True)
        return bech32.encode(HRP, data)

    def __str__(self) -> str:
        return self.text()

    @classmethod
    def parse(cls, text: str) -> RoomKey:
        """Read a pasted room key; raises ``RoomKeyError`` saying what is wrong, and where."""
        if not isinstance(text, str) or not text.strip():
            raise RoomKeyError(RoomKeyReason.EMPTY, "The room key is empty.")
        text = text.strip()
        if not text.lower().startswith(HRP + "1"):
            raise RoomKeyError(
                RoomKeyReason.NOT_A_ROOM_KEY, f"A room key starts with {HRP}1; this starts with "
                f"{text[:4]!r}."
            )
        try:
            hrp, data = bech32.decode(text, max_length=MAX_TEXT_LENGTH)
        except bech32.Bech32Error as exc:
            raise _from_bech32(exc.problem) from None
        if hrp != HRP:
            raise RoomKeyError(RoomKeyReason.NOT_A_ROOM_KEY, f"Prefix {hrp!r} is not {HRP!r}.")
        if not data:
            raise RoomKeyError(RoomKeyReason.TRUNCATED, "The key holds no data.")
        if data[0] != FORMAT_VERSION:
            raise RoomKeyError(
                RoomKeyReason.UNKNOWN_VERSION,
                f"Room key format {data[0]} is newer than this p2pvoix understands; upgrade it.",
                position=len(HRP) + 1,
            )
        try:
            payload = bytes(bech32.convert_bits(data[1:], 5, 8, pad=False))
        except ValueError:
            raise RoomKeyError(RoomKeyReason.TRUNCATED, "The key was cut short.") from None
        if len(payload) < PUBLIC_KEY_SIZE:
            raise RoomKeyError(RoomKeyReason.TRUNCATED, "The key was cut short.")
        return cls._from_payload(payload)

    @classmethod
    def _from_payload(cls, payload: bytes) -> RoomKey:
        key = PublicKey(payload[:PUBLIC_KEY_SIZE])
        host: PublicKey | None = None
        addresses: list[TcpAddress] = []
        rest = payload[PUBLIC_KEY_SIZE:]
        while rest:
            if len(rest) < 2 or len(rest) < 2 + rest[1]:
                raise RoomKeyError(RoomKeyReason.BAD_HINTS, "A hint is cut short.")
            kind, length, value, rest = rest[0], rest[1], rest[2 : 2 + rest[1]], rest[2 + rest[1] :]
            if kind == _HINT_HOST and length == PUBLIC_KEY_SIZE and host is None:
                host = PublicKey(value)
            elif kind in (_HINT_TCP4, _HINT_TCP6) and len(addresses) < MAX_ADDRESSES:
                size = 4 if kind == _HINT_TCP4 else 16
                if length != size + 2:
                    raise RoomKeyError(RoomKeyReason.BAD_HINTS, "An address hint has a bad size.")
                ip = ipaddress.ip_address(value[:size])
                addresses.append(TcpAddress(str(ip), int.from_bytes(value[size:], "big")))
            elif kind in (_HINT_HOST, _HINT_TCP4, _HINT_TCP6):
                raise RoomKeyError(RoomKeyReason.BAD_HINTS, f"Hint {kind} is repeated or malformed.")
            # Unknown hint types are skipped: a newer p2pvoix may add hints an older one can ignore.
        if addresses and host is None:
            raise RoomKeyError(RoomKeyReason.BAD_HINTS, "Address hints without the host key.")
        return cls(key, host, tuple(addresses))


def _from_bech32(problem: bech32.Bech32Problem) -> RoomKeyError:
    where = f" at character {problem.position + 1}" if problem.position is not None else ""
    if problem.reason == "too-long":
        return RoomKeyError(RoomKeyReason.TOO_LONG, f"Longer than {MAX_TEXT_LENGTH} characters.")
    if problem.reason == "mixed-case":
        return RoomKeyError(
            RoomKeyReason.MIXED_CASE, f"Mixes upper and lower case{where}.", problem.position
        )
    if problem.reason == "bad-character":
        return RoomKeyError(
            RoomKeyReason.BAD_CHARACTER,
            f"Has a character that cannot be in a room key{where} (room keys never contain "
            "b, i, o or 1 after the prefix).",
            problem.position,
        )
    if problem.reason == "bad-checksum":
        if problem.position is not None:
            detail = f"Checksum mismatch: character {problem.position + 1} looks mistyped."
        else:
            detail = "Checksum mismatch: a character is missing, extra or mistyped."
        return RoomKeyError(RoomKeyReason.BAD_CHECKSUM, detail, problem.position)
    return RoomKeyError(RoomKeyReason.TRUNCATED, "The key was cut short.")
