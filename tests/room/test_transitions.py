"""The room's rules, one flow at a time, through the sequencer and a following node."""

from __future__ import annotations

from dataclasses import replace

from p2pvoix.room import (
    PERMISSIONS,
    AuthorityChanged,
    HandLowered,
    Muted,
    Op,
    Removed,
    Role,
    RoleChanged,
    RoomLog,
    RoomReason,
    Settings,
    can,
    hand_queue,
    invitations,
    is_banned,
    may_play,
    role_of,
    stage,
    state_digest,
)
from p2pvoix.room.view import view_of
from tests.room.helpers import MODS, OWNER, PEOPLE, Room, receive_ok

A, B, C = PEOPLE[:3]


def test_hand_invite_accept_unmute_makes_a_playable_speaker() -> None:
    room = Room()
    follower = room.follower()
    room.ok(A, Op.RAISE_HAND)
    assert [h.identity for h in hand_queue(room.log.state, room.now)] == [A.public]
    invite = room.ok(OWNER, Op.INVITE, target=A.public)
    assert HandLowered(A.public, OWNER.public, "invited") in invite.events
    assert not may_play(room.log.state, A.public)  # invited is not a speaker yet
    room.ok(A, Op.ACCEPT_INVITE)
    assert role_of(room.log.state, A.public) is Role.SPEAKER
    assert not may_play(room.log.state, A.public)  # a new speaker arrives muted
    room.ok(A, Op.SELF_UNMUTE)
    assert may_play(room.log.state, A.public)
    for data in room.sent:
        receive_ok(follower, data, room.now)
    assert state_digest(follower.state) == state_digest(room.log.state)


def test_only_an_accepted_invitation_makes_a_speaker() -> None:
    room = Room()
    room.ok(OWNER, Op.INVITE, target=A.public)
    room.ok(A, Op.DECLINE_INVITE)
    assert role_of(room.log.state, A.public) is Role.AUDIENCE
    room.refused(A, Op.ACCEPT_INVITE, RoomReason.NOT_PERMITTED)
    room.refused(B, Op.ACCEPT_INVITE, RoomReason.NOT_PERMITTED)  # never invited
    room.ok(OWNER, Op.INVITE, target=B.public)
    room.ok(OWNER, Op.CANCEL_INVITE, target=B.public)
    room.refused(B, Op.ACCEPT_INVITE, RoomReason.NOT_PERMITTED)


def test_invitations_lapse() -> None:
    room = Room()
    room.ok(OWNER, Op.INVITE, target=A.public)
    assert invitations(room.log.state, room.now)
    room.tick(room.settings.invite_ttl_ms)
    assert not invitations(room.log.state, room.now)
    room.refused(A, Op.ACCEPT_INVITE, RoomReason.NOT_PERMITTED)


def test_hand_queue_is_arrival_order_and_hands_expire() -> None:
    room = Room()
    for person in (B, A, C):
        room.ok(person, Op.RAISE_HAND)
    assert [h.identity for h in hand_queue(room.log.state, room.now)] == [B.public, A.public,
                                                                          C.public]
    room.ok(A, Op.LOWER_HAND)
    room.ok(OWNER, Op.CLEAR_HAND, target=C.public)
    assert [h.identity for h in hand_queue(room.log.state, room.now)] == [B.public]
    room.tick(room.settings.hand_ttl_ms)
    assert hand_queue(room.log.state, room.now) == ()
    # The stored hand is pruned by the next entry, with an event saying why.
    result = room.ok(A, Op.RAISE_HAND)
    assert HandLowered(B.public, None, "expired") in result.events
    assert list(room.log.state.hands) == [A.public]


def test_hand_raises_are_rate_limited_and_can_be_closed() -> None:
    room = Room()
    room.ok(A, Op.RAISE_HAND)
    room.refused(A, Op.RAISE_HAND, RoomReason.NO_CHANGE)  # already up
    room.ok(A, Op.LOWER_HAND)
    room.refused(A, Op.RAISE_HAND, RoomReason.RATE_LIMITED)
    room.tick(room.settings.hand_interval_ms)
    room.ok(A, Op.RAISE_HAND)
    room.ok(OWNER, Op.SET_SETTINGS, settings=replace(room.settings, hands=False))
    room.refused(B, Op.RAISE_HAND, RoomReason.HANDS_CLOSED)


def test_stage_capacity() -> None:
    room = Room(settings=replace(Room().settings, max_speakers=1))
    room.ok(OWNER, Op.INVITE, target=A.public)
    room.ok(OWNER, Op.INVITE, target=B.public)
    room.ok(A, Op.ACCEPT_INVITE)
    room.refused(B, Op.ACCEPT_INVITE, RoomReason.STAGE_FULL)
    room.refused(OWNER, Op.INVITE, RoomReason.STAGE_FULL, target=C.public)


def test_locked_mute_holds_until_unlocked() -> None:
    room = Room()
    room.staff(moderators=1, speakers=1)
    room.ok(A, Op.SELF_UNMUTE)
    result = room.ok(MODS[0], Op.MUTE, target=A.public, lock=True)
    assert Muted(A.public, True, MODS[0].public) in result.events
    assert not may_play(room.log.state, A.public)
    room.refused(A, Op.SELF_UNMUTE, RoomReason.MUTE_LOCKED)
    room.refused(MODS[0], Op.MUTE, RoomReason.NO_CHANGE, target=A.public, lock=True)
    room.ok(MODS[0], Op.UNLOCK_MUTE, target=A.public)
    assert not may_play(room.log.state, A.public)  # unlocked, still muted: their choice now
    room.ok(A, Op.SELF_UNMUTE)
    assert may_play(room.log.state, A.public)
    room.ok(A, Op.SELF_MUTE)
    room.refused(A, Op.SELF_MUTE, RoomReason.NO_CHANGE)


def test_moderators_cannot_unmute_anyone() -> None:
    """A moderator can lift a lock, never open someone's microphone: only self_unmute unmutes."""
    room = Room()
    room.staff(moderators=1, speakers=1)
    assert PERMISSIONS[Op.SELF_UNMUTE].targets is None
    room.refused(MODS[0], Op.UNLOCK_MUTE, RoomReason.NO_CHANGE, target=A.public)  # not locked
    room.ok(MODS[0], Op.MUTE, target=A.public, lock=True)
    room.ok(MODS[0], Op.UNLOCK_MUTE, target=A.public)
    assert room.log.state.muted[A.public] is False


def test_speakers_leave_or_are_moved_back() -> None:
    room = Room()
    room.staff(moderators=0, speakers=2)
    room.ok(A, Op.LEAVE_STAGE)
    room.ok(OWNER, Op.DEMOTE, target=B.public)
    assert [m.role for m in stage(room.log.state)] == [Role.OWNER]
    room.refused(OWNER, Op.DEMOTE, RoomReason.NOT_PERMITTED, target=B.public)


def test_remove_and_ban() -> None:
    room = Room()
    room.staff(moderators=1, speakers=1)
    room.ok(B, Op.RAISE_HAND)
    removed = room.ok(MODS[0], Op.REMOVE, target=A.public)
    assert Removed(A.public, MODS[0].public, banned=False) in removed.events
    assert role_of(room.log.state, A.public) is Role.AUDIENCE
    banned = room.ok(MODS[0], Op.BAN, target=B.public)
    assert Removed(B.public, MODS[0].public, banned=True) in banned.events
    assert HandLowered(B.public, MODS[0].public, "removed") in banned.events
    assert is_banned(room.log.state, B.public)
    room.refused(B, Op.RAISE_HAND, RoomReason.BANNED)
    room.refused(OWNER, Op.INVITE, RoomReason.NOT_PERMITTED, target=B.public)
    room.ok(OWNER, Op.UNBAN, target=B.public)
    room.refused(B, Op.RAISE_HAND, RoomReason.RATE_LIMITED)  # a ban does not reset the limit
    room.tick(room.settings.hand_interval_ms)
    room.ok(B, Op.RAISE_HAND)


def test_seniority_orders_moderators() -> None:
    room = Room()
    room.staff(moderators=2)
    senior, junior = MODS[0], MODS[1]
    room.refused(junior, Op.MUTE, RoomReason.NOT_PERMITTED, target=senior.public, lock=True)
    room.refused(junior, Op.DEMOTE_MODERATOR, RoomReason.NOT_PERMITTED, target=senior.public)
    room.refused(senior, Op.REMOVE, RoomReason.NOT_PERMITTED, target=OWNER.public)
    room.refused(senior, Op.MUTE, RoomReason.NOT_PERMITTED, target=senior.public, lock=False)
    room.ok(senior, Op.MUTE, target=junior.public, lock=True)
    room.ok(senior, Op.DEMOTE_MODERATOR, target=junior.public)
    assert role_of(room.log.state, junior.public) is Role.SPEAKER


def test_appointing_moderators_is_the_owners_unless_delegated() -> None:
    room = Room()
    room.staff(moderators=1, speakers=1)
    room.refused(MODS[0], Op.PROMOTE_MODERATOR, RoomReason.NOT_PERMITTED, target=A.public)
    delegated = replace(room.log.state.settings, mods_appoint=True)
    room.refused(MODS[0], Op.SET_SETTINGS, RoomReason.NOT_PERMITTED, settings=delegated)
    room.ok(OWNER, Op.SET_SETTINGS, settings=delegated)
    room.ok(MODS[0], Op.PROMOTE_MODERATOR, target=A.public)
    # A moderator may change other settings, not this one.
    room.ok(MODS[0], Op.SET_SETTINGS, settings=replace(delegated, max_speakers=3))
    room.refused(MODS[0], Op.SET_SETTINGS, RoomReason.NO_CHANGE,
                 settings=replace(delegated, max_speakers=3))


def test_revoking_the_sequencer_hands_authority_to_the_revoker() -> None:
    room = Room()
    room.staff(moderators=2)
    room.ok(OWNER, Op.HANDOVER, target=MODS[1].public)
    assert room.log.state.sequencer == MODS[1].public
    room.refused(MODS[1], Op.LEAVE_STAGE, RoomReason.NOT_PERMITTED)  # hand over first
    result = room.ok(MODS[0], Op.DEMOTE_MODERATOR, target=MODS[1].public)
    assert AuthorityChanged(2, MODS[0].public, "revoked") in result.events
    assert RoleChanged(MODS[1].public, Role.MODERATOR, Role.SPEAKER, MODS[0].public) in result.events
    assert room.log.state.sequencer == MODS[0].public


def test_handover_by_sequencer_or_owner_only() -> None:
    room = Room()
    room.staff(moderators=2)
    room.refused(MODS[0], Op.HANDOVER, RoomReason.NOT_PERMITTED, target=MODS[1].public)
    room.refused(OWNER, Op.HANDOVER, RoomReason.NO_CHANGE, target=OWNER.public)
    room.refused(OWNER, Op.HANDOVER, RoomReason.NOT_PERMITTED, target=PEOPLE[0].public)
    room.ok(OWNER, Op.HANDOVER, target=MODS[0].public)
    room.ok(MODS[0], Op.HANDOVER, target=MODS[1].public)
    room.ok(OWNER, Op.HANDOVER, target=OWNER.public)  # the owner can always take it back
    assert (room.log.state.epoch, room.log.state.sequencer) == (3, OWNER.public)


def test_ended_room_refuses_everything() -> None:
    room = Room()
    room.staff(moderators=1)
    room.ok(MODS[0], Op.END_ROOM)
    assert not may_play(room.log.state, OWNER.public)
    room.refused(OWNER, Op.SET_INFO, RoomReason.ROOM_ENDED, title="x", tags=[], language="en")
    room.refused(A, Op.RAISE_HAND, RoomReason.ROOM_ENDED)
    assert not can(room.log.state, OWNER.public, Op.END_ROOM)


def test_title_and_tags() -> None:
    room = Room()
    result = room.ok(OWNER, Op.SET_INFO, title="Evening show", tags=["music"], language="fr")
    state = room.log.state
    assert (state.title, state.tags, state.language) == ("Evening show", ("music",), "fr")
    assert result.events[0].title == "Evening show"  # type: ignore[union-attr]
    room.refused(OWNER, Op.SET_INFO, RoomReason.NO_CHANGE, title="Evening show", tags=["music"],
                 language="fr")


def test_settings_schema_bounds_are_enforced_when_signing() -> None:
    room = Room()
    try:
        room.action(OWNER, Op.SET_SETTINGS, settings=Settings(max_speakers=1000))
    except ValueError:
        return
    raise AssertionError("an out-of-range setting was signed")


def test_state_stays_bounded_by_recent_actors() -> None:
    """Replay records and raise times of quiet identities are pruned: a room with thousands of
    one-off hand raisers does not keep them all."""
    room = Room()
    for person in PEOPLE:
        room.ok(person, Op.RAISE_HAND)
        room.ok(person, Op.LOWER_HAND)
    assert len(room.log.state.replay) == len(PEOPLE)
    room.tick(200_000)
    room.ok(OWNER, Op.SET_INFO, title="later", tags=[], language="en")
    assert list(room.log.state.replay) == [OWNER.public]
    assert room.log.state.raises == {}


def test_every_step_of_a_session_folds_into_the_view() -> None:
    room = Room()
    room.staff(moderators=2, speakers=2)
    room.ok(C, Op.RAISE_HAND)
    room.ok(MODS[0], Op.MUTE, target=A.public, lock=True)
    room.ok(MODS[0], Op.BAN, target=MODS[1].public)
    room.ok(OWNER, Op.END_ROOM)
    fresh = RoomLog(room.genesis)
    for data in room.sent:
        receive_ok(fresh, data, room.now)
    assert view_of(fresh.state) == view_of(room.log.state)
