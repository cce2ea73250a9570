"""Why a key would be refused, said before anything is signed — from the room's own table."""

from __future__ import annotations

import pytest

from p2pvoix.console.refusals import LABELS, explain_code, why_not
from p2pvoix.room import Op, RoomReason, can
from tests.room.helpers import MODS, OWNER, PEOPLE, Room

NAMES = {OWNER.public: "Amina", MODS[0].public: "Bo", PEOPLE[0].public: "Chen",
         PEOPLE[1].public: "Dee"}


def name_of(key) -> str:  # type: ignore[no-untyped-def]
    return NAMES.get(key, "someone")


def refusal(room: Room, actor, op: Op, target=None) -> str | None:  # type: ignore[no-untyped-def]
    return why_not(room.log.state, actor.public, op, target.public if target else None,
                   room.now, name_of)


def test_every_op_has_words() -> None:
    assert set(LABELS) == set(Op)


@pytest.mark.parametrize(("actor", "op", "target", "expected"), [
    (PEOPLE[0], Op.INVITE, PEOPLE[1],
     "Cannot invite Dee to speak: you are in the audience; only the owner and moderators can."),
    (OWNER, Op.INVITE, PEOPLE[0], None),
    (OWNER, Op.INVITE, MODS[0], "Cannot invite Bo to speak: Bo is a moderator."),
    (OWNER, Op.INVITE, None,
     "Cannot invite them to speak: select someone first (Tab to a list, then ↑ ↓)."),
    (OWNER, Op.REMOVE, OWNER, "Cannot remove Amina: that is you."),
    (MODS[0], Op.MUTE, OWNER, "Cannot mute Amina: Amina is the owner."),
    (PEOPLE[0], Op.ACCEPT_INVITE, None,
     "Cannot accept the invitation: you have no open invitation to speak."),
    (PEOPLE[0], Op.LOWER_HAND, None, "Cannot lower your hand: your hand is not raised."),
    (OWNER, Op.DEMOTE, PEOPLE[0], "Cannot move Chen to the audience: Chen is in the audience."),
    (OWNER, Op.PROMOTE_MODERATOR, PEOPLE[0],
     "Cannot make Chen a moderator: Chen is in the audience."),
])
def test_refusals_say_why(actor, op, target, expected) -> None:  # type: ignore[no-untyped-def]
    room = Room()
    room.staff(moderators=1)
    assert refusal(room, actor, op, target) == expected


def test_what_why_not_allows_is_what_the_table_allows() -> None:
    room = Room()
    room.staff(moderators=1, speakers=1)
    state = room.log.state
    for actor in (OWNER, MODS[0], PEOPLE[0], PEOPLE[1]):
        for op in Op:
            for target in (None, OWNER, MODS[0], PEOPLE[0], PEOPLE[1]):
                needs_target = op in (Op.INVITE, Op.DEMOTE, Op.REMOVE, Op.BAN, Op.MUTE,
                                      Op.PROMOTE_MODERATOR, Op.CLEAR_HAND, Op.CANCEL_INVITE,
                                      Op.UNLOCK_MUTE, Op.UNBAN, Op.DEMOTE_MODERATOR, Op.HANDOVER)
                if needs_target != (target is not None) or target == actor:
                    continue
                allowed = can(state, actor.public, op, target.public if target else None,
                              room.now)
                said = refusal(room, actor, op, target)
                if op is Op.MUTE and target is not None and target.public in state.muted:
                    assert said is not None  # a plain mute of the muted changes nothing
                    continue
                assert (said is None) == allowed, (actor, op, target, said)


def test_a_raised_hand_again_says_how_long_to_wait() -> None:
    room = Room()
    room.ok(PEOPLE[0], Op.RAISE_HAND)
    room.ok(PEOPLE[0], Op.LOWER_HAND)
    room.tick(10_000)
    assert refusal(room, PEOPLE[0], Op.RAISE_HAND) == (
        "Cannot raise your hand: you raised your hand a moment ago; wait 19 s.")


def test_a_locked_mute_tells_the_speaker_to_ask_a_moderator() -> None:
    room = Room()
    room.staff(moderators=0, speakers=1)
    room.ok(OWNER, Op.MUTE, target=PEOPLE[0].public, lock=True)
    assert refusal(room, PEOPLE[0], Op.SELF_UNMUTE) == (
        "Cannot unmute yourself: a moderator locked your mute; ask one to unlock it.")
    assert refusal(room, OWNER, Op.MUTE, PEOPLE[0]) == "Cannot mute Chen: Chen is already muted."


def test_nothing_is_allowed_once_the_room_has_ended() -> None:
    room = Room()
    room.ok(OWNER, Op.END_ROOM)
    assert refusal(room, OWNER, Op.END_ROOM) == "Cannot end the room: the room has ended."


def test_codes_from_the_sequencer_read_as_sentences() -> None:
    assert explain_code(RoomReason.STAGE_FULL) == "the stage is full"
    assert explain_code("sequencer unreachable (TimeoutError)").startswith("the room's log keeper")
    assert explain_code("something-new") == "something-new"  # never hidden
