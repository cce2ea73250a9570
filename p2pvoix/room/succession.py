"""Who sequences the log, who takes over when they vanish, and which branch wins a fork.

Succession order: staff (the owner, then moderators by the entry that appointed them) rotated to
start just after the current sequencer, which it leaves out. A takeover for epoch ``e + k`` at the
position after a state in epoch ``e`` is valid only if signed by the k-th identity of that order and
stamped at least ``k * TAKEOVER_GRACE_MS`` after the last entry, so nearer successors go first and a
successor cannot seize a log that is moving. Deciding that the sequencer is gone is the node's job.

Fork choice (``fork_key``), applied at every position where valid entries diverge, walking from the
root; it depends only on the set of valid entries, so every delivery order gives the same head:

1. Accountability: a branch whose first entry is signed by someone that a sibling branch strips of
   staff rights (demoted, removed or banned by a senior) loses to it; when branches strip each
   other's signers, the branch whose revocation was made by the more senior identity wins. This is
   what keeps a removed moderator from forking the room from a point before their removal, and what
   lets a senior depose a sequencer who refuses to include its own demotion.
2. The current sequencer's ordinary entry beats any takeover (a sequencer that was merely slow keeps
   its authority; the takeover's entries are dropped and re-submitted).
3. Among takeovers, the nearest successor (smallest k).
4. The lowest digest (one signer equivocating).
"""

from __future__ import annotations

from p2pvoix.crypto.keys import PublicKey
from p2pvoix.room.reasons import RoomReason, RoomRejected
from p2pvoix.room.state import RoomState
from p2pvoix.room.wire import Entry

TAKEOVER_GRACE_MS = 10_000


def seniority(state: RoomState) -> tuple[PublicKey, ...]:
    """Staff, most senior first: the owner, then moderators by appointment."""
    moderators = sorted(state.moderators.items(), key=lambda item: (item[1], item[0]))
    return (state.owner, *(key for key, _ in moderators))


def succession_order(state: RoomState) -> tuple[PublicKey, ...]:
    """Who may take over, nearest first: the k-th may sign the takeover to epoch ``epoch + k``."""
    staff = seniority(state)
    at = staff.index(state.sequencer)  # the sequencer is always staff (see transitions)
    return staff[at + 1 :] + staff[:at]


def takeover_earliest_ms(state: RoomState, identity: PublicKey) -> int | None:
    """The earliest entry time at which ``identity`` may take over, or None if it may not."""
    order = succession_order(state)
    if identity not in order:
        return None
    return state.time_ms + (order.index(identity) + 1) * TAKEOVER_GRACE_MS


def check_takeover(state: RoomState, entry: Entry) -> int:
    """The successor rank ``k`` of a valid takeover entry; raises ``RoomRejected`` otherwise."""
    order = succession_order(state)
    k = entry.epoch - state.epoch
    if not 1 <= k <= len(order) or order[k - 1] != entry.sequencer:
        raise RoomRejected(RoomReason.BAD_TAKEOVER, f"signer is not successor {k} of epoch "
                           f"{state.epoch}")
    if entry.time_ms < state.time_ms + k * TAKEOVER_GRACE_MS:
        raise RoomRejected(RoomReason.BAD_TAKEOVER, "successor took over too early")
    return k


def fork_key(entry: Entry, parent_epoch: int, ousted_by: int | None) -> tuple[int, int, int, bytes]:
    """Sort key of one valid child among its siblings; the smallest is the canonical one.

    ``ousted_by`` is the seniority rank (``RoomState.rank``) of the most senior identity that, in a
    sibling branch, strips this entry's signer of staff rights; None if no sibling does.
    """
    ousted = 0 if ousted_by is None else 1
    weakness = 0 if ousted_by is None else -ousted_by  # ousted by a junior: better than by a senior
    successor = entry.epoch - parent_epoch if entry.is_takeover else 0  # 0 sorts before k >= 1
    return (ousted, weakness, successor, entry.digest)
