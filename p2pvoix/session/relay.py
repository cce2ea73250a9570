"""The sequencer's half of relay trees: the planner kept in step with the room, as signed plans.

Only the node that sequences the room's log runs a ``TreeCoordinator``. It feeds the planner the
room as it is — who is present (roster), with how many slots and which reachability (their
presence), who is on stage (the log) — and turns every ``PlanChange`` into assignments that it
signs and publishes (``session/plan.py``). A node asking for its own assignment is planned at
once, so a joiner does not wait for gossip. A child reporting its parent (or its backup) dead
makes the planner drop that node (it re-enters with its next presence if it was alive after all),
and its orphans move to their backups, where they are already reconnecting. One report alone
proves nothing (a child that froze was timed out by its parent and then "lost" it): the session
evicts on one report only if the node also fails to answer a direct probe; if it answers, the
link between the two is what fails (two NATs that ICE cannot punch through, a parent that turns
the child away), and the pair is kept apart for ``APART_MS`` so that the child is planned
elsewhere. Two children reporting the same node within ``REPORT_WINDOW_MS`` are independent
evidence and evict it at once: the probe's wait is what made a child whose parent and backup died
together wait for the plan to promote its dead backup (6 s in the churn bench). A stage member is
never evicted. A report counts if the node is the child's parent or backup in the plan, or was
until an eviction moved the child within the window: when two relays die together, evicting the
first re-plans their children, and their reports of the second, already on the way, must still
count (else the second waits for a probe: seen as a 1.5 s longer repair under load).

Pure apart from ``publish``, which the session gives it; ``now_ms`` is an argument.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.mesh.planner import Member, PlanChange, Planner
from p2pvoix.session.plan import Assignment, Plan, sign_plan

REBALANCE_MOVES = 8  # per flush: depth improves steadily without churning the tree
REPORT_QUORUM = 2  # children reporting the same node evict it without a probe
REPORT_WINDOW_MS = 3_000  # a dead relay's children all time it out within ~0.3 s of each other
# A child and a live parent it could not link to stay apart this long: long enough that the child
# does not retry a NAT pair that cannot work every few seconds, short enough that a parent that
# was only full, or a network that healed, is usable again within a couple of minutes.
APART_MS = 120_000


class Verdict(enum.Enum):
    """What the sequencer does with a child's report of a lost parent or backup."""

    IGNORED = "ignored"  # not the child's parent or backup in the plan
    PROBE = "probe"  # the first report (or one of a stage member): evict only if a probe fails
    EVICTED = "evicted"  # reported by enough children: out of the plan already


@dataclass(frozen=True)
class Participant:
    """What the coordinator needs to know of one present participant."""

    slots: int
    reach: str
    stage: bool
    seen_ms: int = 0  # time of the presence this comes from


def planning_reach(reach: str, turn: bool) -> str:
    """A node's reach as the planner weighs it: behind a NAT but with a TURN server of its own,
    any peer reaches its relayed address, so it may feed (and hang below) NAT'd members."""
    return "turn" if turn and reach != "public" else reach


class TreeCoordinator:
    """Plans the audience tree of one room while this node sequences it."""

    def __init__(self, key: SigningKey, room: bytes, epoch: int,
                 publish: Callable[[bytes], None], topology: str = "tree") -> None:
        self.key = key
        self.room = room
        self.epoch = epoch
        self.topology = topology
        self._publish = publish
        self.planner = Planner()
        self._version = 0
        self._pending: dict[PublicKey, Assignment] = {}
        self._current: dict[PublicKey, Assignment] = {}
        # Relays reported dead: kept out of the plan until they show a newer presence (a node
        # that vanished stays in the roster until its presence expires, three refreshes later).
        self._suspects: dict[PublicKey, int] = {}
        self._reports: dict[PublicKey, dict[PublicKey, int]] = {}  # node -> {child: when}
        # child -> (its parent and backup before an eviction moved it, when)
        self._former: dict[PublicKey, tuple[frozenset[PublicKey], int]] = {}
        self._apart: dict[tuple[PublicKey, PublicKey], int] = {}  # (child, parent) -> since

    def sync(self, participants: Mapping[PublicKey, Participant]) -> None:
        """Bring the planner to ``participants``: joins, departures, slot and stage changes."""
        for who, since in list(self._suspects.items()):
            if who not in participants or participants[who].seen_ms > since:
                del self._suspects[who]  # gone for good, or alive after all
        for who in [who for who in self._reports if who not in participants]:
            del self._reports[who]
        for who in [who for who in self._former if who not in participants]:
            del self._former[who]
        for pair in [p for p in self._apart if p[0] not in participants or p[1] not in participants]:
            del self._apart[pair]  # the planner ends a pair when either member leaves it
        participants = {who: p for who, p in participants.items() if who not in self._suspects}
        planned = {PublicKey(node): node for node in [m.id for m in self.planner.members()]}
        for who in list(planned):
            if who not in participants:
                self._apply(self.planner.leave(who.raw))
        for who, person in sorted(participants.items(), key=lambda item: item[0].raw):
            self._ensure(who, person)

    def report_lost(self, lost: PublicKey, child: PublicKey, now_ms: int) -> Verdict:
        """``child`` says ``lost``, its parent or backup in the plan, went silent."""
        planner = self.planner
        if child.raw not in planner or lost.raw not in planner or not self._fed(child, lost, now_ms):
            return Verdict.IGNORED
        if planner.member(lost.raw).stage:
            # Never evicted (the log says who is on stage), and no witness towards a quorum; the
            # probe still tells a dead stage member from a link that fails (``keep_apart``).
            return Verdict.PROBE
        reporters = {who: at for who, at in self._reports.get(lost, {}).items()
                     if now_ms - at <= REPORT_WINDOW_MS}
        reporters[child] = now_ms
        self._reports[lost] = reporters
        if len(reporters) < REPORT_QUORUM:
            return Verdict.PROBE
        self.evict(lost, now_ms)
        return Verdict.EVICTED

    def evict(self, parent: PublicKey, now_ms: int) -> None:
        """A relay reported dead (by enough children, or by one and a failed probe): out of the
        plan until it shows a newer presence; its children move (to their backups first)."""
        self._reports.pop(parent, None)
        if parent.raw in self.planner and not self.planner.member(parent.raw).stage:
            self._suspects[parent] = now_ms
            change = self.planner.leave(parent.raw)
            for assignment in change.assignments:
                who = PublicKey(assignment.member)
                held = self._pending.get(who) or self._current.get(who)  # what the child follows
                if held is not None:
                    feeders = frozenset(f for f in (held.parent, held.backup) if f is not None)
                    self._former[who] = (feeders, now_ms)
            self._apply(change)

    def keep_apart(self, child: PublicKey, parent: PublicKey, now_ms: int) -> None:
        """``child`` reported ``parent`` (its parent or backup) lost, but ``parent`` answered the
        probe: the link between the two fails, not the node. They stay apart for ``APART_MS`` and
        ``child`` is planned elsewhere (else it would be sent back to dial the same parent)."""
        if child.raw in self.planner and parent.raw in self.planner:
            self._apart[child, parent] = now_ms
            self._apply(self.planner.keep_apart(child.raw, parent.raw))

    def request(self, who: PublicKey, person: Participant, now_ms: int) -> Plan:
        """Answer a node asking for its assignment (planning it now if needed)."""
        self._ensure(who, person)
        self.flush(now_ms)
        return self._answer(self._current.get(who) or self._assignment(who), now_ms)

    def depart(self, who: PublicKey, now_ms: int) -> Plan:
        """Answer a node's goodbye: it leaves the plan (its children are re-attached and told in
        the next flush); its own entry in the reply has no parent."""
        if who.raw in self.planner:
            self._apply(self.planner.leave(who.raw))
        self.flush(now_ms)
        return self._answer(self._assignment(who), now_ms)

    def flush(self, now_ms: int, rebalance: bool = False) -> Plan | None:
        """Sign and publish what changed since the last flush (and rebalance a little)."""
        for pair, since in list(self._apart.items()):
            if now_ms - since >= APART_MS:
                del self._apart[pair]
                self._apply(self.planner.allow(pair[0].raw, pair[1].raw))
        if rebalance:
            self._apply(self.planner.rebalance(REBALANCE_MOVES))
        if not self._pending:
            return None
        self._version += 1
        entries = [
            Assignment(who, self._version, a.parent, a.backup, a.depth)
            for who, a in sorted(self._pending.items(), key=lambda item: item[0].raw)
        ]
        self._pending.clear()
        plan = None
        for start in range(0, len(entries), 256):  # bounded message size
            plan = sign_plan(self.key, self.room, topology=self.topology, epoch=self.epoch,
                             version=self._version, entries=entries[start:start + 256],
                             now_ms=now_ms)
            self._publish(plan.encoded)
        for entry in entries:
            self._current[entry.who] = entry
        return plan

    def statistics(self) -> dict[str, object]:
        return {"version": self._version, **self.planner.statistics()}

    # ---- internals ----

    def _answer(self, assignment: Assignment, now_ms: int) -> Plan:
        """The reply to one node's request: a plan of its own entry, at the current version."""
        return sign_plan(self.key, self.room, topology=self.topology, epoch=self.epoch,
                         version=self._version, entries=[assignment], now_ms=now_ms)

    def _fed(self, child: PublicKey, node: PublicKey, now_ms: int) -> bool:
        """Whether ``node`` feeds ``child`` (as parent or backup) in the plan, or did until an
        eviction moved ``child`` less than ``REPORT_WINDOW_MS`` ago."""
        planner = self.planner
        if node.raw in (planner.parent_of(child.raw), planner.backup_of(child.raw)):
            return True
        former = self._former.get(child)
        if former is None:
            return False
        if now_ms - former[1] > REPORT_WINDOW_MS:
            del self._former[child]
            return False
        return node in former[0]

    def _ensure(self, who: PublicKey, person: Participant) -> None:
        node = who.raw
        if node not in self.planner:
            self._apply(self.planner.join(Member(node, person.slots, person.reach, person.stage)))
            return
        member = self.planner.member(node)
        if member.stage != person.stage:
            self._apply(self.planner.set_stage(node, person.stage))
        if member.slots != person.slots:
            self._apply(self.planner.set_slots(node, person.slots))
        if member.reach != person.reach:
            self._apply(self.planner.set_reach(node, person.reach))

    def _apply(self, change: PlanChange) -> None:
        for assignment in change.assignments:
            who = PublicKey(assignment.member)
            self._pending[who] = self._assignment(who)
        for node in change.removed:
            who = PublicKey(node)
            self._pending.pop(who, None)
            self._current.pop(who, None)

    def _assignment(self, who: PublicKey) -> Assignment:
        node = who.raw
        if node not in self.planner:
            return Assignment(who, self._version, None, None, None)
        parent, backup = self.planner.parent_of(node), self.planner.backup_of(node)
        return Assignment(
            who, self._version,
            PublicKey(parent) if parent is not None else None,
            PublicKey(backup) if backup is not None else None,
            self.planner.depth_of(node),
        )
