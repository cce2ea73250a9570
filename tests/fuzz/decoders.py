"""Every decoder that reads a peer's bytes: how to call it, how it may refuse, what it must accept.

One row per decoder. ``refusals`` and ``reasons`` are what its module and docs/protocol/*.md
document; ``seeds`` are valid inputs to mutate; ``signed`` decoders must never accept bytes other
than a seed's (no mutation of a signed message verifies); ``accepted`` checks what a decoder
returns for input it accepts (for unsigned codecs: that re-encoding gives the same bytes, since
every encoding is canonical).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2pvoix.crypto import cbor
from p2pvoix.crypto.envelope import open_envelope
from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason
from p2pvoix.directory import exchange
from p2pvoix.directory.records import RecordReason, dht_key, verify_announcement, verify_dht_record
from p2pvoix.errors import Rejected
from p2pvoix.identity.profile import Profile
from p2pvoix.mesh import wire
from p2pvoix.room import RoomReason, RoomRejected, decode_snapshot, encode_snapshot
from p2pvoix.room.wire import CHECKPOINT, ENTRY, Action, Genesis, open_room_message
from p2pvoix.session import plan, signalling, submit, sync
from p2pvoix.session.presence import verify_presence
from tests.fuzz import corpus
from tests.vectors.kinds import NOTE, PROFILE

ENVELOPE_REASONS = frozenset(EnvelopeReason)
CBOR_REASONS = frozenset({EnvelopeReason.TOO_LARGE, EnvelopeReason.MALFORMED,
                          EnvelopeReason.NOT_CANONICAL, EnvelopeReason.TOO_DEEP})
# What opening a room message can say (authority.md §2); the rest of RoomReason is the log's.
ROOM_DECODE_REASONS = frozenset({RoomReason.FORGED, RoomReason.MALFORMED, RoomReason.OVERSIZED,
                                 RoomReason.WRONG_ROOM, RoomReason.UNKNOWN_OP,
                                 RoomReason.OUT_OF_SEQUENCE})


@dataclass(frozen=True)
class Decoder:
    name: str
    decode: Callable[[bytes], Any]
    refusals: tuple[type[Exception], ...]
    reasons: frozenset[str]
    seeds: Callable[[], list[bytes]]
    signed: bool
    accepted: Callable[[bytes, Any], None] = field(default=lambda data, result: None)

    def __str__(self) -> str:
        return self.name


def _same_bytes(encode: Callable[[Any], bytes]) -> Callable[[bytes, Any], None]:
    def check(data: bytes, result: Any) -> None:
        assert encode(result) == data, "accepted bytes that are not the canonical encoding"
    return check


def _encoded(data: bytes, result: Any) -> None:
    assert result.encoded == data


def _profile(data: bytes, result: Profile) -> None:
    assert result.envelope.encoded == data and result.key == result.envelope.signer


def _sync_request(data: bytes, result: sync.SyncRequest) -> None:
    assert result.after is None or (isinstance(result.after, bytes) and len(result.after) == 32)


def _sync_reply(data: bytes, result: sync.SyncReply) -> None:
    assert isinstance(result.genesis, bytes) and isinstance(result.more, bool)
    assert len(result.entries) <= sync.MAX_ENTRIES and len(result.presence) <= sync.MAX_PRESENCE


def _plan_request(data: bytes, result: tuple[bytes, Any]) -> None:
    assert isinstance(result[0], bytes)


def _cbor(data: bytes) -> Any:
    return cbor.decode(data, max_size=16 * 1024)


def _frame_bytes(frame: wire.Frame) -> bytes:
    if isinstance(frame, wire.AudioFrame):
        return wire.encode_audio(frame)
    if isinstance(frame, wire.Heartbeat):
        return wire.encode_heartbeat(frame.counter)
    return bytes([wire.FrameType[type(frame).__name__.upper()]])  # a one-byte signal


def _verify_answer(data: bytes) -> signalling.Answer:
    return signalling.verify_answer(data, corpus.ROOM, peer=corpus.HOST.public,
                                    offer=corpus.offer(), now_ms=corpus.T)


SIGNAL_REASONS = ENVELOPE_REASONS | frozenset(signalling.SignalReason)

DECODERS = [
    Decoder("cbor", _cbor, (EnvelopeError,), CBOR_REASONS,
            lambda: corpus.envelopes() + corpus.sync_replies() + corpus.snapshots()[:1],
            signed=False, accepted=_same_bytes(cbor.encode)),
    Decoder("envelope", lambda d: open_envelope(d, (NOTE, PROFILE)), (EnvelopeError,),
            ENVELOPE_REASONS, lambda: list(dict.fromkeys(corpus.envelopes() + corpus.profiles())),
            signed=True, accepted=_encoded),
    Decoder("profile", Profile.decode, (EnvelopeError,), ENVELOPE_REASONS, corpus.profiles,
            signed=True, accepted=_profile),
    Decoder("genesis", lambda d: Genesis.decode(d, corpus.authority_room()), (RoomRejected,),
            ROOM_DECODE_REASONS, lambda: [corpus.genesis().encoded], signed=True,
            accepted=_encoded),
    Decoder("action", lambda d: Action.decode(d, corpus.authority_room()), (RoomRejected,),
            ROOM_DECODE_REASONS, corpus.actions, signed=True, accepted=_encoded),
    Decoder("room-message",
            lambda d: open_room_message(d, (ENTRY, CHECKPOINT), corpus.authority_room()),
            (RoomRejected,), ROOM_DECODE_REASONS, corpus.room_messages, signed=True,
            accepted=_encoded),
    Decoder("snapshot", decode_snapshot, (RoomRejected,), frozenset({RoomReason.BAD_CHECKPOINT}),
            corpus.snapshots, signed=False, accepted=_same_bytes(encode_snapshot)),
    Decoder("announcement", lambda d: verify_announcement(d, corpus.T), (Rejected,),
            ENVELOPE_REASONS | frozenset(RecordReason), corpus.announcements, signed=True,
            accepted=_encoded),
    Decoder("dht-record",
            lambda d: verify_dht_record(dht_key(corpus.ROOM_KEY.public), d, corpus.T),
            (Rejected,), ENVELOPE_REASONS | frozenset(RecordReason), corpus.announcements,
            signed=True, accepted=_encoded),
    Decoder("exchange-request", exchange.check_request, (Rejected,),
            frozenset({exchange.ExchangeReason.MALFORMED}), corpus.exchange_requests,
            signed=False, accepted=_same_bytes(lambda _: exchange.REQUEST)),
    Decoder("exchange-reply", exchange.decode_reply, (Rejected,),
            frozenset({exchange.ExchangeReason.MALFORMED}), corpus.exchange_replies,
            signed=False, accepted=_same_bytes(exchange.encode_reply)),
    Decoder("link-frame", wire.decode, (Rejected,), frozenset(wire.FrameReason), corpus.frames,
            signed=False, accepted=_same_bytes(_frame_bytes)),
    Decoder("presence", lambda d: verify_presence(d, corpus.ROOM, corpus.T), (Rejected,),
            ENVELOPE_REASONS | {"presence-from-future", "presence-expired"}, corpus.presences,
            signed=True, accepted=lambda data, result: _encoded(data, result.envelope)),
    Decoder("offer",
            lambda d: signalling.verify_offer(d, corpus.ROOM, peer=corpus.LISTENER.public,
                                              now_ms=corpus.T),
            (Rejected,), SIGNAL_REASONS, corpus.offers, signed=True, accepted=_encoded),
    Decoder("answer", _verify_answer, (Rejected,), SIGNAL_REASONS, corpus.answers, signed=True,
            accepted=_encoded),
    Decoder("sync-request", sync.decode_request, (Rejected,),
            frozenset({sync.SyncReason.MALFORMED}), corpus.sync_requests, signed=False,
            accepted=_sync_request),
    Decoder("sync-reply", sync.decode_reply, (Rejected,), frozenset({sync.SyncReason.MALFORMED}),
            corpus.sync_replies, signed=False, accepted=_sync_reply),
    Decoder("submit-reply", submit.decode_reply, (Rejected,), frozenset({"submit-malformed"}),
            corpus.submit_replies, signed=False, accepted=_same_bytes(submit.encode_reply)),
    Decoder("plan", lambda d: plan.verify_plan(d, corpus.ROOM, corpus.HOST.public), (Rejected,),
            ENVELOPE_REASONS | {plan.PlanReason.NOT_SEQUENCER}, corpus.plans, signed=True,
            accepted=_encoded),
    Decoder("plan-request", plan.decode_request, (Rejected,),
            frozenset({plan.PlanReason.MALFORMED}), corpus.plan_requests, signed=False,
            accepted=_plan_request),
]
SIGNED = [decoder for decoder in DECODERS if decoder.signed]
