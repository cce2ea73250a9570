"""The relay tree's state and the indices the planner searches — no policy lives here.

Pure. The planner (``planner.py``) decides; this module only keeps the parent/children links,
each node's depth, the backups and their reverse index consistent, and files nodes into sorted
buckets so that "the shallowest free slot" or "the shallowest childless member" is found without
scanning the whole room. It also journals every member's assignment as it was before the current
operation, so the planner can publish deltas only.

Terms: a *stage* node is a root (depth 0). An audience member is *attached* when its chain of
parents reaches a stage node (it then has a depth), *loose* when it has no parent, and *detached*
when it hangs below a loose member. Identities are opaque, hashable and totally ordered (str,
bytes or int): every tie is broken by id order, so two planners fed the same calls agree.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

Id = Hashable
# "turn": behind a NAT but with a TURN server of its own, whose relayed address any peer reaches.
REACH = ("public", "nat", "symmetric", "unknown", "turn")
NAT_LIKE = ("nat", "symmetric")  # cannot be dialed from outside: needs a reachable parent


@dataclass(frozen=True)
class Member:
    """A participant as the planner sees it: ``slots`` is how many children it offers to feed."""

    id: Id
    slots: int = 0
    reach: str = "unknown"  # one of REACH, as the node measured it (p2pvoix/reach/)
    stage: bool = False
    zone: Hashable = None  # members of one zone (a region, say) are near one another

    @property
    def zone_key(self) -> tuple:
        """Sortable whatever the zones are: None first, then zones in their own order."""
        return (0, "") if self.zone is None else (1, self.zone)

    def __post_init__(self) -> None:
        if not isinstance(self.slots, int) or self.slots < 0:
            raise ValueError(f"slots must be a whole number >= 0, not {self.slots!r}")
        if self.reach not in REACH:
            raise ValueError(f"reach must be one of {REACH}, not {self.reach!r}")


@dataclass(frozen=True)
class Move:
    """Connect ``member`` to ``parent`` (None: it leaves its parent), then drop ``previous``."""

    member: Id
    parent: Id | None
    previous: Id | None
    break_first: bool = False  # drop ``previous`` first: the new parent needs that very slot


class Buckets:
    """Nodes filed under a bucket, each bucket a sorted list of entries ``(*key, node)``."""

    def __init__(self) -> None:
        self._lists: dict[Hashable, list[tuple]] = {}
        self._where: dict[Id, tuple[Hashable, tuple]] = {}

    def put(self, node: Id, bucket: Hashable, key: tuple) -> None:
        entry = (*key, node)
        old = self._where.get(node)
        if old == (bucket, entry):
            return
        if old is not None:
            self._drop(old)
        insort(self._lists.setdefault(bucket, []), entry)
        self._where[node] = (bucket, entry)

    def discard(self, node: Id) -> None:
        old = self._where.pop(node, None)
        if old is not None:
            self._drop(old)

    def entries(self, bucket: Hashable) -> list[tuple]:
        """The bucket's entries in order; callers must not change the tree while iterating."""
        return self._lists.get(bucket, [])

    def buckets(self) -> list[Hashable]:
        return sorted(b for b, entries in self._lists.items() if entries)

    def _drop(self, where: tuple[Hashable, tuple]) -> None:
        bucket, entry = where
        entries = self._lists[bucket]
        del entries[bisect_left(entries, entry)]


class Tree:
    """Parent links, depths, backups and search indices of one room's relay tree."""

    def __init__(
        self, reachable_reach: frozenset[str], latency: Callable[[Id, Id], float] | None = None
    ) -> None:
        self.members: dict[Id, Member] = {}
        self.parent: dict[Id, Id | None] = {}
        self.children: dict[Id, dict[Id, None]] = {}  # insertion-ordered sets
        self.depth: dict[Id, int] = {}  # attached members only; stage nodes are 0
        self.delay: dict[Id, float] = {}  # one-way ms from the stage node down to here, if known
        self.backup: dict[Id, Id | None] = {}
        self.users: dict[Id, dict[Id, None]] = {}  # backup -> members naming it, in that order
        self.loose: set[Id] = set()  # audience members without a parent
        self.free = Buckets()  # attached nodes with a free slot: (depth, reachable, zone) -> id
        self.spare = Buckets()  # ... whose free slots outnumber the members naming them backup
        self.leaves = Buckets()  # childless attached audience: depth -> (slots, id)
        self.ranks = Buckets()  # attached audience: depth -> (-slots, id)
        self.dirty: set[Id] = set()  # members whose backup must be checked again
        self.before: dict[Id, tuple | None] = {}  # assignments as they were before this operation
        self.phi = 0  # Σ depth × (slots + 1) over attached members: rebalancing only lowers it
        self.depth_sum = 0  # Σ depth over attached members
        self.delay_sum = 0.0  # Σ delay over attached members
        self._reachable_reach = reachable_reach
        self._latency = latency

    # -- queries -------------------------------------------------------------------------------

    def reachable(self, node: Id) -> bool:
        """May a member behind NAT hang below ``node``? Reachable members, and stage nodes not
        known to be behind a NAT themselves (two NATs facing each other need TURN: a member with
        a TURN server counts as reachable, ``"turn"``)."""
        member = self.members[node]
        return member.reach in self._reachable_reach or (member.stage
                                                         and member.reach not in NAT_LIKE)

    def feeds(self, node: Id) -> int:
        """Whom ``node`` may feed, as a class a child's need is compared with: 2 anyone (it is
        reachable), 1 also members behind a ``nat`` (one public mapping per socket: ICE punches
        a hole between two such NATs), 0 only members not known to be behind a NAT."""
        if self.reachable(node):
            return 2
        return 1 if self.members[node].reach == "nat" else 0

    def free_slots(self, node: Id) -> int:
        return self.members[node].slots - len(self.children[node])

    def assignment(self, node: Id) -> tuple:
        return (self.parent.get(node), self.backup.get(node), self.members[node].stage)

    def in_subtree(self, node: Id, top: Id) -> bool:
        """Is ``node`` ``top`` or below it?"""
        if node == top:
            return True
        below, above = self.depth.get(node), self.depth.get(top)
        if below is not None:
            if above is None or below <= above:
                return False
            for _ in range(below - above):
                node = self.parent[node]
            return node == top
        while (node := self.parent.get(node)) is not None:
            if node == top:
                return True
        return False

    def subtree(self, top: Id) -> Iterator[Id]:
        stack = [top]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(self.children[node])

    def path(self, node: Id) -> list[Id]:
        """``node`` and its ancestors, nearest first."""
        chain = [node]
        while (node := self.parent.get(node)) is not None:
            chain.append(node)
        return chain

    # -- changes -------------------------------------------------------------------------------

    def note(self, node: Id) -> None:
        """Remember ``node``'s assignment before this operation changes it (once per operation)."""
        if node not in self.before:
            self.before[node] = self.assignment(node) if node in self.members else None

    def add(self, member: Member) -> None:
        self.note(member.id)
        self.members[member.id] = member
        self.parent[member.id] = None
        self.children[member.id] = {}
        self.backup[member.id] = None
        self.users[member.id] = {}
        if member.stage:
            self.set_depths(member.id, 0)
        else:
            self.loose.add(member.id)
            self.dirty.add(member.id)

    def remove(self, node: Id) -> None:
        """Forget ``node``; it must have no parent and no children left."""
        assert self.parent[node] is None and not self.children[node]
        self.note(node)
        self.set_backup(node, None)
        self.dirty.update(self.users[node])
        for user in self.users.pop(node):
            self.note(user)
            self.backup[user] = None
        for index in (self.free, self.spare, self.leaves, self.ranks):
            index.discard(node)
        self.loose.discard(node)
        self.dirty.discard(node)
        for table in (self.members, self.parent, self.children, self.depth, self.delay, self.backup):
            table.pop(node, None)

    def link(self, child: Id, parent: Id) -> None:
        """Hang ``child`` (loose, keeping its subtree) below ``parent``."""
        assert self.parent[child] is None and not self.members[child].stage
        self.note(child)
        self.parent[child] = parent
        self.children[parent][child] = None
        self.loose.discard(child)
        self.reindex(parent)
        above = self.depth.get(parent)
        self.set_depths(child, None if above is None else above + 1)

    def unlink(self, child: Id) -> Id:
        """Take ``child`` (and its subtree) from its parent; it becomes loose. Returns the parent."""
        parent = self.parent[child]
        assert parent is not None
        self.note(child)
        del self.children[parent][child]
        self.parent[child] = None
        self.reindex(parent)
        if self.members[child].stage:
            self.set_depths(child, 0)
        else:
            self.loose.add(child)
            self.set_depths(child, None)
        return parent

    def move(self, child: Id, parent: Id) -> Id:
        """Re-hang ``child`` with its subtree below ``parent``; returns the old parent."""
        old = self.parent[child]
        assert old is not None
        self.note(child)
        del self.children[old][child]
        self.parent[child] = parent
        self.children[parent][child] = None
        self.reindex(old)
        self.reindex(parent)
        above = self.depth.get(parent)
        self.set_depths(child, None if above is None else above + 1)
        return old

    def replace(self, member: Member) -> None:
        """Change a member's slots or stage flag (its links are the caller's business)."""
        self.note(member.id)
        old = self.members[member.id]
        self.phi += self.depth.get(member.id, 0) * (member.slots - old.slots)
        self.members[member.id] = member
        self.reindex(member.id)

    def set_backup(self, node: Id, backup: Id | None) -> None:
        old = self.backup.get(node)
        if old == backup:
            return
        self.note(node)
        if old is not None and old in self.users:
            self.users[old].pop(node, None)
            self._index_spare(old)
        self.backup[node] = backup
        if backup is not None:
            self.users[backup][node] = None
            self._index_spare(backup)

    def set_depths(self, top: Id, depth: int | None) -> None:
        """Give ``top`` the depth ``depth`` (None: not attached) and its subtree the ones below."""
        latency, above = self._latency, self.parent.get(top)
        start = 0.0
        if latency is not None and depth and above is not None:
            start = self.delay.get(above, 0.0) + latency(above, top)
        stack = [(top, depth, start)]
        while stack:
            node, d, delay = stack.pop()
            self.phi += ((d or 0) - self.depth.get(node, 0)) * (self.members[node].slots + 1)
            self.depth_sum += (d or 0) - self.depth.get(node, 0)
            self.delay_sum += (delay if d is not None else 0.0) - self.delay.get(node, 0.0)
            if d is None:
                self.depth.pop(node, None)
                self.delay.pop(node, None)
            else:
                self.depth[node] = d
                self.delay[node] = delay
            self.reindex(node)
            self.dirty.add(node)
            below = None if d is None else d + 1
            for child in self.children[node]:
                stack.append((child, below, delay + latency(node, child) if latency else 0.0))

    def reindex(self, node: Id) -> None:
        """File ``node`` in the search indices after its slots, children or depth changed."""
        member, depth = self.members[node], self.depth.get(node)
        # Its free slots or its position changed, so the members naming it backup must look again.
        self.dirty.update(self.users[node])
        if depth is None or self.free_slots(node) <= 0:
            self.free.discard(node)
        else:
            self.free.put(node, (depth, self.feeds(node), member.zone_key), ())
        self._index_spare(node)
        if depth is None or member.stage:
            self.leaves.discard(node)
            self.ranks.discard(node)
            return
        self.ranks.put(node, depth, (-member.slots,))
        if self.children[node]:
            self.leaves.discard(node)
        else:
            self.leaves.put(node, depth, (member.slots,))

    def _index_spare(self, node: Id) -> None:
        depth = self.depth.get(node)
        if depth is not None and self.free_slots(node) > len(self.users[node]):
            self.spare.put(node, (depth, self.feeds(node), self.members[node].zone_key), ())
        else:
            self.spare.discard(node)
