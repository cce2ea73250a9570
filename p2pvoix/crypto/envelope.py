"""The signed envelope that every p2pvoix message travels in (spec: docs/protocol/envelope.md).

An envelope is one canonical CBOR map::

    {"k": kind, "v": kind version, "s": signer key, ["r": room key], ["t": time ms],
     ["n": sequence], "b": body map, "x": signature}

The signature covers ``CONTEXT`` followed by the canonical encoding of the map without ``"x"``. The
kind, its version and, for room-bound kinds, the room key are inside the signed bytes, so a signature
made for one purpose or one room is never valid for another. Which fields appear is fixed by the
kind's ``KindSpec``: a field the kind does not use must be absent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from p2pvoix.crypto import cbor
from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason
from p2pvoix.crypto.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PublicKey, SigningKey
from p2pvoix.crypto.schema import Schema

CONTEXT = b"p2pvoix/envelope/v1\x00"
DEFAULT_MAX_SIZE = 16 * 1024
_MAX_KIND_LENGTH = 32
_ENVELOPE_FIELDS = frozenset("kvsrtnbx")


@dataclass(frozen=True)
class KindSpec:
    """What one kind of message looks like on the wire."""

    name: str
    body: Schema
    version: int = 1
    room: bool = False  # bound to a room: "r" present, and part of what is signed
    time: bool = False  # "t": milliseconds since the Unix epoch, set by the signer
    seq: bool = False  # "n": a sequence number in the signer's (or the log's) order
    max_size: int = DEFAULT_MAX_SIZE

    def __post_init__(self) -> None:
        if not 0 < len(self.name) <= _MAX_KIND_LENGTH:
            raise ValueError(f"kind name {self.name!r} must be 1..{_MAX_KIND_LENGTH} chars")


@dataclass(frozen=True)
class Envelope:
    """A verified message. Only ``open`` and ``seal`` make these."""

    kind: str
    version: int
    signer: PublicKey
    body: Mapping[str, Any]
    room: bytes | None
    time: int | None
    seq: int | None
    signature: bytes
    encoded: bytes  # the exact bytes received or produced; forward these, never re-encode

    @property
    def digest(self) -> bytes:
        """SHA-256 of the encoded envelope: its identity for deduplication and hash chains."""
        return hashlib.sha256(self.encoded).digest()


def seal(
    spec: KindSpec,
    key: SigningKey,
    body: Mapping[str, Any],
    *,
    room: bytes | None = None,
    time: int | None = None,
    seq: int | None = None,
) -> Envelope:
    """Sign ``body`` as a ``spec`` message; raises ``ValueError`` if it would not pass ``open``."""
    unsigned = _unsigned_map(spec, key.public.raw, dict(body), room, time, seq)
    signature = key.sign(CONTEXT + cbor.encode(unsigned))
    encoded = cbor.encode({**unsigned, "x": signature})
    try:
        return open_envelope(encoded, spec, room=room)
    except EnvelopeError as exc:
        raise ValueError(f"sealing an invalid {spec.name}: {exc}") from None


def open_envelope(
    data: bytes,
    kinds: KindSpec | Iterable[KindSpec],
    *,
    room: bytes | None = None,
    signer: PublicKey | None = None,
) -> Envelope:
    """Decode and verify ``data`` as one of ``kinds``.

    ``room``, when given, is the room the caller is in: a room-bound message for another room is
    refused. ``signer``, when given, is the only key allowed to have signed it.
    """
    specs = {kinds.name: kinds} if isinstance(kinds, KindSpec) else {k.name: k for k in kinds}
    max_size = max(spec.max_size for spec in specs.values())
    value = cbor.decode(data, max_size=max_size)
    if not isinstance(value, dict):
        raise EnvelopeError(EnvelopeReason.MALFORMED, "an envelope is a map")
    unknown = set(value) - _ENVELOPE_FIELDS
    if unknown:
        raise EnvelopeError(EnvelopeReason.UNKNOWN_FIELD, ", ".join(sorted(unknown)))
    kind = value.get("k")
    if not isinstance(kind, str):
        raise EnvelopeError(EnvelopeReason.MISSING_FIELD, "k")
    spec = specs.get(kind)
    if spec is None:
        raise EnvelopeError(EnvelopeReason.UNKNOWN_KIND, kind[:_MAX_KIND_LENGTH])
    if len(data) > spec.max_size:
        raise EnvelopeError(EnvelopeReason.TOO_LARGE, f"{len(data)} bytes > {spec.max_size}")
    version = value.get("v")
    if isinstance(version, bool) or not isinstance(version, int):
        raise EnvelopeError(EnvelopeReason.MISSING_FIELD, "v")
    if version != spec.version:
        raise EnvelopeError(EnvelopeReason.UNKNOWN_VERSION, f"{kind} version {version}")

    _expect_fields(spec, value)
    signer_raw = value["s"]
    signature = value["x"]
    if not isinstance(signer_raw, bytes) or len(signer_raw) != PUBLIC_KEY_SIZE:
        raise EnvelopeError(EnvelopeReason.BAD_KEY, "signer key must be 32 bytes")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise EnvelopeError(EnvelopeReason.BAD_FIELD, "signature must be 64 bytes")
    envelope_room = value.get("r")
    if spec.room:
        if not isinstance(envelope_room, bytes) or len(envelope_room) != PUBLIC_KEY_SIZE:
            raise EnvelopeError(EnvelopeReason.BAD_FIELD, "room key must be 32 bytes")
        if room is not None and envelope_room != room:
            raise EnvelopeError(EnvelopeReason.WRONG_ROOM, "signed for another room")
    for name in ("t", "n"):
        if name in value:
            number = value[name]
            if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 2**63:
                raise EnvelopeError(EnvelopeReason.BAD_FIELD, f"{name} must be a natural number")
    spec.body.check(value["b"])

    key = PublicKey(signer_raw)
    if signer is not None and key != signer:
        raise EnvelopeError(EnvelopeReason.WRONG_SIGNER, f"signed by {key.peer_id}")
    unsigned = {name: item for name, item in value.items() if name != "x"}
    if not key.verify(CONTEXT + cbor.encode(unsigned), signature):
        raise EnvelopeError(EnvelopeReason.BAD_SIGNATURE)
    return Envelope(
        kind=kind,
        version=version,
        signer=key,
        body=value["b"],
        room=envelope_room,
        time=value.get("t"),
        seq=value.get("n"),
        signature=signature,
        encoded=bytes(data),
    )


def _unsigned_map(
    spec: KindSpec,
    signer: bytes,
    body: dict[str, Any],
    room: bytes | None,
    time: int | None,
    seq: int | None,
) -> dict[str, Any]:
    value: dict[str, Any] = {"k": spec.name, "v": spec.version, "s": signer, "b": body}
    for name, given, wanted in (("r", room, spec.room), ("t", time, spec.time), ("n", seq, spec.seq)):
        if wanted and given is None:
            raise ValueError(f"{spec.name} needs {name!r}")
        if not wanted and given is not None:
            raise ValueError(f"{spec.name} has no {name!r}")
        if given is not None:
            value[name] = given
    return value


def _expect_fields(spec: KindSpec, value: dict[str, Any]) -> None:
    for name in ("s", "b", "x"):
        if name not in value:
            raise EnvelopeError(EnvelopeReason.MISSING_FIELD, name)
    for name, wanted in (("r", spec.room), ("t", spec.time), ("n", spec.seq)):
        if wanted and name not in value:
            raise EnvelopeError(EnvelopeReason.MISSING_FIELD, name)
        if not wanted and name in value:
            raise EnvelopeError(EnvelopeReason.UNKNOWN_FIELD, name)
