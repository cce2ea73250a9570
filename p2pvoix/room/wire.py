"""The four room message kinds on the wire, their schemas and size caps, and the action ops.

All four are room-bound envelopes: the room key is inside the signed bytes, so nothing signed for
one room verifies in another. Parsing turns a verified envelope into a frozen dataclass or raises
``RoomRejected``; ``create_room``, ``sign_action``, ``sign_entry`` and ``sign_checkpoint`` build them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from p2pvoix.crypto.envelope import Envelope, KindSpec, open_envelope, seal
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PUBLIC_KEY_SIZE, PublicKey, SigningKey
from p2pvoix.crypto.schema import Bool, Bytes, Int, ListOf, Schema, Text
from p2pvoix.room.ops import OP_PARAMS, Op
from p2pvoix.room.reasons import RoomReason, RoomRejected, from_envelope_error
from p2pvoix.room.state import DEFAULT_SETTINGS, Settings

NONCE_SIZE = 16
DIGEST_SIZE = 32
ACTION_MAX_SIZE = 2048
ENTRY_MAX_SIZE = ACTION_MAX_SIZE + 512  # one embedded action plus the entry's own fields
GENESIS_MAX_SIZE = 2048
SNAPSHOT_MAX_SIZE = 1 << 20
CHECKPOINT_MAX_SIZE = SNAPSHOT_MAX_SIZE + 512


MAX_TAGS = 5
TITLE = Text(min=1, max=120)
TAGS = ListOf(Text(min=1, max=32), max=MAX_TAGS, unique=True)
LANGUAGE = Text(min=2, max=35)  # a BCP 47 tag; not checked further, it is only shown
SETTINGS_SCHEMA = Schema(
    required={
        "hands": Bool(),
        "max_speakers": Int(min=0, max=64),
        "mods_appoint": Bool(),
        "hand_interval_ms": Int(min=0, max=3_600_000),
        "hand_ttl_ms": Int(min=10_000, max=86_400_000),
        "invite_ttl_ms": Int(min=10_000, max=86_400_000),
    }
)
_KEY = Bytes(size=PUBLIC_KEY_SIZE)
_DIGEST = Bytes(size=DIGEST_SIZE)

GENESIS = KindSpec(
    name="room.genesis",
    body=Schema(
        required={
            "owner": _KEY,
            "title": TITLE,
            "tags": TAGS,
            "lang": LANGUAGE,
            "settings": SETTINGS_SCHEMA,
        }
    ),
    room=True,
    time=True,
    max_size=GENESIS_MAX_SIZE,
)
ACTION = KindSpec(
    name="room.action",
    body=Schema(
        required={"op": Text(min=1, max=32), "nonce": Bytes(size=NONCE_SIZE)},
        optional={
            "to": _KEY,
            "lock": Bool(),
            "title": TITLE,
            "tags": TAGS,
            "lang": LANGUAGE,
            "settings": SETTINGS_SCHEMA,
        },
    ),
    room=True,
    time=True,
    max_size=ACTION_MAX_SIZE,
)
ENTRY = KindSpec(
    name="room.entry",
    body=Schema(
        required={"prev": _DIGEST, "epoch": Int()},
        optional={"action": Bytes(max=ACTION_MAX_SIZE), "takeover": Bool()},
    ),
    room=True,
    time=True,
    seq=True,
    max_size=ENTRY_MAX_SIZE,
)
CHECKPOINT = KindSpec(
    name="room.checkpoint",
    body=Schema(required={"head": _DIGEST, "state": Bytes(max=SNAPSHOT_MAX_SIZE)}),
    room=True,
    time=True,
    seq=True,
    max_size=CHECKPOINT_MAX_SIZE,
)


@dataclass(frozen=True)
class Genesis:
    """The room's first message, signed by the room key; its digest roots the log."""

    envelope: Envelope
    owner: PublicKey
    title: str
    tags: tuple[str, ...]
    language: str
    settings: Settings

    @property
    def room(self) -> bytes:
        return self.envelope.signer.raw

    @property
    def created_ms(self) -> int:
        assert self.envelope.time is not None
        return self.envelope.time

    @property
    def digest(self) -> bytes:
        return self.envelope.digest

    @property
    def encoded(self) -> bytes:
        return self.envelope.encoded

    @classmethod
    def decode(cls, data: bytes, room: bytes | None = None) -> Genesis:
        """Verify a genesis (of ``room`` when given); raises ``RoomRejected``."""
        envelope = _open(data, GENESIS, room)
        if envelope.signer.raw != envelope.room:
            raise RoomRejected(RoomReason.FORGED, "a genesis is signed by its room key")
        body = envelope.body
        return cls(
            envelope=envelope,
            owner=PublicKey(body["owner"]),
            title=body["title"],
            tags=tuple(body["tags"]),
            language=body["lang"],
            settings=Settings.from_wire(body["settings"]),
        )


@dataclass(frozen=True)
class Action:
    """A signed request by ``actor``: a hand raise, an invitation, a mute…"""

    envelope: Envelope
    op: Op
    target: PublicKey | None = None
    lock: bool | None = None
    title: str | None = None
    tags: tuple[str, ...] | None = None
    language: str | None = None
    settings: Settings | None = None

    @property
    def actor(self) -> PublicKey:
        return self.envelope.signer

    @property
    def time_ms(self) -> int:
        assert self.envelope.time is not None
        return self.envelope.time

    @property
    def digest(self) -> bytes:
        return self.envelope.digest

    @property
    def encoded(self) -> bytes:
        return self.envelope.encoded

    @classmethod
    def decode(cls, data: bytes, room: bytes) -> Action:
        return cls.from_envelope(_open(data, ACTION, room))

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Action:
        body = envelope.body
        try:
            op = Op(body["op"])
        except ValueError:
            raise RoomRejected(RoomReason.UNKNOWN_OP, body["op"][:32]) from None
        given = set(body) - {"op", "nonce"}
        if given != OP_PARAMS[op]:
            raise RoomRejected(
                RoomReason.MALFORMED, f"{op} takes {sorted(OP_PARAMS[op])}, got {sorted(given)}"
            )
        return cls(
            envelope=envelope,
            op=op,
            target=PublicKey(body["to"]) if "to" in body else None,
            lock=body.get("lock"),
            title=body.get("title"),
            tags=tuple(body["tags"]) if "tags" in body else None,
            language=body.get("lang"),
            settings=Settings.from_wire(body["settings"]) if "settings" in body else None,
        )


@dataclass(frozen=True)
class Entry:
    """Position ``seq`` of the log: one action, or a takeover record, chained to ``prev``."""

    envelope: Envelope
    prev: bytes
    epoch: int
    action: Action | None  # None: a takeover record

    @property
    def sequencer(self) -> PublicKey:
        return self.envelope.signer

    @property
    def seq(self) -> int:
        assert self.envelope.seq is not None
        return self.envelope.seq

    @property
    def time_ms(self) -> int:
        assert self.envelope.time is not None
        return self.envelope.time

    @property
    def is_takeover(self) -> bool:
        return self.action is None

    @property
    def digest(self) -> bytes:
        return self.envelope.digest

    @property
    def encoded(self) -> bytes:
        return self.envelope.encoded

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Entry:
        body = envelope.body
        if ("action" in body) == ("takeover" in body):
            raise RoomRejected(RoomReason.MALFORMED, "an entry holds an action or a takeover")
        if body.get("takeover") is False:
            raise RoomRejected(RoomReason.MALFORMED, "takeover must be true when present")
        if envelope.seq == 0:
            raise RoomRejected(RoomReason.OUT_OF_SEQUENCE, "entries start at 1")
        action = None
        if "action" in body:
            assert envelope.room is not None
            action = Action.decode(body["action"], envelope.room)
        return cls(envelope, body["prev"], body["epoch"], action)


@dataclass(frozen=True)
class Checkpoint:
    """The room key's signed snapshot of the state after entry ``seq`` (whose digest is ``head``)."""

    envelope: Envelope
    head: bytes
    snapshot: bytes  # canonical CBOR of the state; see ``snapshot.decode_snapshot``

    @property
    def seq(self) -> int:
        assert self.envelope.seq is not None
        return self.envelope.seq

    @property
    def digest(self) -> bytes:
        return self.envelope.digest

    @property
    def encoded(self) -> bytes:
        return self.envelope.encoded

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Checkpoint:
        if envelope.signer.raw != envelope.room:
            raise RoomRejected(RoomReason.FORGED, "a checkpoint is signed by its room key")
        return cls(envelope, envelope.body["head"], envelope.body["state"])


def open_room_message(
    data: bytes, kinds: KindSpec | Iterable[KindSpec], room: bytes
) -> Entry | Checkpoint:
    """Verify an entry or a checkpoint of ``room``; raises ``RoomRejected``."""
    envelope = _open(data, kinds, room)
    if envelope.kind == CHECKPOINT.name:
        return Checkpoint.from_envelope(envelope)
    return Entry.from_envelope(envelope)


def create_room(
    room_key: SigningKey,
    owner: PublicKey,
    *,
    title: str,
    language: str,
    now_ms: int,
    tags: Iterable[str] = (),
    settings: Settings = DEFAULT_SETTINGS,
) -> Genesis:
    """Sign a new room's genesis; raises ``ValueError`` if a field is out of bounds."""
    body = {
        "owner": owner.raw,
        "title": title,
        "tags": list(tags),
        "lang": language,
        "settings": settings.to_wire(),
    }
    room = room_key.public.raw
    return Genesis.decode(seal(GENESIS, room_key, body, room=room, time=now_ms).encoded, room)


def sign_action(
    key: SigningKey,
    room: bytes,
    op: Op | str,
    *,
    now_ms: int,
    nonce: bytes,
    target: PublicKey | None = None,
    lock: bool | None = None,
    title: str | None = None,
    tags: Iterable[str] | None = None,
    language: str | None = None,
    settings: Settings | None = None,
) -> Action:
    """Sign an action. ``now_ms`` must exceed this identity's previous action time (replay
    protection is per-actor monotonic time); ``nonce`` is 16 random bytes from the caller."""
    body: dict[str, Any] = {"op": str(op), "nonce": nonce}
    for name, value in (("to", target.raw if target else None), ("lock", lock), ("title", title),
                        ("tags", list(tags) if tags is not None else None), ("lang", language),
                        ("settings", settings.to_wire() if settings else None)):
        if value is not None:
            body[name] = value
    envelope = seal(ACTION, key, body, room=room, time=now_ms)
    try:
        return Action.from_envelope(envelope)
    except RoomRejected as exc:
        raise ValueError(f"not a valid action: {exc}") from None


def sign_entry(
    key: SigningKey,
    room: bytes,
    *,
    seq: int,
    now_ms: int,
    prev: bytes,
    epoch: int,
    action: Action | None,
) -> Entry:
    """Sign log position ``seq`` holding ``action``, or a takeover record when it is ``None``."""
    body: dict[str, Any] = {"prev": prev, "epoch": epoch}
    if action is None:
        body["takeover"] = True
    else:
        body["action"] = action.encoded
    return Entry(seal(ENTRY, key, body, room=room, time=now_ms, seq=seq), prev, epoch, action)


def sign_checkpoint(
    room_key: SigningKey, *, seq: int, head: bytes, snapshot: bytes, now_ms: int
) -> Checkpoint:
    room = room_key.public.raw
    body = {"head": head, "state": snapshot}
    return Checkpoint.from_envelope(seal(CHECKPOINT, room_key, body, room=room, time=now_ms, seq=seq))


def _open(data: bytes, kinds: KindSpec | Iterable[KindSpec], room: bytes | None) -> Envelope:
    try:
        return open_envelope(data, kinds, room=room)
    except EnvelopeError as exc:
        raise from_envelope_error(exc) from None
