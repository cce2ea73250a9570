"""Media signalling messages: an SDP offer and answer, each bound to its sender's identity
(docs/protocol/session.md §4).

The sender signs its SDP together with the DTLS certificate fingerprints that the SDP declares, the
room and a nonce. The receiver checks the signer is the libp2p peer that sent the request (Noise
authenticated it), that the signed fingerprints are exactly the SDP's, and that the answer echoes
the offer's nonce. aiortc then refuses any DTLS certificate that does not match the SDP, so the
media session is bound to the identity: a relay that swaps the SDP or its fingerprints is caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from p2pvoix.crypto.envelope import KindSpec, open_envelope, seal
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.crypto.schema import Bool, Bytes, ListOf, OneOf, Schema, Text
from p2pvoix.errors import Rejected

PROTOCOL = "/p2pvoix/media/1.0.0"
MAX_SDP = 16 * 1024
MAX_AGE_MS = 60_000
NONCE_SIZE = 16
ROLES = ("listen", "stage", "child", "backup")

_FINGERPRINT = Text(min=1, max=240)  # "sha-512 AB:CD:…" is 199 characters
OFFER = KindSpec(
    name="media.offer",
    body=Schema(required={
        "sdp": Bytes(max=MAX_SDP),
        "fp": ListOf(_FINGERPRINT, max=4),
        "nonce": Bytes(size=NONCE_SIZE),
        "role": OneOf(ROLES),
    }),
    room=True,
    time=True,
    max_size=MAX_SDP + 1024,
)
ANSWER = KindSpec(
    name="media.answer",
    body=Schema(
        required={
            "accept": Bool(),
            "nonce": Bytes(size=NONCE_SIZE),
            "sdp": Bytes(max=MAX_SDP),
            "fp": ListOf(_FINGERPRINT, max=4),
        },
        optional={"why": Text(max=200)},
    ),
    room=True,
    time=True,
    max_size=MAX_SDP + 1024,
)


class SignalReason(StrEnum):
    FINGERPRINT_MISMATCH = "signal-fingerprint-mismatch"
    NOT_THE_PEER = "signal-not-the-peer"
    STALE = "signal-stale"
    NONCE = "signal-nonce-mismatch"
    BAD_SDP = "signal-bad-sdp"


@dataclass(frozen=True)
class Offer:
    sender: PublicKey
    sdp: str
    fingerprints: tuple[str, ...]
    nonce: bytes
    role: str
    time_ms: int
    encoded: bytes


@dataclass(frozen=True)
class Answer:
    sender: PublicKey
    accepted: bool
    why: str
    sdp: str
    fingerprints: tuple[str, ...]
    nonce: bytes
    time_ms: int
    encoded: bytes


def format_fingerprints(pairs: list[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(f"{algorithm} {value}" for algorithm, value in pairs)


def make_offer(key: SigningKey, room: bytes, *, sdp: str, fingerprints: tuple[str, ...],
               nonce: bytes, role: str, now_ms: int) -> Offer:
    body = {"sdp": sdp.encode(), "fp": list(fingerprints), "nonce": nonce, "role": role}
    return _offer(seal(OFFER, key, body, room=room, time=now_ms).encoded, room)


def make_answer(key: SigningKey, room: bytes, *, offer: Offer, sdp: str = "",
                fingerprints: tuple[str, ...] = (), now_ms: int, why: str = "") -> Answer:
    """An acceptance (with ``sdp``) or, with an empty ``sdp``, a refusal saying ``why``."""
    body: dict[str, object] = {
        "accept": bool(sdp), "nonce": offer.nonce, "sdp": sdp.encode(), "fp": list(fingerprints),
    }
    if why:
        body["why"] = why[:200]
    return _answer(seal(ANSWER, key, body, room=room, time=now_ms).encoded, room)


def verify_offer(data: bytes, room: bytes, *, peer: PublicKey, now_ms: int,
                 sdp_fingerprints: tuple[str, ...] | None = None) -> Offer:
    """Check an offer received from ``peer``; ``sdp_fingerprints`` are those parsed from its SDP."""
    offer = _offer(data, room)
    _check_common(offer.sender, peer, offer.fingerprints, sdp_fingerprints, now_ms, offer.time_ms)
    return offer


def verify_answer(data: bytes, room: bytes, *, peer: PublicKey, offer: Offer, now_ms: int,
                  sdp_fingerprints: tuple[str, ...] | None = None) -> Answer:
    answer = _answer(data, room)
    if answer.nonce != offer.nonce:
        raise Rejected(SignalReason.NONCE, "the answer is not for our offer")
    if answer.accepted:
        _check_common(answer.sender, peer, answer.fingerprints, sdp_fingerprints, now_ms,
                      answer.time_ms)
    elif answer.sender != peer:
        raise Rejected(SignalReason.NOT_THE_PEER, "refusal signed by someone else")
    return answer


def _check_common(sender: PublicKey, peer: PublicKey, signed: tuple[str, ...],
                  in_sdp: tuple[str, ...] | None, now_ms: int, time: int) -> None:
    if sender != peer:
        raise Rejected(SignalReason.NOT_THE_PEER, f"signed by {sender.peer_id}")
    if abs(now_ms - time) > MAX_AGE_MS:
        raise Rejected(SignalReason.STALE, f"{(now_ms - time) / 1000:.0f} s old")
    if not signed:
        raise Rejected(SignalReason.FINGERPRINT_MISMATCH, "no signed fingerprint")
    if in_sdp is not None and tuple(sorted(in_sdp)) != tuple(sorted(signed)):
        raise Rejected(SignalReason.FINGERPRINT_MISMATCH, "SDP fingerprints are not the signed ones")


def _offer(data: bytes, room: bytes) -> Offer:
    envelope = open_envelope(data, OFFER, room=room)
    body = envelope.body
    return Offer(envelope.signer, _sdp(body["sdp"]), tuple(body["fp"]), body["nonce"],
                 body["role"], envelope.time or 0, envelope.encoded)


def _answer(data: bytes, room: bytes) -> Answer:
    envelope = open_envelope(data, ANSWER, room=room)
    body = envelope.body
    return Answer(envelope.signer, body["accept"], body.get("why", ""), _sdp(body["sdp"]),
                  tuple(body["fp"]), body["nonce"], envelope.time or 0, envelope.encoded)


def _sdp(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise Rejected(SignalReason.BAD_SDP, "not UTF-8") from None
