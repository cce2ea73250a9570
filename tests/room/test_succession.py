"""Takeovers, fork choice, and the accountability rule, checked in every delivery order."""

from __future__ import annotations

import itertools
import random

import pytest

from p2pvoix.room import (
    Accepted,
    NotSuccessor,
    Op,
    Reorganized,
    RoomLog,
    RoomReason,
    Sequenced,
    Sequencer,
    state_digest,
    succession_order,
    takeover_earliest_ms,
    who_may_sequence,
)
from p2pvoix.room.succession import TAKEOVER_GRACE_MS
from p2pvoix.room.view import fold, view_of
from tests.room.helpers import MODS, OWNER, PEOPLE, Room, assert_refused, receive_ok

M0, M1 = MODS[0], MODS[1]
A = PEOPLE[0]


def staffed_room() -> Room:
    room = Room()
    room.staff(moderators=2)
    return room


def node(room: Room, upto: int | None = None) -> RoomLog:
    """A node that saw the first ``upto`` entries."""
    log = RoomLog(room.genesis)
    for data in room.sent[:upto]:
        assert isinstance(log.receive(data, room.now), Accepted)
    return log


def converge(room: Room, messages: list[bytes], *, orders: int = 40) -> RoomLog:
    """Feed ``messages`` (after the room's shared prefix) in many orders, with duplicates, and
    check every order ends at the same head and state. Returns one such log."""
    results = set()
    rng = random.Random(7)
    shuffles = (list(itertools.permutations(messages)) if len(messages) <= 5
                else [rng.sample(messages, len(messages)) for _ in range(orders)])
    last = None
    for order in shuffles:
        log = node(room)
        for data in list(order) + list(order[:2]):
            before = view_of(log.state)
            result = log.receive(data, room.now)
            if isinstance(result, Accepted):
                assert fold(before, result.events) == view_of(log.state)
        results.add((log.head, state_digest(log.state)))
        last = log
    assert len(results) == 1, results
    assert last is not None
    return last


def test_succession_order_rotates_staff_after_the_sequencer() -> None:
    room = staffed_room()
    state = room.log.state
    assert succession_order(state) == (M0.public, M1.public)
    assert who_may_sequence(state) == (OWNER.public, M0.public, M1.public)
    room.ok(OWNER, Op.HANDOVER, target=M0.public)
    assert succession_order(room.log.state) == (M1.public, OWNER.public)
    assert takeover_earliest_ms(room.log.state, A.public) is None


def test_successors_take_over_in_turn_and_not_before() -> None:
    room = staffed_room()
    m1 = Sequencer(M1, node(room))
    with pytest.raises(NotSuccessor):
        m1.take_over(room.now + TAKEOVER_GRACE_MS)  # successor 2 waits two grace periods
    too_early = room.raw_entry(m1.log, M1, None, epoch=2, at=room.now + TAKEOVER_GRACE_MS)
    assert_refused(room.log, too_early.encoded, RoomReason.BAD_TAKEOVER, room.now)
    wrong_k = room.raw_entry(m1.log, M1, None, epoch=1, at=room.now + 5 * TAKEOVER_GRACE_MS)
    assert_refused(room.log, wrong_k.encoded, RoomReason.BAD_TAKEOVER, room.now + 5 * TAKEOVER_GRACE_MS)
    outsider = room.raw_entry(m1.log, A, None, epoch=1, at=room.now + 5 * TAKEOVER_GRACE_MS)
    assert_refused(room.log, outsider.encoded, RoomReason.BAD_TAKEOVER, room.now + 5 * TAKEOVER_GRACE_MS)

    room.tick(2 * TAKEOVER_GRACE_MS)
    taken = m1.take_over(room.now)
    assert m1.active and m1.log.state.epoch == 2
    receive_ok(room.log, taken.entry, room.now)
    assert room.log.state.sequencer == M1.public
    # The old sequencer's entries for the next position are no longer valid...
    stale = room.raw_entry(room.log, OWNER, room.action(A, Op.RAISE_HAND), epoch=0)
    assert_refused(room.log, stale.encoded, RoomReason.NOT_SEQUENCER, room.now)
    # ...and its sequencer object says so instead of signing.
    refused = room.sequencer.submit(room.action(A, Op.RAISE_HAND).encoded, room.now)
    assert getattr(refused, "reason", None) == RoomReason.NOT_SEQUENCER


def test_a_slow_sequencer_keeps_its_authority_over_a_takeover() -> None:
    room = staffed_room()
    m0 = Sequencer(M0, node(room))
    room.tick(TAKEOVER_GRACE_MS)
    takeover = m0.take_over(room.now)
    included_by_m0 = room.action(A, Op.RAISE_HAND)
    mine = m0.submit(included_by_m0.encoded, room.now)
    assert isinstance(mine, Sequenced)
    theirs = room.ok(PEOPLE[1], Op.RAISE_HAND)  # the owner was only slow
    assert converge(room, [takeover.entry, mine.entry, theirs.entry]).head == theirs.digest
    # A node that followed the takeover first learns, on switching, which actions to re-submit.
    switched = node(room, upto=len(room.sent) - 1)
    receive_ok(switched, takeover.entry, room.now)
    receive_ok(switched, mine.entry, room.now)
    reorg = receive_ok(switched, theirs.entry, room.now).events[0]
    assert isinstance(reorg, Reorganized)
    assert (reorg.old_head, reorg.new_head) == (mine.digest, theirs.digest)
    assert reorg.dropped == (included_by_m0.encoded,)
    assert reorg.fork_seq == theirs.seq - 1


def test_nearest_successor_wins_concurrent_takeovers() -> None:
    room = staffed_room()
    room.tick(2 * TAKEOVER_GRACE_MS)
    first = Sequencer(M0, node(room)).take_over(room.now)
    second = Sequencer(M1, node(room)).take_over(room.now)
    assert converge(room, [first.entry, second.entry]).head == first.digest


def test_equivocation_resolves_to_the_lowest_digest_everywhere() -> None:
    room = staffed_room()
    entries = [room.raw_entry(room.log, OWNER, room.action(person, Op.RAISE_HAND))
               for person in PEOPLE[:4]]
    log = converge(room, [e.encoded for e in entries])
    assert log.head == min(e.digest for e in entries)


def test_a_removed_moderator_cannot_take_over_afterwards() -> None:
    room = staffed_room()
    room.ok(OWNER, Op.DEMOTE_MODERATOR, target=M0.public)
    with pytest.raises(NotSuccessor):
        Sequencer(M0, node(room)).take_over(room.now + 10 * TAKEOVER_GRACE_MS)
    forged = room.raw_entry(room.log, M0, None, epoch=1, at=room.now + 10 * TAKEOVER_GRACE_MS)
    assert_refused(room.log, forged.encoded, RoomReason.BAD_TAKEOVER, forged.time_ms)


def test_a_removed_moderator_cannot_fork_from_before_its_removal_by_takeover() -> None:
    """M0 (successor 1) was away, so M1 (successor 2) took over; the owner later demoted M0. M0's
    own takeover at the old position would win on rank alone, but the real branch revoked M0."""
    room = staffed_room()
    fork_point = len(room.sent)
    room.tick(2 * TAKEOVER_GRACE_MS)
    m1 = Sequencer(M1, node(room))
    real = [m1.take_over(room.now).entry]
    demote = room.action(OWNER, Op.DEMOTE_MODERATOR, target=M0.public)
    real.append(m1.submit(demote.encoded, room.now).entry)  # type: ignore[union-attr]
    real.append(m1.submit(room.action(A, Op.RAISE_HAND).encoded, room.now).entry)  # type: ignore[union-attr]

    m0 = Sequencer(M0, node(room, upto=fork_point))
    fork = [m0.take_over(room.now).entry]
    # In its fork M0 even demotes M1 (M0 is senior): the owner's revocation still outranks it.
    fork.append(m0.submit(room.action(M0, Op.DEMOTE_MODERATOR, target=M1.public).encoded,
                          room.now).entry)  # type: ignore[union-attr]
    log = converge(room, real + fork, orders=30)
    assert log.head == m1.log.head
    assert log.state.role_of(M0.public).value == "speaker"


def test_a_removed_sequencer_cannot_fork_from_before_its_removal() -> None:
    """M0 sequenced, then the owner demoted it. Entries M0 signs afterwards for any earlier position
    lose, whatever their digests (equivocation alone would pick the lowest)."""
    room = staffed_room()
    room.ok(OWNER, Op.HANDOVER, target=M0.public)
    m0 = Sequencer(M0, node(room))
    fork_point = len(room.sent)
    real = [m0.submit(room.action(A, Op.RAISE_HAND).encoded, room.now).entry,  # type: ignore[union-attr]
            m0.submit(room.action(OWNER, Op.DEMOTE_MODERATOR, target=M0.public).encoded,
                      room.now).entry]  # type: ignore[union-attr]
    assert m0.log.state.sequencer == OWNER.public  # revoking the sequencer passes authority on
    forks = []
    for person in PEOPLE[1:6]:
        rogue = Sequencer(M0, node(room, upto=fork_point))
        forks.append(rogue.submit(room.action(person, Op.RAISE_HAND).encoded, room.now).entry)  # type: ignore[union-attr]
    log = converge(room, real + forks, orders=30)
    assert log.head == m0.log.head


def test_a_senior_deposes_a_sequencer_that_hides_its_own_demotion() -> None:
    """M1 holds the authority and will not include its demotion; the owner takes over and demotes
    it in the owner's branch, which then wins against M1's ordinary entries."""
    room = staffed_room()
    room.ok(OWNER, Op.HANDOVER, target=M1.public)
    fork_point = len(room.sent)
    m1 = Sequencer(M1, node(room))
    rogue = [m1.submit(room.action(p, Op.RAISE_HAND).encoded, room.now).entry  # type: ignore[union-attr]
             for p in PEOPLE[:2]]
    owner = Sequencer(OWNER, node(room, upto=fork_point))
    room.tick(TAKEOVER_GRACE_MS)
    deposing = [owner.take_over(room.now).entry]
    deposing.append(owner.submit(room.action(OWNER, Op.DEMOTE_MODERATOR, target=M1.public).encoded,
                                 room.now).entry)  # type: ignore[union-attr]
    # Before the demotion arrives, M1's ordinary entries beat a bare takeover…
    assert converge(room, rogue + deposing[:1]).head == m1.log.head
    # …once it has arrived, the owner's branch wins in every order.
    assert converge(room, rogue + deposing, orders=30).head == owner.log.head


def test_a_takeover_needs_a_live_room() -> None:
    room = staffed_room()
    room.ok(OWNER, Op.END_ROOM)
    m0 = Sequencer(M0, node(room))
    assert not m0.may_take_over(room.now + 10 * TAKEOVER_GRACE_MS)
    late = room.raw_entry(room.log, M0, None, epoch=1, at=room.now + 10 * TAKEOVER_GRACE_MS)
    assert_refused(room.log, late.encoded, RoomReason.ROOM_ENDED, late.time_ms)
