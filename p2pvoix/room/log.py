"""One node's copy of a room's authority log: the tree of valid entries and its canonical head.

Entries arrive in any order, duplicated or not at all. Each is verified against the state after its
parent; valid ones join a tree rooted at the genesis (or at the latest checkpoint), entries whose
parent has not arrived wait in a bounded buffer, and everything else is a counted rejection that
changes nothing. The head is chosen by ``succession.fork_key`` over the whole tree, so two nodes
holding the same entries hold the same head and the same state, whatever the order they came in.

A checkpoint signed by the room key is final: the log re-roots on it, forgetting every entry at or
before its position and every branch that does not descend from it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from p2pvoix.crypto.keys import PublicKey
from p2pvoix.errors import RejectionCounter
from p2pvoix.room.events import Reorganized, RoomEvent
from p2pvoix.room.reasons import RoomReason, RoomRejected
from p2pvoix.room.snapshot import encode_snapshot, load_checkpoint
from p2pvoix.room.state import RoomState
from p2pvoix.room.transitions import apply_entry, check_entry, initial_state
from p2pvoix.room.tree import NONE, Node, choose, compare_branches
from p2pvoix.room.view import diff_events, view_of
from p2pvoix.room.wire import (
    CHECKPOINT,
    CHECKPOINT_MAX_SIZE,
    ENTRY,
    Checkpoint,
    Entry,
    Genesis,
    open_room_message,
)

ENTRY_MAX_FUTURE_MS = 30_000  # refuse entries stamped further ahead of our clock (retry later)
MAX_PENDING = 1024
MAX_PENDING_PER_SIGNER = 256
ANCHOR_EVERY = 64  # keep a state copy every this many positions: replays stay short
_RECENT_STATES = 8
_REMEMBERED_REJECTIONS = 4096
_NOT_REMEMBERED = frozenset({RoomReason.FUTURE, RoomReason.DUPLICATE, RoomReason.UNKNOWN_PARENT})


@dataclass(frozen=True)
class Accepted:
    """The message is valid and kept: forward it. ``events`` bring a view up to date."""

    digest: bytes
    events: tuple[RoomEvent, ...] = ()
    pending: bool = False  # verified, but held until its parent arrives (see ``wanted``)


class RoomLog:
    """A room's log as one node holds it. Not thread-safe; time is always an argument."""

    def __init__(self, genesis: Genesis, *, rejections: RejectionCounter | None = None) -> None:
        self.genesis = genesis
        self.room = genesis.room
        self.rejections = rejections if rejections is not None else RejectionCounter()
        state = initial_state(genesis)
        self._root = Node(genesis.digest, None, None, 0, 0, NONE)
        self._nodes: dict[bytes, Node] = {genesis.digest: self._root}
        self._head = self._root
        self._head_state = state
        self._anchors: dict[bytes, RoomState] = {genesis.digest: state.copy()}
        self._recent: OrderedDict[bytes, RoomState] = OrderedDict()
        self._checkpoint: Checkpoint | None = None
        self._pending: dict[bytes, dict[bytes, Entry]] = {}  # missing parent -> waiting entries
        self._pending_by_signer: dict[PublicKey, int] = {}
        self._pending_digests: set[bytes] = set()
        self._rejected: OrderedDict[bytes, RoomReason] = OrderedDict()
        self._forks = 0  # nodes with more than one child

    # -- what the node reads ---------------------------------------------------------------

    @property
    def state(self) -> RoomState:
        """The state at the head. Read it, never change it (queries take it as their argument)."""
        return self._head_state

    @property
    def head(self) -> bytes:
        return self._head.digest

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The checkpoint this log is rooted on, for serving late joiners."""
        return self._checkpoint

    def wanted(self) -> tuple[bytes, ...]:
        """Digests of missing parents that entries are waiting for: fetch these."""
        return tuple(self._pending)

    def entries(self, after: bytes | None = None) -> list[bytes]:
        """The canonical entries after ``after`` (or after the root, if unknown), oldest first."""
        out: list[bytes] = []
        node = self._head
        while node is not self._root and node.digest != after:
            assert node.entry is not None
            out.append(node.entry.encoded)
            node = node.parent  # type: ignore[assignment]
        return out[::-1]

    def statistics(self) -> dict[str, int]:
        return {
            "seq": self._head.seq,
            "root_seq": self._root.seq,
            "entries": len(self._nodes) - 1,
            "forks": self._forks,
            "pending": len(self._pending_digests),
            "rejected": self.rejections.total(),
        }

    # -- what the node feeds in ------------------------------------------------------------

    def receive(self, data: bytes, now_ms: int) -> Accepted | RoomRejected:
        """Take an entry or a checkpoint from a peer."""
        if len(data) > CHECKPOINT_MAX_SIZE:
            return self._refuse(None, RoomRejected(RoomReason.OVERSIZED, f"{len(data)} bytes"))
        digest = hashlib.sha256(data).digest()
        seen = self._seen(digest)
        if seen is not None:
            return self._refuse(None, seen)
        try:
            message = open_room_message(data, (ENTRY, CHECKPOINT), self.room)
        except RoomRejected as rejection:
            return self._refuse(digest, rejection)
        if isinstance(message, Checkpoint):
            return self._receive_checkpoint(message)
        return self._add(message, now_ms)

    def add(self, entry: Entry, now_ms: int) -> Accepted | RoomRejected:
        """Take an already verified entry (the local sequencer's own go straight here)."""
        seen = self._seen(entry.digest)
        if seen is not None:
            return self._refuse(None, seen)
        return self._add(entry, now_ms)

    def _add(self, entry: Entry, now_ms: int) -> Accepted | RoomRejected:
        if entry.time_ms > now_ms + ENTRY_MAX_FUTURE_MS:
            return self._refuse(None, RoomRejected(RoomReason.FUTURE, "entry from the future"))
        if entry.seq <= self._root.seq:
            return self._refuse(entry.digest, RoomRejected(RoomReason.BEFORE_CHECKPOINT))
        parent = self._nodes.get(entry.prev)
        if parent is None:
            if entry.prev in self._rejected:
                return self._refuse(entry.digest, RoomRejected(RoomReason.UNKNOWN_PARENT,
                                                               "its parent was refused"))
            return self._hold(entry)
        events: list[RoomEvent] = []
        try:
            self._attach(parent, entry, events)
        except RoomRejected as rejection:
            return self._refuse(entry.digest, rejection)
        return Accepted(entry.digest, tuple(events))

    # -- entries ---------------------------------------------------------------------------

    def _seen(self, digest: bytes) -> RoomRejected | None:
        if digest in self._nodes or digest in self._pending_digests:
            return RoomRejected(RoomReason.DUPLICATE)
        if self._checkpoint is not None and digest == self._checkpoint.digest:
            return RoomRejected(RoomReason.DUPLICATE)
        reason = self._rejected.get(digest)
        return RoomRejected(reason, "refused before") if reason is not None else None

    def _hold(self, entry: Entry) -> Accepted | RoomRejected:
        signer = entry.sequencer
        held = self._pending_by_signer.get(signer, 0)
        if len(self._pending_digests) >= MAX_PENDING or held >= MAX_PENDING_PER_SIGNER:
            return self._refuse(None, RoomRejected(RoomReason.UNKNOWN_PARENT, "too many waiting"))
        self._pending.setdefault(entry.prev, {})[entry.digest] = entry
        self._pending_by_signer[signer] = held + 1
        self._pending_digests.add(entry.digest)
        return Accepted(entry.digest, pending=True)

    def _take_waiting(self, digest: bytes) -> list[Entry]:
        waiting = self._pending.pop(digest, {})
        for entry in waiting.values():
            self._pending_digests.discard(entry.digest)
            left = self._pending_by_signer[entry.sequencer] - 1
            if left:
                self._pending_by_signer[entry.sequencer] = left
            else:
                del self._pending_by_signer[entry.sequencer]
        return sorted(waiting.values(), key=lambda e: e.digest)

    def _attach(self, parent: Node, entry: Entry, events: list[RoomEvent]) -> None:
        """Join ``entry`` (and whatever waited for it) to the tree; raise if ``entry`` is invalid."""
        work = [(parent, entry)]
        first = True
        while work:
            parent, entry = work.pop()
            try:
                node = self._link(parent, entry, events)
            except RoomRejected as rejection:
                if first:
                    raise
                self._refuse(entry.digest, rejection)
                continue
            first = False
            work.extend((node, waiting) for waiting in self._take_waiting(node.digest))

    def _link(self, parent: Node, entry: Entry, events: list[RoomEvent]) -> Node:
        if entry.seq != parent.seq + 1:
            raise RoomRejected(RoomReason.OUT_OF_SEQUENCE, f"{entry.seq} after {parent.seq}")
        if parent is self._head:
            # The usual case: apply in place, no copy. Only a revocation can change a decision
            # taken at an earlier fork (it may oust a sibling's signer), so only then re-choose.
            verdict = apply_entry(self._head_state, entry, events)
            node = self._new_node(parent, entry, verdict.epoch_after, verdict.revoked)
            self._head = node
            self._keep_anchor(node, self._head_state)
            if verdict.revoked and self._forks:
                self._choose_head(events)
            return node
        verdict = check_entry(self._state_at(parent), entry)
        node = self._new_node(parent, entry, verdict.epoch_after, verdict.revoked)
        self._choose_head(events)
        return node

    def _new_node(self, parent: Node, entry: Entry, epoch: int,
                  revoked: tuple[tuple[PublicKey, int], ...]) -> Node:
        node = Node(entry.digest, entry, parent, entry.seq, epoch, dict(revoked) or NONE)
        parent.children.append(node)
        if len(parent.children) == 2:
            self._forks += 1
        self._nodes[node.digest] = node
        return node

    # -- fork choice -----------------------------------------------------------------------

    def _choose_head(self, events: list[RoomEvent]) -> None:
        self._move_head(choose(self._root, self._nodes.values()), events)

    def _move_head(self, target: Node, events: list[RoomEvent]) -> None:
        old = self._head
        if target is old:
            return
        path = []
        node: Node | None = target
        while node is not None and node.seq > old.seq:
            path.append(node)
            node = node.parent
        if node is old and self._nodes.get(old.digest) is old:
            for step in reversed(path):  # plain extension: the entries' own events
                assert step.entry is not None
                apply_entry(self._head_state, step.entry, events)
                self._head = step
                self._keep_anchor(step, self._head_state)
            return
        old_state = self._head_state
        new_state = self._state_at(target).copy()
        fork_seq, dropped = compare_branches(old, target, self._root.seq)
        events.append(Reorganized(old.digest, target.digest, fork_seq, dropped))
        events.extend(diff_events(view_of(old_state), view_of(new_state)))
        self._head, self._head_state = target, new_state

    # -- states ------------------------------------------------------------------------------

    def _state_at(self, node: Node) -> RoomState:
        """The state after ``node``; shared with caches, so callers copy before changing it."""
        if node is self._head:
            return self._head_state
        path = []
        cursor = node
        while True:
            known = self._anchors.get(cursor.digest) or self._recent.get(cursor.digest)
            if known is not None:
                break
            path.append(cursor)
            assert cursor.parent is not None, "the root always has a state"
            cursor = cursor.parent
        if not path:
            return known
        state = known.copy()
        for step in reversed(path):
            assert step.entry is not None
            apply_entry(state, step.entry, [])
            if step.seq % ANCHOR_EVERY == 0:
                self._anchors[step.digest] = state.copy()
        self._recent[node.digest] = state
        while len(self._recent) > _RECENT_STATES:
            self._recent.popitem(last=False)
        return state

    def _keep_anchor(self, node: Node, state: RoomState) -> None:
        if node.seq % ANCHOR_EVERY == 0:
            self._anchors[node.digest] = state.copy()

    # -- checkpoints ---------------------------------------------------------------------------

    def _receive_checkpoint(self, checkpoint: Checkpoint) -> Accepted | RoomRejected:
        current = self._checkpoint
        if checkpoint.seq < self._root.seq or (
            current is not None and checkpoint.seq == current.seq
            and (checkpoint.head == current.head or checkpoint.digest > current.digest)
        ):
            # Equal positions only differ if the room key equivocated: the lower digest wins.
            return self._refuse(checkpoint.digest, RoomRejected(RoomReason.SUPERSEDED))
        try:
            state = load_checkpoint(checkpoint, self.genesis)
            anchor = self._nodes.get(checkpoint.head)
            if anchor is not None and (
                anchor.seq != checkpoint.seq
                or encode_snapshot(self._state_at(anchor)) != checkpoint.snapshot
            ):
                raise RoomRejected(RoomReason.BAD_CHECKPOINT, "contradicts the entries it names")
        except RoomRejected as rejection:
            return self._refuse(checkpoint.digest, rejection)
        events: list[RoomEvent] = []
        self._reroot(checkpoint, state, anchor, events)
        return Accepted(checkpoint.digest, tuple(events))

    def _reroot(self, checkpoint: Checkpoint, state: RoomState, anchor: Node | None,
                events: list[RoomEvent]) -> None:
        if anchor is None:
            anchor = Node(checkpoint.head, None, None, checkpoint.seq, state.epoch, NONE)
        anchor.parent, anchor.entry = None, None
        self._root, self._checkpoint = anchor, checkpoint
        nodes: dict[bytes, Node] = {}
        queue = [anchor]
        while queue:  # breadth first keeps every parent before its children
            node = queue.pop(0)
            nodes[node.digest] = node
            queue.extend(node.children)
        self._nodes = nodes
        self._forks = sum(1 for node in nodes.values() if len(node.children) > 1)
        self._anchors = {d: s for d, s in self._anchors.items() if d in nodes}
        self._anchors[anchor.digest] = state
        self._recent.clear()
        stale = [p for p, waiting in self._pending.items()
                 if min(e.seq for e in waiting.values()) <= anchor.seq]
        for parent in stale:
            self._take_waiting(parent)
        if self._nodes.get(self._head.digest) is not self._head:
            old, old_state = self._head, self._head_state
            self._head, self._head_state = anchor, state.copy()
            fork_seq, dropped = compare_branches(old, anchor, anchor.seq)
            events.append(Reorganized(old.digest, anchor.digest, fork_seq, dropped))
            events.extend(diff_events(view_of(old_state), view_of(self._head_state)))
        for waiting in self._take_waiting(anchor.digest):
            try:
                self._attach(anchor, waiting, events)
            except RoomRejected as rejection:
                self._refuse(waiting.digest, rejection)
        self._choose_head(events)

    # -- rejections ----------------------------------------------------------------------------

    def _refuse(self, digest: bytes | None, rejection: RoomRejected) -> RoomRejected:
        self.rejections.count(rejection.reason)
        if digest is not None and rejection.code not in _NOT_REMEMBERED:
            self._rejected[digest] = rejection.code
            while len(self._rejected) > _REMEMBERED_REJECTIONS:
                self._rejected.popitem(last=False)
            for waiting in self._take_waiting(digest):  # their parent will never join the tree
                self._refuse(waiting.digest, RoomRejected(RoomReason.UNKNOWN_PARENT,
                                                          "its parent was refused"))
        return rejection
