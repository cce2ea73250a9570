"""``plan.Placements``: which children the newest plan moved elsewhere, and since when."""

from __future__ import annotations

import os

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.session.plan import Assignment, Placements, sign_plan

ROOM = bytes(32)
SEQUENCER = SigningKey(os.urandom(32))
A, P, Q = (SigningKey(os.urandom(32)).public for _ in range(3))


def plan(version: int, parent, epoch: int = 1, backup=None):  # type: ignore[no-untyped-def]
    return sign_plan(SEQUENCER, ROOM, topology="tree", epoch=epoch, version=version,
                     entries=[Assignment(A, version, parent, backup, 1)], now_ms=0)


def test_a_child_moved_elsewhere_counts_from_the_plan_that_moved_it():
    placements = Placements()
    placements.take(plan(1, P), now_s=10.0)
    assert placements.moved_away(A, P, now_s=11.0) is None
    placements.take(plan(2, Q), now_s=12.0)
    assert placements.moved_away(A, P, now_s=13.5) == 1.5
    assert placements.moved_away(A, Q, now_s=13.5) is None
    placements.take(plan(3, Q), now_s=20.0)  # the same parent again: the move is not newer
    assert placements.moved_away(A, P, now_s=21.0) == 9.0


def test_older_plans_arriving_late_change_nothing_and_unknown_or_unparented_is_not_moved():
    placements = Placements()
    placements.take(plan(5, Q), now_s=1.0)
    placements.take(plan(4, P), now_s=2.0)  # gossip delivered it late
    assert placements.moved_away(A, P, now_s=3.0) == 2.0
    assert placements.moved_away(P, Q, now_s=3.0) is None  # nothing known of P
    placements.take(plan(1, None, epoch=2), now_s=4.0)  # a new sequencer's epoch: no parent
    assert placements.moved_away(A, P, now_s=5.0) is None


def test_memory_is_bounded():
    placements = Placements()
    placements.MAX_NODES = 3  # type: ignore[misc]
    for version in range(1, 6):
        who = SigningKey(os.urandom(32)).public
        placements.take(sign_plan(SEQUENCER, ROOM, topology="tree", epoch=1, version=version,
                                  entries=[Assignment(who, version, P, None, 1)], now_ms=0),
                        now_s=float(version))
    assert len(placements._newest) == 3


def test_a_child_whose_backup_we_are_is_not_moved_away_from_us():
    """After its parent died, a child's backup feeds it until the next plan: not a moved child."""
    placements = Placements()
    placements.take(plan(1, P, backup=Q), now_s=1.0)
    assert placements.moved_away(A, Q, now_s=30.0) is None
