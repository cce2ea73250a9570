"""The tree of valid entries one node holds, and the fork-choice pass over it.

Every node of the tree is an entry that was valid on the state after its parent. ``choose`` finds
the canonical leaf by applying ``succession.fork_key`` wherever children diverge; it needs, for each
subtree, the revocations it contains (the accountability rule), which it gathers in the same
bottom-up pass. Nothing here looks at states: that is ``log``'s business.
"""

from __future__ import annotations

from collections.abc import Reversible

from p2pvoix.crypto.keys import PublicKey
from p2pvoix.room.succession import fork_key
from p2pvoix.room.wire import Entry

NONE: dict[PublicKey, int] = {}  # shared, never mutated


class Node:
    __slots__ = ("digest", "entry", "parent", "children", "seq", "epoch", "revoked", "best", "sub")

    def __init__(self, digest: bytes, entry: Entry | None, parent: Node | None, seq: int,
                 epoch: int, revoked: dict[PublicKey, int]) -> None:
        self.digest = digest
        self.entry = entry  # None for the root (genesis or checkpoint)
        self.parent = parent
        self.children: list[Node] = []
        self.seq = seq
        self.epoch = epoch  # epoch after this entry
        self.revoked = revoked  # identities this entry strips of staff rights -> revoker's rank
        self.best: Node = self  # fork choice scratch: canonical leaf of this subtree
        self.sub: dict[PublicKey, int] = revoked  # and every revocation in this subtree


def choose(root: Node, nodes: Reversible[Node]) -> Node:
    """The canonical leaf under ``root``. ``nodes`` lists the tree with parents before children."""
    for node in reversed(nodes):  # every subtree before its root
        children = node.children
        if not children:
            node.best, node.sub = node, node.revoked
        elif len(children) == 1:
            child = children[0]
            node.best = child.best
            node.sub = _merge(node.revoked, child.sub) if node.revoked else child.sub
        else:
            chosen = min(children, key=lambda c: _key(c, node.epoch, children))
            node.best = chosen.best
            node.sub = _merge(node.revoked, *(c.sub for c in children))
    return root.best


def _key(child: Node, parent_epoch: int, siblings: list[Node]) -> tuple[int, int, int, bytes]:
    assert child.entry is not None
    return fork_key(child.entry, parent_epoch, _ousted_by(child, siblings))


def _ousted_by(child: Node, siblings: list[Node]) -> int | None:
    assert child.entry is not None
    signer = child.entry.sequencer
    ranks = [s.sub[signer] for s in siblings if s is not child and signer in s.sub]
    return min(ranks) if ranks else None


def _merge(*maps: dict[PublicKey, int]) -> dict[PublicKey, int]:
    merged: dict[PublicKey, int] = {}
    for revoked in maps:
        for who, rank in revoked.items():
            if who not in merged or rank < merged[who]:
                merged[who] = rank
    return merged or NONE


def compare_branches(old: Node, new: Node, root_seq: int) -> tuple[int, tuple[bytes, ...]]:
    """The last position two heads share, and the actions only the old branch holds."""
    a: Node | None = old
    b: Node | None = new
    old_actions: list[bytes] = []
    new_actions: set[bytes] = set()
    while a is not None and b is not None and a is not b:
        if a.seq >= b.seq:
            if a.entry is not None and a.entry.action is not None:
                old_actions.append(a.entry.action.encoded)
            a = a.parent
        else:
            if b.entry is not None and b.entry.action is not None:
                new_actions.add(b.entry.action.encoded)
            b = b.parent
    # Without a meeting point a checkpoint cut the branches apart: they share at most up to both.
    fork_seq = a.seq if a is not None and a is b else min(old.seq, root_seq)
    dropped = tuple(act for act in reversed(old_actions) if act not in new_actions)
    return fork_seq, dropped
