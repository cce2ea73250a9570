"""Relay-tree assignments: who feeds whom, signed by the room's sequencer (docs/protocol/relay.md).

The sequencer runs the planner (``mesh/planner.py``) and publishes what changed as ``room.plan``
envelopes on the room topic; a node asks the sequencer directly for its own assignment when it
joins or loses its parent (``PROTOCOL``). Each entry carries the plan version that set it, so a
node keeps the newest entry about itself whatever order gossip delivers plans in. A plan is valid
only if signed by the identity the receiver's room state names as sequencer: a former moderator
or a relay cannot redirect listeners.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pvoix.crypto import cbor
from p2pvoix.crypto.envelope import KindSpec, open_envelope, seal
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.crypto.schema import Bytes, Int, ListOf, OneOf, Schema
from p2pvoix.errors import Rejected

PROTOCOL = "/p2pvoix/plan/1.0.0"
MAX_ENTRIES = 512
TOPOLOGIES = ("mesh", "tree")

_ENTRY = Schema(
    required={"who": Bytes(size=32), "v": Int()},
    optional={"parent": Bytes(size=32), "backup": Bytes(size=32), "depth": Int(max=64)},
)
PLAN = KindSpec(
    name="room.plan",
    body=Schema(required={
        "topology": OneOf(TOPOLOGIES),
        "epoch": Int(),
        "entries": ListOf(_ENTRY, max=MAX_ENTRIES),
    }),
    room=True,
    time=True,
    seq=True,  # the plan version: entries carry the version that last set them
    max_size=MAX_ENTRIES * 120 + 512,
)


class PlanReason:
    NOT_SEQUENCER = "plan-not-sequencer"
    MALFORMED = "plan-malformed"


@dataclass(frozen=True)
class Assignment:
    """Where ``who`` gets its audio: ``parent`` None means a root (a stage node) or unattached."""

    who: PublicKey
    version: int
    parent: PublicKey | None
    backup: PublicKey | None
    depth: int | None


@dataclass(frozen=True)
class Plan:
    signer: PublicKey
    topology: str
    epoch: int
    version: int
    entries: tuple[Assignment, ...]
    encoded: bytes


def sign_plan(key: SigningKey, room: bytes, *, topology: str, epoch: int, version: int,
              entries: list[Assignment], now_ms: int) -> Plan:
    body = {
        "topology": topology,
        "epoch": epoch,
        "entries": [_entry_wire(entry) for entry in entries[:MAX_ENTRIES]],
    }
    return _plan(seal(PLAN, key, body, room=room, time=now_ms, seq=version))


def verify_plan(data: bytes, room: bytes, sequencer: PublicKey) -> Plan:
    """Check a plan against the room state's current sequencer; raises Rejected/EnvelopeError."""
    plan = _plan(open_envelope(data, PLAN, room=room))
    if plan.signer != sequencer:
        raise Rejected(PlanReason.NOT_SEQUENCER, f"signed by {plan.signer.peer_id}")
    return plan


def encode_request(presence: bytes, lost_parent: PublicKey | None = None) -> bytes:
    """Ask for my assignment, showing my current presence (slots, reach); name a dead parent."""
    value: dict[str, Any] = {"v": 1, "presence": presence}
    if lost_parent is not None:
        value["lost"] = lost_parent.raw
    return cbor.encode(value)


def decode_request(data: bytes) -> tuple[bytes, PublicKey | None]:
    try:
        value = cbor.decode(data, max_size=4096)
    except EnvelopeError as exc:
        raise Rejected(PlanReason.MALFORMED, exc.reason) from None
    if not isinstance(value, dict) or not _version_1(value.get("v")) or set(value) - {"v", "presence", "lost"}:
        raise Rejected(PlanReason.MALFORMED, "fields")
    presence, lost = value.get("presence"), value.get("lost")
    if not isinstance(presence, bytes) or (lost is not None and
                                           (not isinstance(lost, bytes) or len(lost) != 32)):
        raise Rejected(PlanReason.MALFORMED, "presence or lost")
    return presence, PublicKey(lost) if lost is not None else None


class MyPlan:
    """One node's view of the plan: the newest assignment about itself, and the topology."""

    def __init__(self, me: PublicKey) -> None:
        self.me = me
        self.topology = "mesh"
        self.assignment: Assignment | None = None
        self._epoch = -1
        self._version = -1

    def take(self, plan: Plan) -> Assignment | None:
        """Apply a verified plan; returns my assignment if it changed."""
        if (plan.epoch, plan.version) >= (self._epoch, self._version):
            self.topology = plan.topology
        for entry in plan.entries:
            if entry.who != self.me:
                continue
            key = (plan.epoch, entry.version)
            if key > (self._epoch, self._version):
                self._epoch, self._version = key
                changed = self.assignment is None or (
                    (entry.parent, entry.backup) != (self.assignment.parent,
                                                     self.assignment.backup))
                self.assignment = entry
                return entry if changed else None
        return None


class Placements:
    """The newest parent (and backup) the plan names for every node, and since when.

    A relay reads it to tell a child the plan has moved elsewhere from one it still feeds by the
    plan. A moved child leaves on its own once its new parent is up (make-before-break), but until
    then it holds a slot: when moves form a chain or a cycle (A goes to B's parent while B goes to
    A's, each parent full), every new parent would refuse and nobody would move. A moved child's
    slot therefore counts as free (``session/media.py``). A child the plan names us the *backup*
    of is not moved: it is being fed by us after its parent died, until the next plan says so.
    """

    MAX_NODES = 20_000  # a bound on memory: rooms are far smaller, and departed nodes linger

    def __init__(self) -> None:
        # who -> ((epoch, version), parent, backup, since)
        self._newest: dict[PublicKey, tuple[tuple[int, int], PublicKey | None,
                                            PublicKey | None, float]] = {}

    def take(self, plan: Plan, now_s: float) -> None:
        for entry in plan.entries:
            key = (plan.epoch, entry.version)
            known = self._newest.get(entry.who)
            if known is not None and key <= known[0]:
                continue
            since = known[3] if known is not None and known[1] == entry.parent else now_s
            self._newest[entry.who] = (key, entry.parent, entry.backup, since)
        if len(self._newest) > self.MAX_NODES:
            oldest = sorted(self._newest, key=lambda who: self._newest[who][3])
            for who in oldest[: len(self._newest) - self.MAX_NODES]:
                del self._newest[who]

    def moved_away(self, child: PublicKey, parent: PublicKey, now_s: float) -> float | None:
        """Seconds since the plan moved ``child`` from ``parent`` to another parent; None if the
        plan still puts it under ``parent`` (or names ``parent`` its backup), names no parent,
        or is not known here."""
        known = self._newest.get(child)
        if known is None or known[1] is None or parent in (known[1], known[2]):
            return None
        return now_s - known[3]


def _entry_wire(entry: Assignment) -> dict[str, Any]:
    value: dict[str, Any] = {"who": entry.who.raw, "v": entry.version}
    if entry.parent is not None:
        value["parent"] = entry.parent.raw
    if entry.backup is not None:
        value["backup"] = entry.backup.raw
    if entry.depth is not None:
        value["depth"] = entry.depth
    return value


def _plan(envelope) -> Plan:  # type: ignore[no-untyped-def]
    body = envelope.body
    entries = tuple(
        Assignment(
            who=PublicKey(item["who"]), version=item["v"],
            parent=PublicKey(item["parent"]) if "parent" in item else None,
            backup=PublicKey(item["backup"]) if "backup" in item else None,
            depth=item.get("depth"),
        )
        for item in body["entries"]
    )
    return Plan(envelope.signer, body["topology"], body["epoch"], envelope.seq or 0, entries,
                envelope.encoded)


def _version_1(v: Any) -> bool:
    """Version 1 exactly: CBOR true is not 1 (Python's True == 1 would let it pass)."""
    return type(v) is int and v == 1
