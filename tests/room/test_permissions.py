"""The permission table is complete, consistent with the wire format, and is what the checker does."""

from __future__ import annotations

import pytest

from p2pvoix.room import PERMISSIONS, Op, Role, can
from p2pvoix.room.ops import OP_PARAMS
from p2pvoix.room.permissions import CONDITIONS, check
from p2pvoix.room.state import STAFF
from tests.room.helpers import MODS, OWNER, PEOPLE, Room

SPEAKER, AUDIENCE, BANNED = PEOPLE[0], PEOPLE[1], PEOPLE[2]


@pytest.fixture(scope="module")
def cast() -> tuple[Room, dict[Role, object]]:
    """One identity in each role: owner, moderator, speaker, audience, banned."""
    room = Room()
    room.staff(moderators=1, speakers=1)
    room.ok(OWNER, Op.BAN, target=BANNED.public)
    people = {Role.OWNER: OWNER, Role.MODERATOR: MODS[0], Role.SPEAKER: SPEAKER,
              Role.AUDIENCE: AUDIENCE, Role.BANNED: BANNED}
    for role, person in people.items():
        assert room.log.state.role_of(person.public) is role
    return room, people


def test_every_op_has_one_rule_matching_its_wire_parameters() -> None:
    assert set(PERMISSIONS) == set(Op) == set(OP_PARAMS)
    for op, rule in PERMISSIONS.items():
        assert (rule.targets is not None) == ("to" in OP_PARAMS[op]), op
        assert set(rule.needs) <= set(CONDITIONS), op
        assert Role.BANNED not in rule.actors, op  # nothing is open to banned identities
        assert Role.OWNER not in (rule.targets or ()) or op is Op.HANDOVER, op


def test_the_checker_never_allows_a_role_the_table_does_not_list(cast) -> None:  # type: ignore[no-untyped-def]
    room, people = cast
    state = room.log.state
    for op, rule in PERMISSIONS.items():
        for actor_role, actor in people.items():
            targets = people.items() if rule.targets is not None else [(None, None)]
            for target_role, target in targets:
                allowed = can(state, actor.public, op, target.public if target else None)
                if allowed:
                    assert actor_role in rule.actors, (op, actor_role)
                    assert rule.targets is None or target_role in rule.targets, (op, target_role)


def test_roles_against_each_other(cast) -> None:  # type: ignore[no-untyped-def]
    room, people = cast
    state = room.log.state
    mod, owner = people[Role.MODERATOR].public, OWNER.public
    assert can(state, AUDIENCE.public, Op.RAISE_HAND)
    assert not can(state, SPEAKER.public, Op.RAISE_HAND)  # already on stage
    assert can(state, mod, Op.INVITE, AUDIENCE.public)
    assert not can(state, SPEAKER.public, Op.INVITE, AUDIENCE.public)
    assert can(state, mod, Op.BAN, SPEAKER.public)
    assert not can(state, mod, Op.BAN, owner)
    assert can(state, owner, Op.BAN, mod)
    assert can(state, mod, Op.UNBAN, BANNED.public)
    assert not can(state, BANNED.public, Op.RAISE_HAND)
    assert not can(state, mod, Op.PROMOTE_MODERATOR, SPEAKER.public)  # mods_appoint is off
    assert can(state, owner, Op.PROMOTE_MODERATOR, SPEAKER.public)
    assert can(state, owner, Op.HANDOVER, mod)
    assert not can(state, mod, Op.HANDOVER, owner)  # only the sequencer or the owner


def test_a_what_if_needs_a_target_for_targeted_ops(cast) -> None:  # type: ignore[no-untyped-def]
    room, _ = cast
    from p2pvoix.room.permissions import Request

    with pytest.raises(ValueError):
        check(room.log.state, Request(OWNER.public, Op.INVITE, None, room.now))


def test_staff_is_exactly_who_may_sequence() -> None:
    assert STAFF == {Role.OWNER, Role.MODERATOR}
