"""Presence, signalling, sync and submit messages: strict, bounded, never crashing on junk."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.crypto import cbor
from p2pvoix.crypto.envelope import open_envelope
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import SigningKey
from p2pvoix.errors import Rejected
from p2pvoix.session import signalling, submit, sync
from p2pvoix.session.presence import (
    MAX_REFRESH_MS,
    PRESENCE,
    REFRESH_MS,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    Roster,
    presence_of,
    refresh_ms,
    sign_presence,
    verify_presence,
)

ROOM = SigningKey(bytes([7] * 32)).public.raw
OTHER_ROOM = SigningKey(bytes([8] * 32)).public.raw
ALICE, BOB, MALLORY = (SigningKey(bytes([i] * 32)) for i in (1, 2, 3))
T = 1_767_225_600_000
FP = ("sha-256 " + ":".join(["0A"] * 32),)


def presence(key=ALICE, t=T, **kw):
    return sign_presence(key, ROOM, name=kw.pop("name", "Alice"), now_ms=t, **kw)


def test_roster_joins_updates_leaves_and_expires():
    roster = Roster(ROOM, me=BOB.public)
    assert roster.update(presence()) == [ParticipantJoined(ALICE.public, "Alice")]
    assert roster.update(presence()) == []  # the same record again
    assert roster.update(presence(t=T + 5, name="Alice B")) == [
        ParticipantUpdated(ALICE.public, "Alice B")]
    assert roster.update(presence(t=T + 1)) == []  # older than the one held
    assert roster.update(presence(t=T + 9, here=False)) == [
        ParticipantLeft(ALICE.public, "Alice B", "left")]
    assert roster.update(presence(t=T + 8)) == []  # older than the goodbye: no resurrection
    assert roster.update(presence(MALLORY, t=T)) == [ParticipantJoined(MALLORY.public, "Alice")]
    assert [e.reason for e in roster.expire(T + 30_000)] == ["timeout"]
    assert len(roster) == 0


def test_a_large_audience_refreshes_its_presence_less_often_and_the_stage_never_does():
    assert refresh_ms(0, on_stage=False) == refresh_ms(20, on_stage=False) == REFRESH_MS
    assert refresh_ms(200, on_stage=False) == 100_000  # the room: ~2 records a second
    assert refresh_ms(8_000, on_stage=False) == MAX_REFRESH_MS
    assert refresh_ms(8_000, on_stage=True) == REFRESH_MS  # a silent sequencer is noticed
    # A record signed with three refreshes of ttl outlives the longest wait.
    assert 3 * MAX_REFRESH_MS <= 600_000  # the schema's cap on ttl


def test_a_goodbye_outlives_every_here_record_signed_before_it():
    roster = Roster(ROOM, me=BOB.public)
    long_lived = presence(t=T, ttl_ms=3 * MAX_REFRESH_MS)
    assert roster.update(presence(t=T + 1, here=False)) == []
    roster.expire(T + 3 * MAX_REFRESH_MS - 1)
    assert roster.update(long_lived) == []  # still before the goodbye: refused


def test_presence_rejections():
    record = presence().envelope.encoded
    with pytest.raises(EnvelopeError):
        verify_presence(record, OTHER_ROOM, T)
    with pytest.raises(Rejected, match="presence-expired"):
        verify_presence(record, ROOM, T + 30_000)
    with pytest.raises(Rejected, match="presence-from-future"):
        verify_presence(presence(t=T + 60_000).envelope.encoded, ROOM, T)



def test_an_opened_presence_is_checked_like_a_received_one():
    """The room topic opens each message once (to learn its kind) and hands the envelope on: the
    same record, the same time checks, and nothing but a presence accepted."""
    record = presence().envelope.encoded
    opened = open_envelope(record, (PRESENCE, signalling.OFFER), room=ROOM)
    assert presence_of(opened, T) == verify_presence(record, ROOM, T)
    with pytest.raises(Rejected, match="presence-expired"):
        presence_of(opened, T + 30_000)
    future = presence(t=T + 60_000).envelope.encoded
    with pytest.raises(Rejected, match="presence-from-future"):
        presence_of(open_envelope(future, PRESENCE, room=ROOM), T)
    an_offer = open_envelope(offer().encoded, (PRESENCE, signalling.OFFER), room=ROOM)
    with pytest.raises(Rejected, match="not-a-presence"):
        presence_of(an_offer, T)


def offer(key=ALICE, t=T, fp=FP):
    return signalling.make_offer(key, ROOM, sdp="v=0\r\n", fingerprints=fp, nonce=bytes(16),
                                 role="listen", now_ms=t)


def test_offer_checks():
    data = offer().encoded
    assert signalling.verify_offer(data, ROOM, peer=ALICE.public, now_ms=T, sdp_fingerprints=FP)
    cases = [
        (dict(peer=BOB.public, now_ms=T), signalling.SignalReason.NOT_THE_PEER),
        (dict(peer=ALICE.public, now_ms=T + 61_000), signalling.SignalReason.STALE),
        (dict(peer=ALICE.public, now_ms=T, sdp_fingerprints=("sha-256 AB",)),
         signalling.SignalReason.FINGERPRINT_MISMATCH),
    ]
    for kwargs, reason in cases:
        with pytest.raises(Rejected) as caught:
            signalling.verify_offer(data, ROOM, **kwargs)
        assert caught.value.reason == reason
    with pytest.raises(Rejected) as caught:
        signalling.verify_offer(offer(fp=()).encoded, ROOM, peer=ALICE.public, now_ms=T)
    assert caught.value.reason == signalling.SignalReason.FINGERPRINT_MISMATCH
    with pytest.raises(EnvelopeError):
        signalling.verify_offer(data, OTHER_ROOM, peer=ALICE.public, now_ms=T)


def test_answers_must_echo_the_nonce_and_refusals_are_signed_by_the_peer():
    mine = offer()
    theirs = signalling.make_offer(ALICE, ROOM, sdp="x", fingerprints=FP, nonce=b"\1" * 16,
                                   role="listen", now_ms=T)
    answer = signalling.make_answer(BOB, ROOM, offer=theirs, sdp="v=0", fingerprints=FP, now_ms=T)
    with pytest.raises(Rejected, match="nonce"):
        signalling.verify_answer(answer.encoded, ROOM, peer=BOB.public, offer=mine, now_ms=T)
    refusal = signalling.make_answer(MALLORY, ROOM, offer=mine, now_ms=T, why="no")
    with pytest.raises(Rejected, match="not-the-peer"):
        signalling.verify_answer(refusal.encoded, ROOM, peer=BOB.public, offer=mine, now_ms=T)
    ok = signalling.make_answer(BOB, ROOM, offer=mine, now_ms=T, why="room full")
    assert not signalling.verify_answer(ok.encoded, ROOM, peer=BOB.public, offer=mine,
                                        now_ms=T).accepted


@given(st.binary(max_size=600))
def test_junk_never_crashes_any_decoder(data):
    for decode in (sync.decode_request, sync.decode_reply, submit.decode_reply):
        try:
            decode(data)
        except Rejected:
            pass
    for verify in (lambda d: verify_presence(d, ROOM, T),
                   lambda d: signalling.verify_offer(d, ROOM, peer=ALICE.public, now_ms=T)):
        try:
            verify(data)
        except (Rejected, EnvelopeError):
            pass


def test_sync_round_trip_and_caps():
    reply = sync.SyncReply(b"g", None, tuple(b"e%d" % i for i in range(2500)), (), False)
    decoded = sync.decode_reply(sync.encode_reply(reply))
    assert len(decoded.entries) == sync.MAX_ENTRIES and decoded.more
    with pytest.raises(Rejected):
        sync.decode_request(b"\xa2avb\x02aq\x01")


def test_a_sync_request_may_ask_for_entries_only_and_nothing_else():
    for request in (sync.SyncRequest(None), sync.SyncRequest(bytes(32), roster=False)):
        assert sync.decode_request(sync.encode_request(request)) == request
    for value in (True, 0, None, "false"):
        with pytest.raises(Rejected):
            sync.decode_request(cbor.encode({"v": 1, "roster": value}))
