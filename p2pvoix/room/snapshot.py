"""The canonical encoding of a room state: what checkpoints carry and what ``state_digest`` hashes.

One state has exactly one encoding (canonical CBOR, every collection sorted), so two nodes compare
states by digest and a late joiner's state, loaded from a checkpoint, is byte-for-byte the state of a
node that replayed the whole log. Decoding re-encodes and compares, refusing any other spelling.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from p2pvoix.crypto import cbor
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PUBLIC_KEY_SIZE, PublicKey, SigningKey
from p2pvoix.crypto.schema import Bool, Bytes, Int, ListOf, OneOf, Schema, Spec
from p2pvoix.room.reasons import RoomReason, RoomRejected
from p2pvoix.room.state import Hand, Invitation, Replay, RoomState, Settings
from p2pvoix.room.wire import (
    LANGUAGE,
    SETTINGS_SCHEMA,
    SNAPSHOT_MAX_SIZE,
    TAGS,
    TITLE,
    Checkpoint,
    Genesis,
    sign_checkpoint,
)

SNAPSHOT_VERSION = 1
_STATE_DIGEST_CONTEXT = b"p2pvoix/room-state/v1\x00"
_MAX_ROWS = 100_000


@dataclass(frozen=True)
class Row(Spec):
    """A fixed-length list whose items have these shapes."""

    items: tuple[Spec, ...]

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list) or len(value) != len(self.items):
            raise self._bad(path, f"not a list of {len(self.items)}")
        for index, (item, spec) in enumerate(zip(value, self.items, strict=True)):
            spec.check(item, f"{path}[{index}]")


_KEY = Bytes(size=PUBLIC_KEY_SIZE)
_DIGEST = Bytes(size=32)
_N = Int()


def _rows(*items: Spec) -> ListOf:
    return ListOf(Row(items), max=_MAX_ROWS)


SNAPSHOT_SCHEMA = Schema(
    required={
        "v": OneOf((SNAPSHOT_VERSION,)),
        "room": _KEY,
        "genesis": _DIGEST,
        "owner": _KEY,
        "created": _N,
        "title": TITLE,
        "tags": TAGS,
        "lang": LANGUAGE,
        "settings": SETTINGS_SCHEMA,
        "seq": _N,
        "head": _DIGEST,
        "time": _N,
        "epoch": _N,
        "sequencer": _KEY,
        "ended": Bool(),
        "moderators": _rows(_KEY, _N),
        "speakers": _rows(_KEY, _N),
        "muted": _rows(_KEY, Bool()),
        "invited": _rows(_KEY, _KEY, _N),
        "hands": _rows(_KEY, _N, _N),
        "raises": _rows(_KEY, _N),
        "banned": _rows(_KEY, _N),
        "replay": _rows(_KEY, _N, _N),
    }
)


def encode_snapshot(s: RoomState) -> bytes:
    value = {
        "v": SNAPSHOT_VERSION,
        "room": s.room,
        "genesis": s.genesis,
        "owner": s.owner.raw,
        "created": s.created_ms,
        "title": s.title,
        "tags": list(s.tags),
        "lang": s.language,
        "settings": s.settings.to_wire(),
        "seq": s.seq,
        "head": s.head,
        "time": s.time_ms,
        "epoch": s.epoch,
        "sequencer": s.sequencer.raw,
        "ended": s.ended,
        "moderators": sorted([k.raw, v] for k, v in s.moderators.items()),
        "speakers": sorted([k.raw, v] for k, v in s.speakers.items()),
        "muted": sorted([k.raw, v] for k, v in s.muted.items()),
        "invited": sorted([k.raw, v.by.raw, v.at_ms] for k, v in s.invited.items()),
        "hands": sorted([k.raw, v.seq, v.at_ms] for k, v in s.hands.items()),
        "raises": sorted([k.raw, v] for k, v in s.raises.items()),
        "banned": sorted([k.raw, v] for k, v in s.banned.items()),
        "replay": sorted([k.raw, v.last_ms, v.included_ms] for k, v in s.replay.items()),
    }
    return cbor.encode(value)


def state_digest(state: RoomState) -> bytes:
    """SHA-256 naming ``state``: equal digests, equal states."""
    return hashlib.sha256(_STATE_DIGEST_CONTEXT + encode_snapshot(state)).digest()


def decode_snapshot(data: bytes) -> RoomState:
    """The state ``data`` encodes; raises ``RoomRejected(BAD_CHECKPOINT)``."""
    try:
        value = cbor.decode(data, max_size=SNAPSHOT_MAX_SIZE)
        SNAPSHOT_SCHEMA.check(value, "state")
        state = _build(value)
    except EnvelopeError as exc:
        raise RoomRejected(RoomReason.BAD_CHECKPOINT, f"{exc.reason}: {exc.detail}") from None
    if encode_snapshot(state) != data:
        raise RoomRejected(RoomReason.BAD_CHECKPOINT, "not the canonical snapshot (order, repeats)")
    roles = [set(state.moderators), set(state.speakers), set(state.banned), {state.owner}]
    if sum(map(len, roles)) != len(set().union(*roles)):
        raise RoomRejected(RoomReason.BAD_CHECKPOINT, "an identity holds two roles")
    if state.sequencer != state.owner and state.sequencer not in state.moderators:
        raise RoomRejected(RoomReason.BAD_CHECKPOINT, "the sequencer is not staff")
    return state


def make_checkpoint(room_key: SigningKey, state: RoomState, now_ms: int) -> Checkpoint:
    """Sign a checkpoint of ``state``; raises ``ValueError`` for another room's key or a state too
    large for one message."""
    if room_key.public.raw != state.room:
        raise ValueError("only the room key signs checkpoints")
    if state.seq == 0:
        raise ValueError("the genesis is its own checkpoint")
    snapshot = encode_snapshot(state)
    if len(snapshot) > SNAPSHOT_MAX_SIZE:
        raise ValueError(f"state of {len(snapshot)} bytes exceeds {SNAPSHOT_MAX_SIZE}")
    return sign_checkpoint(room_key, seq=state.seq, head=state.head, snapshot=snapshot,
                           now_ms=now_ms)


def load_checkpoint(checkpoint: Checkpoint, genesis: Genesis) -> RoomState:
    """The state a checkpoint of ``genesis``'s room vouches for; raises ``RoomRejected``."""
    state = decode_snapshot(checkpoint.snapshot)
    expected = (genesis.room, genesis.digest, genesis.owner, genesis.created_ms,
                checkpoint.seq, checkpoint.head)
    found = (state.room, state.genesis, state.owner, state.created_ms, state.seq, state.head)
    if found != expected or checkpoint.seq == 0:
        raise RoomRejected(RoomReason.BAD_CHECKPOINT, "snapshot does not match its room or head")
    return state


def _build(v: dict[str, Any]) -> RoomState:
    key = PublicKey
    return RoomState(
        room=v["room"],
        genesis=v["genesis"],
        owner=key(v["owner"]),
        created_ms=v["created"],
        title=v["title"],
        tags=tuple(v["tags"]),
        language=v["lang"],
        settings=Settings.from_wire(v["settings"]),
        seq=v["seq"],
        head=v["head"],
        time_ms=v["time"],
        epoch=v["epoch"],
        sequencer=key(v["sequencer"]),
        ended=v["ended"],
        moderators={key(k): n for k, n in v["moderators"]},
        speakers={key(k): n for k, n in v["speakers"]},
        muted={key(k): locked for k, locked in v["muted"]},
        # Expiry pops from the front of these, so rebuild them in log-time order.
        invited={
            key(k): Invitation(key(k), key(by), at)
            for k, by, at in sorted(v["invited"], key=lambda row: (row[2], row[0]))
        },
        hands={
            key(k): Hand(key(k), n, at) for k, n, at in sorted(v["hands"], key=lambda r: r[1])
        },
        raises={key(k): at for k, at in sorted(v["raises"], key=lambda row: (row[1], row[0]))},
        banned={key(k): n for k, n in v["banned"]},
        replay={
            key(k): Replay(last, included)
            for k, last, included in sorted(v["replay"], key=lambda row: (row[2], row[0]))
        },
    )
