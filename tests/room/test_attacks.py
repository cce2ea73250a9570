"""The adversarial catalogue: one test per attack on the log. Each checks that the message is
refused with its reason code, that the refusal is counted, and that the state (and the view an
observer holds) is exactly what it was."""

from __future__ import annotations

import pytest

from p2pvoix.crypto.envelope import KindSpec, seal
from p2pvoix.crypto.schema import Bool, Bytes, Int, Schema, Text
from p2pvoix.room import (
    DEFAULT_SETTINGS,
    Genesis,
    Op,
    RoomLog,
    RoomReason,
    RoomRejected,
    create_room,
    sign_action,
    sign_entry,
)
from p2pvoix.room.log import ENTRY_MAX_FUTURE_MS, MAX_PENDING_PER_SIGNER
from p2pvoix.room.transitions import ACTION_MAX_AGE_MS, ACTION_MAX_LEAD_MS
from p2pvoix.room.wire import ACTION_MAX_SIZE, ENTRY_MAX_SIZE, GENESIS
from tests.room.helpers import (
    MODS,
    OTHER_ROOM_KEY,
    OWNER,
    PEOPLE,
    ROOM_KEY,
    Room,
    assert_refused,
    receive_ok,
)

A, B = PEOPLE[0], PEOPLE[1]


@pytest.fixture
def room() -> Room:
    room = Room()
    room.staff(moderators=1, speakers=1)
    return room


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


# -- forged ---------------------------------------------------------------------------------------


def test_forged_entry_signature(room: Room) -> None:
    entry = room.raw_entry(room.log, OWNER, room.action(B, Op.RAISE_HAND))
    assert_refused(room.log, flip(entry.encoded, len(entry.encoded) - 1), RoomReason.FORGED, room.now)


def test_forged_action_inside_an_honestly_signed_entry(room: Room) -> None:
    action = room.action(B, Op.RAISE_HAND)
    tampered = flip(action.encoded, len(action.encoded) - 1)
    state = room.log.state
    body = {"prev": state.head, "epoch": state.epoch, "action": tampered}
    entry = seal(_ENTRY_ANY, OWNER, body, room=room.room, time=room.now, seq=state.seq + 1)
    assert_refused(room.log, entry.encoded, RoomReason.FORGED, room.now)


def test_forged_signer_swapped_for_the_sequencer(room: Room) -> None:
    """An outsider's signature with the sequencer's key written in: the signature fails."""
    entry = room.raw_entry(room.log, B, room.action(B, Op.RAISE_HAND))
    forged = entry.encoded.replace(B.public.raw, OWNER.public.raw)
    assert_refused(room.log, forged, RoomReason.FORGED, room.now)


def test_forged_genesis_is_refused() -> None:
    """Only the room key makes its room's genesis: an owner cannot mint a room under another key."""
    genesis = create_room(OWNER, OWNER.public, title="x", language="en", now_ms=1)
    with pytest.raises(RoomRejected) as refused:
        Genesis.decode(genesis.encoded, ROOM_KEY.public.raw)
    assert refused.value.reason == RoomReason.WRONG_ROOM
    body = {"owner": OWNER.public.raw, "title": "x", "tags": [], "lang": "en",
            "settings": DEFAULT_SETTINGS.to_wire()}
    claimed = seal(GENESIS, OWNER, body, room=ROOM_KEY.public.raw, time=1)
    with pytest.raises(RoomRejected) as refused:
        Genesis.decode(claimed.encoded, ROOM_KEY.public.raw)
    assert refused.value.reason == RoomReason.FORGED


# -- signed by someone without the right ----------------------------------------------------------


def test_action_without_permission_even_from_the_sequencer(room: Room) -> None:
    action = room.action(B, Op.INVITE, target=PEOPLE[2].public)
    entry = room.raw_entry(room.log, OWNER, action)
    assert_refused(room.log, entry.encoded, RoomReason.NOT_PERMITTED, room.now)
    room.refused(B, Op.BAN, RoomReason.NOT_PERMITTED, target=A.public)


def test_moderator_acting_on_the_owner(room: Room) -> None:
    entry = room.raw_entry(room.log, OWNER, room.action(MODS[0], Op.BAN, target=OWNER.public))
    assert_refused(room.log, entry.encoded, RoomReason.NOT_PERMITTED, room.now)


def test_entry_not_signed_by_the_sequencer(room: Room) -> None:
    for signer in (MODS[0], A, B):
        entry = room.raw_entry(room.log, signer, room.action(B, Op.RAISE_HAND))
        assert_refused(room.log, entry.encoded, RoomReason.NOT_SEQUENCER, room.now)


def test_sequencer_claiming_a_future_epoch_without_a_takeover(room: Room) -> None:
    entry = room.raw_entry(room.log, OWNER, room.action(B, Op.RAISE_HAND), epoch=1)
    assert_refused(room.log, entry.encoded, RoomReason.NOT_SEQUENCER, room.now)


# -- replayed --------------------------------------------------------------------------------------


def test_replayed_action_in_this_room(room: Room) -> None:
    action = room.action(B, Op.RAISE_HAND)
    first = room.sequencer.submit(action.encoded, room.now)
    assert not isinstance(first, RoomRejected)
    room.ok(B, Op.LOWER_HAND)
    room.tick(room.settings.hand_interval_ms)
    again = room.sequencer.submit(action.encoded, room.now)
    assert isinstance(again, RoomRejected) and again.reason == RoomReason.REPLAYED
    entry = room.raw_entry(room.log, OWNER, action)  # a sequencer trying it directly
    assert_refused(room.log, entry.encoded, RoomReason.REPLAYED, room.now)


def test_an_actors_older_action_after_a_newer_one_is_a_replay(room: Room) -> None:
    older = room.action(B, Op.RAISE_HAND)  # signed, but delivered after the next one
    room.ok(B, Op.RAISE_HAND)
    entry = room.raw_entry(room.log, OWNER, room.action(B, Op.LOWER_HAND, at=older.time_ms))
    assert_refused(room.log, entry.encoded, RoomReason.REPLAYED, room.now)


def test_replayed_entry_is_a_counted_duplicate_and_changes_nothing(room: Room) -> None:
    follower = room.follower()
    for data in room.sent[-3:]:
        assert_refused(follower, data, RoomReason.DUPLICATE, room.now)


def test_action_replayed_from_another_room(room: Room) -> None:
    elsewhere = room.action(B, Op.RAISE_HAND, room=OTHER_ROOM_KEY.public.raw)
    refused = room.sequencer.submit(elsewhere.encoded, room.now)
    assert isinstance(refused, RoomRejected) and refused.reason == RoomReason.WRONG_ROOM
    state = room.log.state
    body = {"prev": state.head, "epoch": state.epoch, "action": elsewhere.encoded}
    entry = seal(_ENTRY_ANY, OWNER, body, room=room.room, time=room.now, seq=state.seq + 1)
    assert_refused(room.log, entry.encoded, RoomReason.WRONG_ROOM, room.now)
    relabelled = elsewhere.encoded.replace(OTHER_ROOM_KEY.public.raw, room.room)
    body["action"] = relabelled
    entry = seal(_ENTRY_ANY, OWNER, body, room=room.room, time=room.now, seq=state.seq + 1)
    assert_refused(room.log, entry.encoded, RoomReason.FORGED, room.now)


def test_entry_replayed_from_another_room(room: Room) -> None:
    other = create_room(OTHER_ROOM_KEY, OWNER.public, title="Other", language="en",
                        now_ms=room.now)
    action = sign_action(B, other.room, Op.RAISE_HAND, now_ms=room.now, nonce=bytes(16))
    entry = sign_entry(OWNER, other.room, seq=room.log.state.seq + 1, now_ms=room.now,
                       prev=room.log.state.head, epoch=0, action=action)
    assert_refused(room.log, entry.encoded, RoomReason.WRONG_ROOM, room.now)
    assert_refused(room.log, other.encoded, RoomReason.MALFORMED, room.now)  # not a log kind


# -- reordered and out of sequence -----------------------------------------------------------------


def test_reordered_entries_wait_for_their_parent() -> None:
    room = Room()
    room.staff(moderators=1, speakers=1)
    late = RoomLog(room.genesis)
    for data in reversed(room.sent):
        result = late.receive(data, room.now)
        assert not isinstance(result, RoomRejected)
    assert late.head == room.log.head
    assert late.wanted() == ()


def test_entry_at_the_wrong_position(room: Room) -> None:
    for seq in (room.log.state.seq, room.log.state.seq + 2):
        entry = room.raw_entry(room.log, OWNER, room.action(B, Op.RAISE_HAND), seq=seq)
        assert_refused(room.log, entry.encoded, RoomReason.OUT_OF_SEQUENCE, room.now)


def test_entry_time_going_backwards(room: Room) -> None:
    action = room.action(B, Op.RAISE_HAND)
    entry = room.raw_entry(room.log, OWNER, action, at=room.log.state.time_ms - 1)
    assert_refused(room.log, entry.encoded, RoomReason.OUT_OF_SEQUENCE, room.now)


def test_children_of_a_refused_entry_are_refused(room: Room) -> None:
    bad = room.raw_entry(room.log, A, room.action(B, Op.RAISE_HAND))
    child = sign_entry(A, room.room, seq=bad.seq + 1, now_ms=room.now, prev=bad.digest, epoch=0,
                       action=room.action(PEOPLE[2], Op.RAISE_HAND))
    assert not isinstance(room.log.receive(child.encoded, room.now), RoomRejected)  # waits
    assert_refused(room.log, bad.encoded, RoomReason.NOT_SEQUENCER, room.now)
    assert room.log.wanted() == ()
    assert room.log.rejections[RoomReason.UNKNOWN_PARENT] == 1
    assert_refused(room.log, child.encoded, RoomReason.UNKNOWN_PARENT, room.now)


def test_a_flood_of_orphans_is_bounded(room: Room) -> None:
    for n in range(MAX_PENDING_PER_SIGNER):
        orphan = sign_entry(A, room.room, seq=50, now_ms=room.now, prev=n.to_bytes(32, "big"),
                            epoch=0, action=None)
        assert not isinstance(room.log.receive(orphan.encoded, room.now), RoomRejected)
    one_more = sign_entry(A, room.room, seq=50, now_ms=room.now, prev=b"\xff" * 32, epoch=0,
                          action=None)
    assert_refused(room.log, one_more.encoded, RoomReason.UNKNOWN_PARENT, room.now)


# -- banned ----------------------------------------------------------------------------------------


def test_banned_identity(room: Room) -> None:
    room.ok(MODS[0], Op.BAN, target=B.public)
    entry = room.raw_entry(room.log, OWNER, room.action(B, Op.RAISE_HAND))
    assert_refused(room.log, entry.encoded, RoomReason.BANNED, room.now)
    room.refused(B, Op.LEAVE_STAGE, RoomReason.BANNED)


# -- time ------------------------------------------------------------------------------------------


def test_stale_and_future_actions(room: Room) -> None:
    old = room.action(B, Op.RAISE_HAND, at=room.now - ACTION_MAX_AGE_MS - 1)
    refused = room.sequencer.submit(old.encoded, room.now)
    assert isinstance(refused, RoomRejected) and refused.reason == RoomReason.STALE
    assert_refused(room.log, room.raw_entry(room.log, OWNER, old).encoded, RoomReason.STALE,
                   room.now)
    ahead = room.action(A, Op.SELF_UNMUTE, at=room.now + ACTION_MAX_LEAD_MS + 1)
    refused = room.sequencer.submit(ahead.encoded, room.now)
    assert isinstance(refused, RoomRejected) and refused.reason == RoomReason.FUTURE
    assert_refused(room.log, room.raw_entry(room.log, OWNER, ahead).encoded, RoomReason.FUTURE,
                   room.now)


def test_entry_from_the_future_is_refused_then_accepted_in_time(room: Room) -> None:
    at = room.now + ENTRY_MAX_FUTURE_MS + 1
    entry = room.raw_entry(room.log, OWNER, room.action(B, Op.RAISE_HAND, at=at), at=at)
    assert_refused(room.log, entry.encoded, RoomReason.FUTURE, room.now)
    receive_ok(room.log, entry.encoded, at)  # not remembered as bad: it was only early


# -- size and shape --------------------------------------------------------------------------------


def test_oversized_action_and_entry(room: Room) -> None:
    padded = KindSpec("room.action", Schema(optional={"pad": Bytes(max=1 << 16)}, required={}),
                      room=True, time=True, max_size=1 << 17)
    big = seal(padded, B, {"pad": bytes(ACTION_MAX_SIZE)}, room=room.room, time=room.now)
    refused = room.sequencer.submit(big.encoded, room.now)
    assert isinstance(refused, RoomRejected) and refused.reason == RoomReason.OVERSIZED
    wide = KindSpec("room.entry", Schema(optional={"pad": Bytes(max=1 << 16)}, required={}),
                    room=True, time=True, seq=True, max_size=1 << 17)
    entry = seal(wide, OWNER, {"pad": bytes(ENTRY_MAX_SIZE)}, room=room.room, time=room.now,
                 seq=room.log.state.seq + 1)
    assert_refused(room.log, entry.encoded, RoomReason.OVERSIZED, room.now)
    assert_refused(room.log, bytes(5 << 20), RoomReason.OVERSIZED, room.now)


def test_malformed_messages(room: Room) -> None:
    assert_refused(room.log, b"", RoomReason.MALFORMED, room.now)
    assert_refused(room.log, b"\xa0", RoomReason.MALFORMED, room.now)
    state = room.log.state
    both = {"prev": state.head, "epoch": 0, "action": room.action(B, Op.RAISE_HAND).encoded,
            "takeover": True}
    entry = seal(_ENTRY_ANY, OWNER, both, room=room.room, time=room.now, seq=state.seq + 1)
    assert_refused(room.log, entry.encoded, RoomReason.MALFORMED, room.now)


def test_unknown_op_and_wrong_parameters(room: Room) -> None:
    odd = seal(_ACTION_ANY, B, {"op": "make_me_owner", "nonce": bytes(16)}, room=room.room,
               time=room.tick())
    refused = room.sequencer.submit(odd.encoded, room.now)
    assert isinstance(refused, RoomRejected) and refused.reason == RoomReason.UNKNOWN_OP
    no_target = seal(_ACTION_ANY, MODS[0], {"op": "ban", "nonce": bytes(16)}, room=room.room,
                     time=room.tick())
    refused = room.sequencer.submit(no_target.encoded, room.now)
    assert isinstance(refused, RoomRejected) and refused.reason == RoomReason.MALFORMED


def test_sequencer_refuses_a_flood_from_one_identity(room: Room) -> None:
    reasons = []
    for i in range(room.sequencer.burst + 2):
        flood = room.action(B, Op.SELF_MUTE, at=room.now + i)
        result = room.sequencer.submit(flood.encoded, room.now + i)
        reasons.append(getattr(result, "reason", "ok"))
    assert reasons[-1] == RoomReason.RATE_LIMITED
    assert room.log.rejections[RoomReason.RATE_LIMITED] >= 1


# Kinds with the real names and loose bodies: what an attacker can build by hand.
_ENTRY_ANY = KindSpec(
    "room.entry",
    Schema(optional={"prev": Bytes(size=32), "epoch": Int(), "action": Bytes(max=1 << 16),
                     "takeover": Bool()}),
    room=True, time=True, seq=True, max_size=1 << 17,
)
_ACTION_ANY = KindSpec(
    "room.action", Schema(optional={"op": Text(), "nonce": Bytes(size=16)}), room=True, time=True
)
