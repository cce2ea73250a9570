"""Link frames: what travels inside each RTP payload of a media link (docs/protocol/media.md).

One link carries every speaker's audio, so each audio frame names its speaker by a *tag*, a 4-byte
hash of the room and the speaker's key; receivers map tags back to identities through the room
state and drop frames whose speaker may not be heard. Frames are forwarded byte for byte except
the hop count, which each relay increments.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from p2pvoix.errors import Rejected

VERSION = 1
MAX_OPUS_BYTES = 1275  # RFC 6716 §3.4: the largest Opus packet
MAX_HOPS = 16  # a frame relayed more often than this is looping
SILENT_LEVEL = 127

_AUDIO_HEADER = struct.Struct(">B4sIIBB")  # type, tag, seq, origin ms, level, hops
_HEARTBEAT = struct.Struct(">BI")  # type, counter
AUDIO_HEADER_SIZE = _AUDIO_HEADER.size


class FrameType(IntEnum):
    AUDIO = (VERSION << 4) | 1
    HEARTBEAT = (VERSION << 4) | 2
    BYE = (VERSION << 4) | 3
    FEED = (VERSION << 4) | 4  # from a standby child: "my parent is gone, feed me now"


class FrameReason(StrEnum):
    MALFORMED = "frame-malformed"
    VERSION = "frame-unknown-version"
    TOO_MANY_HOPS = "frame-too-many-hops"


@dataclass(frozen=True)
class AudioFrame:
    tag: bytes  # 4 bytes, see speaker_tag
    seq: int  # the speaker's 20 ms frame counter, uint32, wraps
    origin_ms: int  # the speaker's wall clock at capture, ms mod 2**32 (latency figures only)
    level: int  # speaker's level in -dBov, 0 (loud) .. 127 (silence)
    hops: int  # relays passed so far
    opus: bytes


@dataclass(frozen=True)
class Heartbeat:
    counter: int


@dataclass(frozen=True)
class Bye:
    pass


@dataclass(frozen=True)
class Feed:
    pass


Frame = AudioFrame | Heartbeat | Bye | Feed


def speaker_tag(room: bytes, speaker: bytes) -> bytes:
    """The 4-byte name of ``speaker``'s audio in ``room``."""
    return hashlib.sha256(b"p2pvoix/speaker-tag/v1\x00" + room + speaker).digest()[:4]


def encode_audio(frame: AudioFrame) -> bytes:
    if not 0 < len(frame.opus) <= MAX_OPUS_BYTES or len(frame.tag) != 4:
        raise ValueError("bad audio frame")
    header = _AUDIO_HEADER.pack(
        FrameType.AUDIO, frame.tag, frame.seq & 0xFFFFFFFF, frame.origin_ms & 0xFFFFFFFF,
        min(max(frame.level, 0), SILENT_LEVEL), frame.hops,
    )
    return header + frame.opus


def encode_heartbeat(counter: int) -> bytes:
    return _HEARTBEAT.pack(FrameType.HEARTBEAT, counter & 0xFFFFFFFF)


def encode_bye() -> bytes:
    return bytes([FrameType.BYE])


def encode_feed() -> bytes:
    return bytes([FrameType.FEED])


def decode(data: bytes) -> Frame:
    """Parse one link frame from a peer; raises ``Rejected`` for anything off-format."""
    if not data:
        raise Rejected(FrameReason.MALFORMED, "empty")
    kind = data[0]
    if kind >> 4 != VERSION:
        raise Rejected(FrameReason.VERSION, f"version {kind >> 4}")
    if kind == FrameType.AUDIO:
        if not AUDIO_HEADER_SIZE < len(data) <= AUDIO_HEADER_SIZE + MAX_OPUS_BYTES:
            raise Rejected(FrameReason.MALFORMED, f"audio frame of {len(data)} bytes")
        _, tag, seq, origin, level, hops = _AUDIO_HEADER.unpack_from(data)
        if level > SILENT_LEVEL:
            raise Rejected(FrameReason.MALFORMED, "level")
        if hops > MAX_HOPS:
            raise Rejected(FrameReason.TOO_MANY_HOPS, str(hops))
        return AudioFrame(tag, seq, origin, level, hops, bytes(data[AUDIO_HEADER_SIZE:]))
    if kind == FrameType.HEARTBEAT and len(data) == _HEARTBEAT.size:
        return Heartbeat(_HEARTBEAT.unpack(data)[1])
    if kind == FrameType.BYE and len(data) == 1:
        return Bye()
    if kind == FrameType.FEED and len(data) == 1:
        return Feed()
    raise Rejected(FrameReason.MALFORMED, f"type {kind:#x}, {len(data)} bytes")


def with_next_hop(data: bytes) -> bytes:
    """The same audio frame as forwarded by one more relay (only the hop byte changes)."""
    hops_at = AUDIO_HEADER_SIZE - 1
    return data[:hops_at] + bytes([data[hops_at] + 1]) + data[hops_at + 1 :]
