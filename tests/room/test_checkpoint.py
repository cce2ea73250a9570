"""Checkpoints: a late joiner verifies genesis + the latest checkpoint + the entries after it and
reaches the state (and state digest) of a node that replayed everything."""

from __future__ import annotations

import pytest

from p2pvoix.crypto.envelope import seal
from p2pvoix.room import (
    Accepted,
    Op,
    Reorganized,
    RoomLog,
    RoomReason,
    Sequenced,
    Sequencer,
    decode_snapshot,
    encode_snapshot,
    make_checkpoint,
    state_digest,
)
from p2pvoix.room.succession import TAKEOVER_GRACE_MS
from p2pvoix.room.view import view_of
from p2pvoix.room.wire import CHECKPOINT, sign_checkpoint
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


def busy_room() -> Room:
    room = Room()
    room.staff(moderators=2, speakers=2)
    for person in PEOPLE[2:6]:
        room.ok(person, Op.RAISE_HAND)
    room.ok(MODS[0], Op.MUTE, target=PEOPLE[0].public, lock=True)
    room.ok(MODS[0], Op.BAN, target=PEOPLE[5].public)
    room.ok(OWNER, Op.INVITE, target=PEOPLE[2].public)
    return room


def test_late_joiner_reaches_the_full_replay_state() -> None:
    room = busy_room()
    checkpoint = make_checkpoint(ROOM_KEY, room.log.state, room.now)
    for person in PEOPLE[6:8]:
        room.ok(person, Op.RAISE_HAND)
    room.ok(PEOPLE[2], Op.ACCEPT_INVITE)
    full = room.follower()

    late = RoomLog(room.genesis)
    receive_ok(late, checkpoint.encoded, room.now)
    assert late.checkpoint == checkpoint
    for data in full.entries(after=checkpoint.head):
        receive_ok(late, data, room.now)
    assert state_digest(late.state) == state_digest(full.state) == state_digest(room.log.state)
    assert late.head == full.head
    assert late.statistics()["entries"] == 3
    # Older entries are final for it now: refused without work, never applied.
    assert_refused(late, room.sent[0], RoomReason.BEFORE_CHECKPOINT, room.now)
    # And it keeps following the room.
    new = room.ok(PEOPLE[2], Op.SELF_UNMUTE)
    receive_ok(late, new.entry, room.now)
    assert state_digest(late.state) == state_digest(room.log.state)


def test_full_node_adopts_a_checkpoint_and_forgets_the_prefix() -> None:
    room = busy_room()
    follower = room.follower()
    checkpoint = make_checkpoint(ROOM_KEY, room.log.state, room.now)
    before = state_digest(follower.state)
    result = receive_ok(follower, checkpoint.encoded, room.now)
    assert result.events == ()  # same head: nothing changed for an observer
    assert state_digest(follower.state) == before
    assert follower.statistics()["entries"] == 0
    assert_refused(follower, checkpoint.encoded, RoomReason.DUPLICATE, room.now)


def test_snapshot_round_trip() -> None:
    state = busy_room().log.state
    data = encode_snapshot(state)
    assert encode_snapshot(decode_snapshot(data)) == data
    assert view_of(decode_snapshot(data)) == view_of(state)


def test_checkpoint_signed_by_anyone_but_the_room_key_is_forged() -> None:
    room = busy_room()
    late = RoomLog(room.genesis)
    snapshot = encode_snapshot(room.log.state)
    body = {"head": room.log.head, "state": snapshot}
    for signer in (OWNER, MODS[0]):  # the owner's identity is not the room key either
        forged = seal(CHECKPOINT, signer, body, room=room.room, time=room.now,
                      seq=room.log.state.seq)
        assert_refused(late, forged.encoded, RoomReason.FORGED, room.now)
    with pytest.raises(ValueError):
        make_checkpoint(MODS[0], room.log.state, room.now)


def test_checkpoint_of_another_room() -> None:
    room = busy_room()
    other = sign_checkpoint(OTHER_ROOM_KEY, seq=room.log.state.seq, head=room.log.head,
                            snapshot=encode_snapshot(room.log.state), now_ms=room.now)
    assert_refused(RoomLog(room.genesis), other.encoded, RoomReason.WRONG_ROOM, room.now)


def test_checkpoint_contradicting_the_entries() -> None:
    room = busy_room()
    follower = room.follower()
    lying = room.log.state.copy()
    lying.moderators[PEOPLE[7].public] = 1
    wrong = sign_checkpoint(ROOM_KEY, seq=lying.seq, head=lying.head,
                            snapshot=encode_snapshot(lying), now_ms=room.now)
    assert_refused(follower, wrong.encoded, RoomReason.BAD_CHECKPOINT, room.now)
    mismatched = sign_checkpoint(ROOM_KEY, seq=lying.seq + 1, head=lying.head,
                                 snapshot=encode_snapshot(room.log.state), now_ms=room.now)
    assert_refused(follower, mismatched.encoded, RoomReason.BAD_CHECKPOINT, room.now)


def test_unreadable_snapshots() -> None:
    room = busy_room()
    state = room.log.state
    good = encode_snapshot(state)
    for snapshot in (b"\xa0", good[:-1], good.replace(b"Morning show", b"Morning shoW")):
        checkpoint = sign_checkpoint(ROOM_KEY, seq=state.seq, head=state.head, snapshot=snapshot,
                                     now_ms=room.now)
        assert_refused(room.follower(), checkpoint.encoded, RoomReason.BAD_CHECKPOINT, room.now)
    unsorted = good.replace(PEOPLE[0].public.raw, b"\xff" * 32)  # breaks the canonical order
    checkpoint = sign_checkpoint(ROOM_KEY, seq=state.seq, head=state.head, snapshot=unsorted,
                                 now_ms=room.now)
    assert_refused(RoomLog(room.genesis), checkpoint.encoded, RoomReason.BAD_CHECKPOINT, room.now)


def test_older_checkpoints_are_superseded() -> None:
    room = busy_room()
    older = make_checkpoint(ROOM_KEY, room.log.state, room.now)
    room.ok(PEOPLE[6], Op.RAISE_HAND)
    newer = make_checkpoint(ROOM_KEY, room.log.state, room.now)
    late = RoomLog(room.genesis)
    receive_ok(late, newer.encoded, room.now)
    assert_refused(late, older.encoded, RoomReason.SUPERSEDED, room.now)


def test_a_checkpoint_is_final_forks_before_it_are_gone() -> None:
    """A removed moderator's fork from before a checkpoint is dropped by nodes that held it and
    refused by nodes that get it later."""
    room = busy_room()
    room.ok(OWNER, Op.HANDOVER, target=MODS[0].public)
    rogue_log = room.follower()
    room.ok(OWNER, Op.HANDOVER, target=OWNER.public)  # sequenced by MODS[0]: now the owner again
    # MODS[0], still sequencer at its own fork point, equivocates.
    rogue = Sequencer(MODS[0], rogue_log)
    fork = rogue.submit(room.action(PEOPLE[6], Op.RAISE_HAND).encoded, room.now)
    assert isinstance(fork, Sequenced)
    checkpoint = make_checkpoint(ROOM_KEY, room.log.state, room.now)

    holder = room.follower()
    assert isinstance(holder.receive(fork.entry, room.now), Accepted)
    receive_ok(holder, checkpoint.encoded, room.now)
    assert holder.head == room.log.head and holder.statistics()["forks"] == 0

    late = RoomLog(room.genesis)
    receive_ok(late, checkpoint.encoded, room.now)
    assert_refused(late, fork.entry, RoomReason.BEFORE_CHECKPOINT, room.now)
    assert state_digest(late.state) == state_digest(holder.state)


def test_a_checkpoint_moves_a_node_off_a_losing_branch() -> None:
    room = busy_room()
    stray = room.follower()
    wrong = room.raw_entry(stray, OWNER, room.action(PEOPLE[6], Op.RAISE_HAND))
    receive_ok(stray, wrong.encoded, room.now)
    room.ok(PEOPLE[7], Op.RAISE_HAND)
    checkpoint = make_checkpoint(ROOM_KEY, room.log.state, room.now)
    result = receive_ok(stray, checkpoint.encoded, room.now)
    assert isinstance(result.events[0], Reorganized)
    assert state_digest(stray.state) == state_digest(room.log.state)


def test_without_the_owner_joiners_replay_from_the_last_checkpoint() -> None:
    """The owner's node (the only holder of the room key) is gone: moderators keep the room going
    and late joiners verify the last checkpoint plus every entry after it."""
    room = busy_room()
    checkpoint = make_checkpoint(ROOM_KEY, room.log.state, room.now)
    m0 = Sequencer(MODS[0], room.follower())
    room.tick(TAKEOVER_GRACE_MS)
    sent = [m0.take_over(room.now).entry]
    for person in PEOPLE[6:8]:
        sent.append(m0.submit(room.action(person, Op.RAISE_HAND).encoded, room.now).entry)  # type: ignore[union-attr]
    late = RoomLog(room.genesis)
    receive_ok(late, checkpoint.encoded, room.now)
    for data in sent:
        receive_ok(late, data, room.now)
    assert state_digest(late.state) == state_digest(m0.log.state)
