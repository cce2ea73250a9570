"""The planner's core: where a member may go, how it gets there, and who backs it up.

Pure; private to ``planner.py``, whose module docstring states the rules. ``PlannerCore`` searches
the tree's indices for slots (shallowest first, then NAT-aware, then nearest, then lowest id),
attaches loose members (a free slot, else one splice or one displacement), and keeps every
attached member's backup valid. It records each parent change as a :class:`Move`, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from p2pvoix.mesh._planner_tree import Buckets, Id, Move, Tree

Latency = Callable[[Id, Id], float]  # one-way milliseconds between two members


class PlannerCore:
    """Search, placement and backups over one :class:`Tree`; the public API is ``Planner``."""

    def __init__(
        self,
        *,
        nat_needs_reachable_parent: bool = True,
        unknown_is_reachable: bool = False,
        latency: Latency | None = None,
        hop_cost_ms: float = 25.0,
        depth_slack: int = 1,
        window: int = 8,
    ) -> None:
        """Without ``latency``, a member takes the shallowest free slot. With it, a slot costs
        its path delay from the stage plus ``hop_cost_ms`` per level, and a member may go up to
        ``depth_slack`` levels deeper than the shallowest free slot when that costs less: one
        more relay adds little delay (0.2 ms and its serialisation) but one more node that can
        fail, while a needless intercontinental hop adds 100 ms or more. ``window`` slots per
        zone and level are compared."""
        self.nat_needs_reachable_parent = nat_needs_reachable_parent
        reachable = {"public", "turn", "unknown"} if unknown_is_reachable else {"public", "turn"}
        self.tree = Tree(frozenset(reachable), latency)
        self.latency = latency
        self.hop_cost_ms = hop_cost_ms
        self.depth_slack = depth_slack if latency is not None else 0
        self.window = max(1, window)
        self._moves: list[Move] = []
        self._no_backup: set[Id] = set()
        self._stage: set[Id] = set()
        self._apart: dict[Id, set[Id]] = {}  # child -> parents it could not link to

    def may_feed(self, child: Id, parent: Id) -> bool:
        """Do the NAT rule and the pairs kept apart allow ``parent`` to feed ``child``?"""
        return self.tree.feeds(parent) >= self._need(child) and not self._kept_apart(child, parent)

    def _kept_apart(self, child: Id, parent: Id) -> bool:
        apart = self._apart.get(child)
        return apart is not None and parent in apart

    def _need(self, node: Id) -> int:
        """What a parent of ``node`` must offer (``Tree.feeds``): 2 behind a symmetric NAT (only a
        reachable parent), 1 behind a ``nat`` (also a parent behind one), 0 otherwise."""
        if not self.nat_needs_reachable_parent:
            return 0
        reach = self.tree.members[node].reach
        return 2 if reach == "symmetric" else 1 if reach == "nat" else 0

    def _needs_reachable(self, node: Id) -> bool:
        return self._need(node) > 0

    # -- placement -----------------------------------------------------------------------------

    def _place(self, node: Id) -> bool:
        """Attach loose ``node`` (with its subtree): a free slot, else make room with one move."""
        parent = self._best_slot(node, self.tree.free, exclude=node)
        if parent is not None:
            self._link(node, parent)
            return True
        return self._splice_in(node) or self._displace_for(node)

    def _splice_up(self, node: Id) -> None:
        """A newly attached relay takes the place of a shallower childless member with fewer slots.

        That member hangs below it, one level deeper but never deeper than the newcomer was, and
        the newcomer's free slots are now that much nearer the stage.
        """
        tree = self.tree
        slots, depth = tree.members[node].slots, tree.depth[node]
        if tree.free_slots(node) < 1:
            return
        for level in tree.leaves.buckets():
            if level >= depth:
                return
            for *_, other in tree.leaves.entries(level):
                if tree.members[other].slots >= slots:
                    break
                above = tree.parent[other]
                if not (self.may_feed(node, above) and self.may_feed(other, node)):
                    continue
                if self.latency is not None and (
                    self.latency(node, other) > self.latency(above, other) + self.hop_cost_ms
                ):
                    continue  # the member pushed down would hear from much further away
                self._move(other, node)
                self._move(node, above)
                return

    def _splice_in(self, node: Id) -> bool:
        """No free slot outside ``node``'s subtree: it takes an attached member's place.

        That member moves into a free slot of ``node``'s subtree; it has no audio until ``node``
        is attached in its place (the one break-before-make step the planner ever asks for).
        """
        tree = self.tree
        inside = self._free_inside(node)
        if not inside:
            return False
        for other in self._candidates():
            above = tree.parent[other]
            if not self.may_feed(node, above):
                continue
            slot = next((s for s in inside if self.may_feed(other, s)), None)
            if slot is not None:
                self._moves.append(Move(other, slot, tree.move(other, slot), break_first=True))
                self._link(node, above)
                return True
        return False

    def _displace_for(self, node: Id) -> bool:
        """A NAT member with no reachable slot (or one kept apart from the parents with a free
        slot): a non-NAT child of a parent that may feed it moves over."""
        tree = self.tree
        if not tree.free.buckets() or not (self._needs_reachable(node) or node in self._apart):
            return False
        for other in self._candidates():
            above = tree.parent[other]
            if self._needs_reachable(other) or not self.may_feed(node, above):
                continue
            slot = self._best_slot(other, tree.free, exclude=other)
            if slot is not None:
                self._move(other, slot)
                self._link(node, above)
                return True
        return False

    def _candidates(self) -> list[Id]:
        """Attached audience members, the cheapest to disturb first: childless, shallow, few slots."""
        tree = self.tree
        childless = [e[-1] for level in tree.leaves.buckets() for e in tree.leaves.entries(level)]
        others = [
            e[-1]
            for level in tree.ranks.buckets()
            for e in reversed(tree.ranks.entries(level))
            if tree.children[e[-1]]
        ]
        return childless + others

    def _free_inside(self, top: Id) -> list[Id]:
        """Nodes with a free slot in ``top``'s subtree, shallowest first."""
        tree, found, level = self.tree, [], [top]
        while level:
            found += sorted(n for n in level if tree.free_slots(n) > 0)
            level = [child for n in level for child in tree.children[n]]
        return found

    def _best_slot(
        self,
        node: Id,
        index: Buckets,
        *,
        exclude: Id | None,
        accept: Callable[[Id], bool] | None = None,
        max_depth: int | None = None,
    ) -> Id | None:
        """The best node in ``index`` to feed ``node``: shallowest, then one that could not feed
        members behind harder NATs than ``node``'s anyway (``Tree.feeds``), then nearest,
        then lowest id. Nodes in ``exclude``'s subtree and ``node`` itself never qualify."""
        tree = self.tree
        need = self._need(node)
        levels: dict[int, list] = {}
        for bucket in index.buckets():
            if bucket[1] >= need:
                levels.setdefault(bucket[0], []).append(bucket)
        found: list[Id] = []
        last: int | None = None
        for depth in sorted(levels):
            if (max_depth is not None and depth > max_depth) or (last is not None and depth > last):
                break
            for bucket in levels[depth]:  # every zone's first few, so the nearest can be found
                count = 0
                for *_, other in index.entries(bucket):
                    if other == node or (exclude is not None and tree.in_subtree(other, exclude)):
                        continue
                    if self._kept_apart(node, other):
                        continue
                    if accept is not None and not accept(other):
                        continue
                    found.append(other)
                    count += 1
                    if count >= self.window:
                        break
            if found and last is None:
                last = depth + self.depth_slack
        return min(found, key=lambda other: self._rank(node, other)) if found else None

    def _rank(self, node: Id, other: Id) -> tuple:
        keep_for_nat = self.tree.feeds(other) > self._need(node)
        return (self._cost_below(node, other), keep_for_nat, other)

    def _cost_below(self, node: Id, parent: Id) -> float:
        """What hanging ``node`` below ``parent`` costs: its depth, and its path delay if known."""
        depth = self.tree.depth[parent] + 1
        if self.latency is None:
            return depth
        return self._delay_below(node, parent) + self.hop_cost_ms * depth

    def _cost(self, node: Id) -> float:
        """What ``node``'s place costs now, in the units of ``_cost_below``."""
        depth = self.tree.depth[node]
        return depth if self.latency is None else self.tree.delay[node] + self.hop_cost_ms * depth

    def _total_cost(self) -> float:
        """Σ of every attached member's cost: no rebalancing step may raise it."""
        return self.tree.delay_sum + self.hop_cost_ms * self.tree.depth_sum

    def _delay_below(self, node: Id, parent: Id) -> float:
        """One-way ms from the stage to ``node`` if ``parent`` fed it (0 without latencies)."""
        if self.latency is None:
            return 0.0
        return self.tree.delay.get(parent, 0.0) + self.latency(parent, node)

    def _slot_ok(self, node: Id, parent: Id) -> bool:
        """May ``node`` (with its subtree) move below ``parent`` right now?"""
        tree = self.tree
        return (
            parent in tree.members
            and parent in tree.depth
            and tree.free_slots(parent) > 0
            and not tree.in_subtree(parent, node)
            and self.may_feed(node, parent)
        )

    # -- backups -------------------------------------------------------------------------------

    def _backup_ok(self, node: Id, backup: Id) -> bool:
        tree = self.tree
        return (
            backup in tree.members
            and backup in tree.depth
            and tree.free_slots(backup) > 0
            and not tree.in_subtree(backup, tree.parent[node])
            and self.may_feed(node, backup)
        )

    def _find_backup(self, node: Id) -> Id | None:
        tree = self.tree
        parent = tree.parent[node]
        if tree.members[parent].stage and len(self._stage) == 1:
            return None  # everything hangs below the one stage node: nothing else can feed it
        for index in (tree.spare, tree.free):  # a slot not yet promised to others, if any
            backup = self._best_slot(node, index, exclude=parent)
            if backup is not None:
                return backup
        return None

    def _refresh_backups(self) -> None:
        tree = self.tree
        todo = sorted(tree.dirty | self._no_backup)
        tree.dirty.clear()
        for node in todo:
            if node not in tree.members:
                continue
            if node not in tree.depth or tree.members[node].stage:
                tree.set_backup(node, None)
                self._no_backup.discard(node)
                continue
            backup = tree.backup[node]
            if backup is None or not self._backup_ok(node, backup) or self._overbooked(node):
                backup = self._find_backup(node)
                tree.set_backup(node, backup)
            if backup is None:
                self._no_backup.add(node)
            else:
                self._no_backup.discard(node)

    def _overbooked(self, node: Id) -> bool:
        """Is ``node`` among the members its backup can no longer all take? Those that named it
        last, beyond its free slots, choose again now — one or two per filled slot rather than
        all at once when the last slot goes — unless no slot anywhere is still unpromised."""
        tree = self.tree
        backup = tree.backup[node]
        users, free = tree.users[backup], tree.free_slots(backup)
        if len(users) <= free or not tree.spare.buckets():
            return False
        return node in list(users)[free:]

    # -- bookkeeping ---------------------------------------------------------------------------

    def _link(self, node: Id, parent: Id) -> None:
        self.tree.link(node, parent)
        self._moves.append(Move(node, parent, None))

    def _move(self, node: Id, parent: Id) -> None:
        self._moves.append(Move(node, parent, self.tree.move(node, parent)))

    def _retry_loose(self) -> None:
        """Attach whoever is still loose, strongest first, until a pass attaches no one."""
        tree = self.tree
        progress = True
        while progress and tree.loose and self._stage:
            progress = False
            for node in self._by_strength(tree.loose):
                if node in tree.loose and self._place(node):
                    progress = True

    def _by_strength(self, nodes: Iterable[Id]) -> list[Id]:
        return sorted(nodes, key=lambda n: (-self.tree.members[n].slots, n))
