"""Relay planner: who feeds whom in a room's audience tree (issue 6, "Relay trees").

Pure: calls in, :class:`PlanChange` out; no clock, no randomness, no I/O. The room's authority
node runs one :class:`Planner`, publishes each change as signed assignments (child → parent, plus a
backup parent for fast repair), and every node obeys its own. Stage nodes (speakers and
moderators) are the roots: they hear every speaker directly over the stage mesh, so any of them
can feed the audience. Audience members hang below them and relay to at most ``slots`` children.

Rules the planner keeps after every call (``tests/mesh/test_planner.py`` checks them):

- No node has more children than its slots, stage nodes included; 0 slots makes a leaf.
- No cycles. With ``nat_needs_reachable_parent``, a member whose reach is ``"symmetric"`` hangs
  only below a ``"public"`` or ``"turn"`` member (behind a NAT with a TURN server: its relayed
  address is reachable) or a stage node not itself behind a NAT; a ``"nat"`` member (a NAT that
  keeps one public mapping per socket) also below another ``"nat"`` member, as ICE punches a hole
  between two such NATs.
  ``"unknown"`` counts as not reachable (a NAT we have not measured yet is still a NAT) unless
  ``unknown_is_reachable``; as a *child* an unknown member goes anywhere, as it may be able to
  accept connections.
- A pair kept apart (``keep_apart``: the child could not link to that parent, though both are
  alive) is never parent and child, nor member and backup, until ``allow``; every placement path
  asks ``may_feed``, which says no for the pair as it does for a NAT rule violation.
- Every audience member is attached whenever a free slot it may use exists, or one other member
  can make room for it (one splice or one displacement, see ``_place``). Without the NAT rule
  and with no pair kept apart, that is exact: everyone is attached iff the stage has a slot and
  all slots together ≥ the audience.
- Depth is kept small: a member takes the shallowest free slot; a joining relay takes the place of
  a shallower childless member with fewer slots (which then hangs below it), so high-slot nodes
  drift towards the roots. ``rebalance`` finishes the job with a bounded number of moves; run
  to the end, it reaches the least possible depth whenever members can be rotated without a
  cap being exceeded (``_planner_rebalance``).
- Distance, when a ``latency`` function is given: among slots at the shallowest level (and up to
  ``depth_slack`` levels deeper) a member takes the one with the least path delay from the stage
  plus ``hop_cost_ms`` per level, comparing a few candidates from every ``Member.zone`` (so one
  region's listeners cluster below one another instead of criss-crossing continents).
- Stability: a join moves at most one other member; a departure moves only the departed node's
  own children (each keeps its subtree), to its backup first — the node has already started
  connecting there — else to the shallowest free slot. Others move only when capacity is so short
  that someone would otherwise stay without audio.
- Each attached audience member has a backup: another node with a free slot, outside the
  subtree of its parent (a backup below the parent that just died would be silent too, and two
  orphans naming each other's subtrees would form a loop), NAT rule respected, preferring slots
  not yet promised to as many other members as they have free, then the shallowest. A backup is
  re-chosen as soon as it becomes invalid, or promised to more members than it has free slots
  (the latest promises go first), and is ``None`` only when no node qualifies. So a join changes
  O(1) assignments: itself, perhaps one spliced member, one or two backups.
- Deterministic: ties are broken by id order (ids are hashable and totally ordered: str, bytes,
  int), never by hash order, so two planners fed the same calls publish the same plan.

Each change lists its moves in the order the nodes must make them; every step respects the caps
at the moment it runs, and each is make-before-break (connect to the new parent, then leave the
old one) except where ``Move.break_first`` says otherwise (a member hands its slot to a newcomer
that has nowhere else to go).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from p2pvoix.mesh import _planner_rebalance
from p2pvoix.mesh._planner_place import Latency, PlannerCore
from p2pvoix.mesh._planner_tree import NAT_LIKE, REACH, Id, Member, Move

__all__ = [
    "REACH", "Assignment", "Latency", "Member", "Move", "PlanChange", "Planner", "optimal_depth"
]


@dataclass(frozen=True)
class Assignment:
    """What the authority publishes for one member: ``parent`` is None for stage and unattached."""

    member: Id
    parent: Id | None
    backup: Id | None
    stage: bool


@dataclass(frozen=True)
class PlanChange:
    assignments: tuple[Assignment, ...]  # members whose parent, backup or stage flag changed
    moves: tuple[Move, ...]  # parent changes, in the order they must happen
    removed: tuple[Id, ...] = ()  # members that left the plan

    @property
    def moved(self) -> frozenset[Id]:
        """Members whose parent changed (new members included)."""
        return frozenset(move.member for move in self.moves)


def optimal_depth(stage_slots: Iterable[int], audience_slots: Iterable[int]) -> int | None:
    """Depth of the greedy full tree (largest fan-out nearest the roots), NAT ignored.

    That tree has the least possible maximum depth; None if the slots cannot hold the audience.
    """
    slots = sorted(audience_slots, reverse=True)
    capacity, placed, depth = sum(stage_slots), 0, 0
    while placed < len(slots):
        if capacity <= 0:
            return None
        level = slots[placed : placed + capacity]
        placed, capacity, depth = placed + len(level), sum(level), depth + 1
    return depth


class Planner(PlannerCore):
    """The current plan of one room, changed by calls that each return a :class:`PlanChange`."""

    # -- queries -------------------------------------------------------------------------------

    def __contains__(self, node: Id) -> bool:
        return node in self.tree.members

    def __len__(self) -> int:
        return len(self.tree.members)

    def members(self) -> list[Member]:
        return [self.tree.members[node] for node in sorted(self.tree.members)]

    def member(self, node: Id) -> Member:
        return self.tree.members[node]

    def parent_of(self, node: Id) -> Id | None:
        return self.tree.parent[node]

    def backup_of(self, node: Id) -> Id | None:
        return self.tree.backup[node]

    def depth_of(self, node: Id) -> int | None:
        """Relay hops below the stage (stage 0, their children 1); None when not attached."""
        return self.tree.depth.get(node)

    def children_of(self, node: Id) -> tuple[Id, ...]:
        return tuple(sorted(self.tree.children[node]))

    def assignment_of(self, node: Id) -> Assignment:
        return Assignment(node, *self.tree.assignment(node))

    def free_slots(self, node: Id) -> int:
        return self.tree.free_slots(node)

    def statistics(self) -> dict[str, object]:
        tree = self.tree
        audience = [n for n in sorted(tree.members) if not tree.members[n].stage]
        histogram: dict[int, int] = {}
        for node in audience:
            if (depth := tree.depth.get(node)) is not None:
                histogram[depth] = histogram.get(depth, 0) + 1
        attached_free = [tree.free_slots(n) for n in tree.depth if tree.free_slots(n) > 0]
        return {
            "members": len(tree.members),
            "stage": len(self._stage),
            "audience": len(audience),
            "attached": sum(histogram.values()),
            "max_depth": max(histogram, default=0),
            "depth_histogram": dict(sorted(histogram.items())),
            "optimal_depth": optimal_depth(
                (tree.members[n].slots for n in self._stage),
                (tree.members[n].slots for n in audience),
            ),
            "fanout": {n: len(tree.children[n]) for n in sorted(tree.members) if tree.children[n]},
            "free_slots": sum(attached_free),
            "unattached": self._unattached(audience),
            "without_backup": sum(
                1 for n in audience if n in tree.depth and tree.backup[n] is None
            ),
        }

    # -- operations ----------------------------------------------------------------------------

    def join(self, member: Member) -> PlanChange:
        """Add ``member``: a stage node becomes a root, an audience member is attached."""
        if member.id in self.tree.members:
            raise ValueError(f"{member.id!r} is already in the plan")
        self._begin()
        self.tree.add(member)
        if member.stage:
            self._stage.add(member.id)
        elif self._place(member.id):
            self._splice_up(member.id)
        return self._finish()

    def leave(self, node: Id) -> PlanChange:
        """Remove ``node``; each of its children keeps its subtree and is re-attached."""
        tree = self.tree
        self._check(node)
        self._begin()
        orphans = self._by_strength(tree.children[node])
        if tree.parent[node] is not None:
            tree.unlink(node)
        backups = {orphan: tree.backup[orphan] for orphan in orphans}
        for orphan in orphans:
            tree.unlink(orphan)
        tree.remove(node)
        self._stage.discard(node)
        self._no_backup.discard(node)
        self._apart.pop(node, None)
        for child in [c for c, apart in self._apart.items() if node in apart]:
            self._forget_apart(child, node)
        for orphan in orphans:
            backup = backups[orphan]
            if backup is not None and self._slot_ok(orphan, backup):
                self._link(orphan, backup)
            else:
                self._place(orphan)
        return self._finish(removed=(node,))

    def set_slots(self, node: Id, slots: int) -> PlanChange:
        """Change how many children ``node`` feeds; children beyond the new cap move elsewhere."""
        tree = self.tree
        self._check(node)
        self._begin()
        tree.replace(replace(tree.members[node], slots=slots))
        excess = len(tree.children[node]) - slots
        if excess > 0:
            # The cheapest to move and the easiest to place go: childless, then fewest slots.
            victims = sorted(
                tree.children[node],
                key=lambda c: (bool(tree.children[c]), tree.members[c].slots, c),
            )[:excess]
            for victim in victims:
                self._move_or_unlink(victim, first=tree.backup[victim])
        return self._finish()

    def set_stage(self, node: Id, on_stage: bool) -> PlanChange:
        """Promote to (a root, keeping its subtree) or demote from the stage (then attached)."""
        tree = self.tree
        self._check(node)
        self._begin()
        member = tree.members[node]
        if member.stage != on_stage:
            if on_stage:
                parent = tree.parent[node]
                tree.replace(replace(member, stage=True))
                self._stage.add(node)
                tree.loose.discard(node)
                if parent is not None:
                    tree.unlink(node)
                    self._moves.append(Move(node, None, parent))
                else:
                    tree.set_depths(node, 0)
            else:
                tree.replace(replace(member, stage=False))
                self._stage.discard(node)
                tree.loose.add(node)
                tree.set_depths(node, None)
                # A NAT child of a demoted node that is not public may no longer stay there.
                for child in sorted(c for c in tree.children[node] if not self.may_feed(c, node)):
                    self._move_or_unlink(child)
                self._place(node)
        return self._finish()

    def set_reach(self, node: Id, reach: str) -> PlanChange:
        """``node`` measured its reach anew (``p2pvoix/reach``): it may now feed NAT members, or
        no longer; a NAT member under a parent that cannot feed it moves; loose ones retry."""
        tree = self.tree
        self._check(node)
        self._begin()
        tree.replace(replace(tree.members[node], reach=reach))
        # Backups are checked again where reach decides them: its own if it is behind a NAT now,
        # and those of NAT'd members it backs (it may no longer feed them). Other backups stay:
        # every node's first measurement (unknown, then public) must not reshuffle the room.
        if reach in NAT_LIKE:
            tree.dirty.add(node)
        tree.dirty.update(u for u in tree.users[node] if tree.members[u].reach in NAT_LIKE)
        for child in sorted(c for c in tree.children[node] if not self.may_feed(c, node)):
            self._move_or_unlink(child)
        parent = tree.parent[node]
        if parent is not None and not self.may_feed(node, parent):
            self._move_or_unlink(node)
        return self._finish()

    def keep_apart(self, child: Id, parent: Id) -> PlanChange:
        """``child`` could not link to ``parent`` although both are alive (two NATs ICE cannot
        punch through, a parent that turns it away): ``parent`` feeds ``child`` neither as parent
        nor as backup until ``allow``. A child fed by it moves to its backup (where a child whose
        link died has already failed over), else to the best free slot, else it is loose; a
        backup is chosen again. Only the one pair is affected: ``parent`` feeds everyone else."""
        tree = self.tree
        self._check(child)
        self._check(parent)
        self._begin()
        self._apart.setdefault(child, set()).add(parent)
        if tree.parent[child] == parent:
            # Its backup first: where it failed over, if the link died under it.
            self._move_or_unlink(child, first=tree.backup[child])
        if tree.backup[child] == parent:
            tree.dirty.add(child)
        return self._finish()

    def allow(self, child: Id, parent: Id) -> PlanChange:
        """End ``keep_apart(child, parent)``: a loose ``child`` may hang below ``parent`` again."""
        self._begin()
        self._forget_apart(child, parent)
        return self._finish()

    def _forget_apart(self, child: Id, parent: Id) -> None:
        apart = self._apart.get(child)
        if apart is not None:
            apart.discard(parent)
            if not apart:
                del self._apart[child]

    def kept_apart(self) -> frozenset[tuple[Id, Id]]:
        """Every ``(child, parent)`` pair that ``keep_apart`` holds."""
        return frozenset((child, parent) for child, apart in self._apart.items() for parent in apart)

    def _move_or_unlink(self, node: Id, first: Id | None = None) -> None:
        """Move ``node`` (with its subtree) to ``first`` if that can take it now, else to the
        best free slot; with nowhere to go it is loose."""
        if first is not None and self._slot_ok(node, first):
            self._move(node, first)
            return
        target = self._best_slot(node, self.tree.free, exclude=node)
        if target is not None:
            self._move(node, target)
        else:
            self._moves.append(Move(node, None, self.tree.unlink(node)))

    def rebalance(self, budget: int) -> PlanChange:
        """Make at most ``budget`` moves that lower depth (high-slot members rise) and, with
        latencies, bring members nearer the stage; each move is make-before-break."""
        self._begin()
        _planner_rebalance.rebalance(self, budget)
        return self._finish()

    def _unattached(self, audience: list[Id]) -> dict[Id, str]:
        tree = self.tree
        free_by_class = [0, 0, 0]  # free slots by whom they may feed (Tree.feeds)
        for bucket in tree.free.buckets():
            free_by_class[bucket[1]] += sum(tree.free_slots(e[-1])
                                            for e in tree.free.entries(bucket))
        reasons = {}
        for node in audience:
            if node in tree.depth:
                continue
            if node not in tree.loose:
                reasons[node] = "parent-unattached"
            elif not self._stage:
                reasons[node] = "no-stage"
            elif node in self._apart and tree.free.buckets():
                reasons[node] = "kept-apart"  # from the parents with a free slot (keep_apart)
            elif (self._needs_reachable(node) and not sum(free_by_class[self._need(node):])
                  and tree.free.buckets()):
                reasons[node] = "no-reachable-slot"
            else:
                reasons[node] = "no-capacity"
        return reasons

    def _check(self, node: Id) -> None:
        if node not in self.tree.members:
            raise KeyError(f"{node!r} is not in the plan")

    def _begin(self) -> None:
        self.tree.before.clear()
        self._moves = []

    def _finish(self, removed: tuple[Id, ...] = ()) -> PlanChange:
        self._retry_loose()
        self._refresh_backups()
        tree = self.tree
        assignments = tuple(
            Assignment(node, *tree.assignment(node))
            for node in sorted(tree.before)
            if node in tree.members and tree.before[node] != tree.assignment(node)
        )
        change = PlanChange(assignments, tuple(self._moves), removed)
        tree.before.clear()
        self._moves = []
        return change
