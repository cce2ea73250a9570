"""Rebalancing a relay tree with a bounded number of make-before-break moves.

Joins and departures place members greedily and never move bystanders, so over time a member with
many slots can end up deep (its slots grew, or it joined when the shallow levels were full) and free
slots can open near the stage (a relay left). Three kinds of step repair that:

- **lift**: a member at depth ≥ f + 2, where f is the depth of the shallowest free slot, moves (with
  its subtree) into that slot — the one with the most slots first, as shallow slots are worth most
  to relays. A member kept apart from those slots (``keep_apart``) rises by making way: a childless
  member of a parent at least two levels above it steps into a free slot no deeper, and the
  member kept apart takes its place;
- **swap**: a member X with more slots than a shallower member Y takes Y's place and Y's children;
  Y takes X's place and whichever of X's children X has no room left for. Only X and Y change depth
  (X's kept children rise with it); everyone else keeps theirs;
- **closer** (only with latencies): a member far from the stage moves to a nearer parent at its
  depth or above, saving at least ``CLOSER_GAIN_MS`` of path delay plus hop cost.

Lifts and swaps strictly lower Φ = Σ depth × (slots + 1) and, with latencies, may not raise the
total cost (path delays plus hop costs); "closer" moves do not raise Φ and lower that cost. Every
step lowers (Φ, cost) lexicographically, so rebalancing always ends. Without the NAT rule and
latencies, when no lift or swap applies, no free slot lies two levels above the deepest member and
each level's members have at least as many slots as any deeper member's: that is the greedy full
tree, whose depth is the least possible (``optimal_depth``; the tests check it). A swap of two full nodes is a rotation, so the sequencer parks one member in a
spare free slot while the others pass — first moving a childless member into the free slots when
none lies outside the member to park; each step connects to a parent that has a free slot at that
moment, so no cap is ever exceeded, even transiently. What cannot be rotated that way is left as
it is: a tree with no free slot at all, or one where a single stage child holds everyone (it can
only leave its stage slot for a node of its own subtree, which hears the stage through it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pvoix.mesh._planner_tree import Id

if TYPE_CHECKING:
    from p2pvoix.mesh.planner import Planner

LIFT_TRIES = 16  # candidates examined per lift; beyond these the NAT rule blocks them all anyway
SWAP_TRIES = 12  # pairs examined per swap
SWAP_WIDTH = 3  # weakest and strongest members per level that pairs are made from
CLOSER_GAIN_MS = 10.0  # a latency move must save at least this much
CLOSER_TRIES = 8  # members examined per latency move allowed by the budget


def rebalance(planner: Planner, budget: int) -> None:
    used = 0
    while used < budget:
        remaining = budget - used
        spent = (_lift(planner, remaining) or _swap(planner, remaining)
                 or _closer(planner, remaining))
        if not spent:
            return
        used += spent


def _lift(planner: Planner, remaining: int) -> int:
    tree = planner.tree
    free_depths = sorted({bucket[0] for bucket in tree.free.buckets()})
    if not free_depths:
        return 0
    floor = free_depths[0] + 2
    candidates = [
        (entry[0], -depth, entry[-1])
        for depth in tree.ranks.buckets()
        if depth >= floor
        for entry in tree.ranks.entries(depth)[:LIFT_TRIES]
    ]
    ranked = [node for *_, node in sorted(candidates)[:LIFT_TRIES]]
    for node in ranked:
        slot = planner._best_slot(
            node, tree.free, exclude=node, max_depth=tree.depth[node] - 2
        )
        # With latencies, rising must not cost more distance than the levels it saves.
        if slot is not None and planner._cost_below(node, slot) < planner._cost(node):
            planner._move(node, slot)
            return 1
    if remaining >= 2:
        for node in ranked:
            if node in planner._apart and (spent := _make_way(planner, node)):
                return spent
    return 0


def _make_way(planner: Planner, node: Id) -> int:
    """Lift ``node`` although it is kept apart from the shallow free slots (``keep_apart``): a
    childless member of a shallow parent that may feed ``node`` steps into a free slot no deeper
    than its own, and ``node`` takes its place. Two moves, each into a free slot; Φ falls, as
    ``node``'s subtree rises and the member does not sink."""
    tree = planner.tree
    limit = tree.depth[node] - 2
    # Childless members whose parent is at ``limit`` or above (a copy: the moves tried below
    # change the index, and are rolled back).
    shallow = [other for depth in tree.leaves.buckets() if depth - 1 <= limit
               for *_, other in tree.leaves.entries(depth)]
    tried = 0
    for other in shallow:
        above = tree.parent[other]
        if not planner.may_feed(node, above):
            continue
        slot = planner._best_slot(other, tree.free, exclude=other, max_depth=tree.depth[above],
                                  accept=lambda s, above=above: s != above)
        if slot is not None:
            mark, phi, cost = len(planner._moves), tree.phi, planner._total_cost()
            planner._move(other, slot)
            planner._move(node, above)
            if tree.phi < phi and planner._total_cost() <= cost:
                return 2
            _rollback(planner, mark)
        tried += 1
        if tried >= LIFT_TRIES:
            break
    return 0


def _closer(planner: Planner, remaining: int) -> int:
    """With latencies: members furthest from the stage move to a nearer parent at their depth or
    above (so Φ does not rise and the total cost falls): one pass, at most ``remaining`` moves."""
    tree = planner.tree
    if planner.latency is None:
        return 0
    audience = [n for n in tree.depth if not tree.members[n].stage]
    audience.sort(key=lambda n: (-tree.delay[n], n))
    moved = 0
    for node in audience[: CLOSER_TRIES * remaining]:
        if moved >= remaining:
            break
        parent = tree.parent[node]
        slot = planner._best_slot(node, tree.free, exclude=node, max_depth=tree.depth[parent])
        if slot is None or slot == parent:
            continue
        if planner._cost_below(node, slot) + CLOSER_GAIN_MS <= planner._cost(node):
            planner._move(node, slot)
            moved += 1
    return moved


def _swap(planner: Planner, remaining: int) -> int:
    tree = planner.tree
    levels = tree.ranks.buckets()
    strongest = {depth: tree.ranks.entries(depth)[:SWAP_WIDTH] for depth in levels}
    weakest = {depth: tree.ranks.entries(depth)[-SWAP_WIDTH:] for depth in levels}
    pairs = []
    for high in levels:
        for low in levels:
            if low <= high:
                continue
            for *_, strong in strongest[low]:
                for *_, weak in weakest[high]:
                    surplus = tree.members[strong].slots - tree.members[weak].slots
                    if surplus > 0:
                        # Most gain first; at equal gain, members in separate subtrees (the
                        # cheaper rotation), then id order.
                        below = tree.in_subtree(strong, weak)
                        pairs.append((-surplus * (low - high), below, strong, weak))
    for *_, strong, weak in sorted(pairs)[:SWAP_TRIES]:
        targets = _swap_targets(planner, strong, weak)
        if targets is None:
            continue
        mark, phi, cost = len(planner._moves), tree.phi, planner._total_cost()
        # Below ``weak``, ``strong`` must first leave its subtree; beside it, ``weak`` steps aside.
        below = planner.tree.in_subtree(strong, weak)
        done = _sequence(planner, targets, park_first=(strong, weak) if below else (weak, strong))
        spent = len(planner._moves) - mark
        if done and spent <= remaining and tree.phi < phi and planner._total_cost() <= cost:
            return spent
        _rollback(planner, mark)
    return 0


def _swap_targets(planner: Planner, strong: Id, weak: Id) -> dict[Id, Id] | None:
    """The parents after ``strong`` and ``weak`` exchange places, or None if the NAT rule objects."""
    tree = planner.tree
    strong_parent, weak_parent = tree.parent[strong], tree.parent[weak]
    adjacent = strong_parent == weak
    targets = {strong: weak_parent, weak: strong if adjacent else strong_parent}
    inherited = [child for child in tree.children[weak] if child != strong]
    targets.update((child, strong) for child in inherited)
    room = tree.members[strong].slots - len(inherited) - (1 if adjacent else 0)
    # The strongest of its own children stay with it (they rise for free); the rest go to ``weak``.
    own = sorted(tree.children[strong], key=lambda c: (-tree.members[c].slots, c))
    given = own[room:]
    if len(given) > tree.members[weak].slots:
        return None
    targets.update((child, weak) for child in given)
    if not all(planner.may_feed(node, parent) for node, parent in targets.items()):
        return None
    return targets


def _sequence(planner: Planner, targets: dict[Id, Id], park_first: tuple[Id, ...] = ()) -> bool:
    """Move every member to its target parent in an order that keeps every cap and every NAT
    rule, parking one member at a time in a spare free slot when all wait on one another
    (``park_first`` first, in that order)."""
    tree = planner.tree
    pending = {node: parent for node, parent in sorted(targets.items()) if tree.parent[node] != parent}
    parked: set[Id] = set()
    borrowers: list[Id] = []  # childless members moved aside into a claimed slot
    for _ in range(4 * len(pending) + 4):
        if not pending:
            return True
        moved = False
        for node in sorted(pending):
            if planner._slot_ok(node, pending[node]):
                planner._move(node, pending.pop(node))
                moved = True
        if moved:
            continue
        def spare(slot: Id) -> bool:
            return _unclaimed(tree, slot, pending) and not any(
                tree.in_subtree(slot, p) for p in pending
            )

        if _give_back(planner, borrowers, pending, spare):
            continue
        order = [n for n in park_first if n in pending] + sorted(set(pending) - set(park_first))
        for node in order:
            if node in parked:
                continue
            slot = planner._best_slot(node, tree.free, exclude=node, accept=spare)
            if slot is None:
                slot = planner._best_slot(node, tree.free, exclude=node)
            if slot is None:
                slot = _make_room(planner, node, pending, borrowers)
            if slot is not None:
                planner._move(node, slot)
                parked.add(node)
                moved = True
                break
        if not moved:
            return False
    return not pending


def _give_back(planner: Planner, borrowers: list[Id], pending: dict[Id, Id], spare) -> bool:
    """Move one borrower out of a slot a pending member waits for, into a spare one."""
    tree = planner.tree
    for leaf in borrowers:
        above = tree.parent[leaf]
        if _unclaimed(tree, above, pending, ignore=1):
            continue
        slot = planner._best_slot(leaf, tree.free, exclude=leaf, accept=spare)
        if slot is not None:
            planner._move(leaf, slot)
            return True
    return False


def _make_room(
    planner: Planner, node: Id, pending: dict[Id, Id], borrowers: list[Id]
) -> Id | None:
    """Free a slot outside ``node``'s subtree by moving one childless member elsewhere (into
    ``node``'s subtree, typically: that is where the free slots are when none is outside)."""
    tree = planner.tree
    if not tree.free.buckets():
        return None
    tried = 0
    for level in reversed(tree.leaves.buckets()):
        for *_, leaf in tree.leaves.entries(level):
            above = tree.parent[leaf]
            if leaf in pending or above in pending or not planner.may_feed(node, above):
                continue
            if tree.in_subtree(leaf, node) or any(tree.in_subtree(leaf, p) for p in pending):
                continue
            slot = planner._best_slot(
                leaf, tree.free, exclude=leaf,
                accept=lambda s, above=above: s != above and _unclaimed(tree, s, pending),
            ) or planner._best_slot(  # borrowing a claimed slot: the leaf gives it back later
                leaf, tree.free, exclude=leaf, accept=lambda s, above=above: s != above
            )
            if slot is not None:
                if not _unclaimed(tree, slot, pending):
                    borrowers.append(leaf)
                planner._move(leaf, slot)
                return above
            tried += 1
            if tried >= LIFT_TRIES:
                return None
    return None


def _unclaimed(tree, slot: Id, pending: dict[Id, Id], ignore: int = 0) -> bool:
    """Does ``slot`` have a free slot beyond those the pending members are waiting for?
    (``ignore``: count that many of its taken slots as free, e.g. the caller's own.)"""
    claims = sum(1 for parent in pending.values() if parent == slot)
    return tree.free_slots(slot) + ignore > claims


def _rollback(planner: Planner, mark: int) -> None:
    """Undo the moves made since ``mark``, newest first (each undo restores a state that was valid)."""
    for move in reversed(planner._moves[mark:]):
        planner.tree.move(move.member, move.previous)
    del planner._moves[mark:]
