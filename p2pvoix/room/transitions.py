"""Applying one log entry to a room state: the only code that changes a ``RoomState``.

``check_entry`` is pure and raises ``RoomRejected``; ``apply_entry`` runs it first and mutates only
after every check passed, so a refused entry leaves the state exactly as it was. Expiry is judged
against the entry's time during the checks and pruned from the state only on success.

Time rules (all against the entry's own time ``T``, which never goes backwards along a chain):
an action must be signed in ``[T - ACTION_MAX_AGE_MS, T + ACTION_MAX_LEAD_MS]`` and after its
actor's previous included action. Per-actor replay records older than that window are pruned: any
replay of them would already be stale, so the state stays bounded by the actors of the last minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pvoix.crypto.keys import PublicKey
from p2pvoix.room import permissions
from p2pvoix.room.events import (
    AuthorityChanged,
    HandLowered,
    HandRaised,
    InviteAccepted,
    InviteCancelled,
    Invited,
    InviteDeclined,
    Muted,
    Removed,
    RoleChanged,
    RoomEnded,
    RoomEvent,
    SettingsChanged,
    TitleChanged,
    Unmuted,
)
from p2pvoix.room.ops import Op
from p2pvoix.room.reasons import RoomReason, RoomRejected
from p2pvoix.room.state import STAFF, STAGE, Hand, Invitation, Replay, Role, RoomState
from p2pvoix.room.succession import check_takeover
from p2pvoix.room.wire import Action, Entry, Genesis

ACTION_MAX_AGE_MS = 60_000
ACTION_MAX_LEAD_MS = 30_000

Events = list[RoomEvent]


@dataclass(frozen=True)
class Verdict:
    """What a valid entry will do that the log's fork choice needs before applying it."""

    epoch_after: int
    revoked: tuple[tuple[PublicKey, int], ...] = ()  # (stripped of staff rights, revoker's rank)


def initial_state(genesis: Genesis) -> RoomState:
    """The state at position 0: the owner holds the authority in epoch 0."""
    return RoomState(
        room=genesis.room,
        genesis=genesis.digest,
        owner=genesis.owner,
        created_ms=genesis.created_ms,
        title=genesis.title,
        tags=genesis.tags,
        language=genesis.language,
        settings=genesis.settings,
        seq=0,
        head=genesis.digest,
        time_ms=genesis.created_ms,
        epoch=0,
        sequencer=genesis.owner,
    )


def check_entry(state: RoomState, entry: Entry) -> Verdict:
    """Raise ``RoomRejected`` unless ``entry`` is a valid next entry for ``state``."""
    if state.ended:
        raise RoomRejected(RoomReason.ROOM_ENDED)
    if entry.seq != state.seq + 1:
        raise RoomRejected(RoomReason.OUT_OF_SEQUENCE, f"position {entry.seq} after {state.seq}")
    if entry.prev != state.head:
        raise RoomRejected(RoomReason.UNKNOWN_PARENT, "does not follow this state's head")
    if entry.time_ms < state.time_ms:
        raise RoomRejected(RoomReason.OUT_OF_SEQUENCE, "entry time goes backwards")
    if entry.action is None:
        check_takeover(state, entry)
        return Verdict(entry.epoch)
    if entry.sequencer != state.sequencer or entry.epoch != state.epoch:
        raise RoomRejected(RoomReason.NOT_SEQUENCER, f"epoch {state.epoch} has another sequencer")
    return check_action(state, entry.action, entry.time_ms)


def check_action(state: RoomState, action: Action, at_ms: int) -> Verdict:
    """Raise ``RoomRejected`` unless ``action`` may be included at log time ``at_ms``."""
    if state.ended:
        raise RoomRejected(RoomReason.ROOM_ENDED)
    if action.time_ms < at_ms - ACTION_MAX_AGE_MS:
        raise RoomRejected(RoomReason.STALE, f"signed {at_ms - action.time_ms} ms before inclusion")
    if action.time_ms > at_ms + ACTION_MAX_LEAD_MS:
        raise RoomRejected(RoomReason.FUTURE, f"signed {action.time_ms - at_ms} ms ahead")
    record = state.replay.get(action.actor)
    if record is not None and action.time_ms <= record.last_ms:
        raise RoomRejected(RoomReason.REPLAYED, "not newer than the actor's last action")
    request = permissions.Request(action.actor, action.op, action.target, at_ms, action)
    permissions.check(state, request)
    epoch = state.epoch
    revoked: tuple[tuple[PublicKey, int], ...] = ()
    if permissions.revokes_staff(state, request):
        assert action.target is not None
        rank = state.rank(action.actor)
        assert rank is not None  # only staff may act on staff
        revoked = ((action.target, rank),)
        if action.target == state.sequencer:
            epoch += 1
    elif action.op is Op.HANDOVER:
        epoch += 1
    return Verdict(epoch, revoked)


def apply_entry(state: RoomState, entry: Entry, events: Events) -> Verdict:
    """Check ``entry`` then apply it to ``state`` in place, appending what changed to ``events``."""
    verdict = check_entry(state, entry)
    at = entry.time_ms
    _prune(state, at, events)
    action = entry.action
    if action is None:
        state.epoch, state.sequencer = entry.epoch, entry.sequencer
        events.append(AuthorityChanged(state.epoch, state.sequencer, "takeover"))
    else:
        state.replay.pop(action.actor, None)
        state.replay[action.actor] = Replay(action.time_ms, at)
        _EFFECTS[action.op](state, action, entry.seq, at, events)
    state.seq, state.head, state.time_ms = entry.seq, entry.digest, at
    assert state.epoch == verdict.epoch_after
    return verdict


def _prune(s: RoomState, at: int, events: Events) -> None:
    # Each dict is kept in order of the log time it was written at, so expiry pops from the front.
    while s.hands:
        who = next(iter(s.hands))
        if s.hands[who].at_ms + s.settings.hand_ttl_ms > at:
            break
        del s.hands[who]
        events.append(HandLowered(who, None, "expired"))
    while s.invited:
        who = next(iter(s.invited))
        if s.invited[who].at_ms + s.settings.invite_ttl_ms > at:
            break
        del s.invited[who]
        events.append(InviteCancelled(who, None, "expired"))
    while s.raises:
        who = next(iter(s.raises))
        if s.raises[who] + s.settings.hand_interval_ms > at:
            break
        del s.raises[who]
    while s.replay:
        who = next(iter(s.replay))
        if s.replay[who].included_ms + ACTION_MAX_LEAD_MS + ACTION_MAX_AGE_MS >= at:
            break
        del s.replay[who]


def _set_role(s: RoomState, who: PublicKey, new: Role, by: PublicKey, n: int, ev: Events) -> None:
    old = s.role_of(who)
    if old is new:
        return
    s.moderators.pop(who, None)
    s.speakers.pop(who, None)
    s.banned.pop(who, None)
    if new is Role.MODERATOR:
        s.moderators[who] = n
    elif new is Role.SPEAKER:
        s.speakers[who] = n
    elif new is Role.BANNED:
        s.banned[who] = n
    if new not in STAGE and who in s.muted:
        del s.muted[who]
        ev.append(Unmuted(who, by))
    if new is not Role.AUDIENCE:
        _drop_hand_and_invitation(s, who, by, "role", ev)
    ev.append(RoleChanged(who, old, new, by))
    if old in STAFF and new not in STAFF and who == s.sequencer:
        # The revoker is staff and evidently online; leaving_stage by the sequencer is refused.
        s.sequencer = by
        s.epoch += 1
        ev.append(AuthorityChanged(s.epoch, by, "revoked"))


def _drop_hand_and_invitation(s: RoomState, who: PublicKey, by: PublicKey, why: str,
                              ev: Events) -> None:
    if s.hands.pop(who, None) is not None:
        ev.append(HandLowered(who, by, why))
    if s.invited.pop(who, None) is not None:
        ev.append(InviteCancelled(who, by, why))


def _become(a: Action, n: int, s: RoomState, ev: Events) -> None:
    rule = permissions.PERMISSIONS[a.op]
    assert rule.becomes is not None
    _set_role(s, a.target or a.actor, rule.becomes, a.actor, n, ev)


def _raise_hand(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    s.hands[a.actor] = Hand(a.actor, n, at)
    s.raises.pop(a.actor, None)
    s.raises[a.actor] = at
    ev.append(HandRaised(a.actor, n, at))


def _lower_hand(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    who = a.target or a.actor
    del s.hands[who]
    ev.append(HandLowered(who, a.actor, "cleared" if a.target else "lowered"))


def _invite(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    assert a.target is not None
    s.invited.pop(a.target, None)  # an expired one, already pruned unless the ttl just changed
    s.invited[a.target] = Invitation(a.target, a.actor, at)
    ev.append(Invited(a.target, a.actor, at))
    if s.hands.pop(a.target, None) is not None:
        ev.append(HandLowered(a.target, a.actor, "invited"))


def _cancel_invite(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    assert a.target is not None
    del s.invited[a.target]
    ev.append(InviteCancelled(a.target, a.actor, "cancelled"))


def _accept_invite(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    del s.invited[a.actor]
    ev.append(InviteAccepted(a.actor))
    _become(a, n, s, ev)
    s.muted[a.actor] = False  # as in Clubhouse, a new speaker arrives muted and unmutes when ready
    ev.append(Muted(a.actor, False, a.actor))


def _decline_invite(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    del s.invited[a.actor]
    ev.append(InviteDeclined(a.actor))


def _role_only(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    _become(a, n, s, ev)


def _mute(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    who = a.target or a.actor
    locked = bool(a.lock) if a.op is Op.MUTE else False
    s.muted[who] = locked
    ev.append(Muted(who, locked, a.actor))


def _self_unmute(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    del s.muted[a.actor]
    ev.append(Unmuted(a.actor, a.actor))


def _remove(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    assert a.target is not None
    _drop_hand_and_invitation(s, a.target, a.actor, "removed", ev)
    ev.append(Removed(a.target, a.actor, banned=a.op is Op.BAN))
    _become(a, n, s, ev)


def _set_info(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    assert a.title is not None and a.tags is not None and a.language is not None
    s.title, s.tags, s.language = a.title, a.tags, a.language
    ev.append(TitleChanged(a.title, a.tags, a.language, a.actor))


def _set_settings(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    assert a.settings is not None
    s.settings = a.settings
    ev.append(SettingsChanged(a.settings, a.actor))


def _end_room(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    s.ended = True
    ev.append(RoomEnded(a.actor))


def _handover(s: RoomState, a: Action, n: int, at: int, ev: Events) -> None:
    assert a.target is not None
    s.sequencer = a.target
    s.epoch += 1
    ev.append(AuthorityChanged(s.epoch, a.target, "handover"))


_EFFECTS: dict[Op, Callable[[RoomState, Action, int, int, Events], None]] = {
    Op.RAISE_HAND: _raise_hand,
    Op.LOWER_HAND: _lower_hand,
    Op.CLEAR_HAND: _lower_hand,
    Op.INVITE: _invite,
    Op.CANCEL_INVITE: _cancel_invite,
    Op.ACCEPT_INVITE: _accept_invite,
    Op.DECLINE_INVITE: _decline_invite,
    Op.LEAVE_STAGE: _role_only,
    Op.DEMOTE: _role_only,
    Op.MUTE: _mute,
    Op.UNLOCK_MUTE: _mute,
    Op.SELF_MUTE: _mute,
    Op.SELF_UNMUTE: _self_unmute,
    Op.REMOVE: _remove,
    Op.BAN: _remove,
    Op.UNBAN: _role_only,
    Op.PROMOTE_MODERATOR: _role_only,
    Op.DEMOTE_MODERATOR: _role_only,
    Op.SET_INFO: _set_info,
    Op.SET_SETTINGS: _set_settings,
    Op.END_ROOM: _end_room,
    Op.HANDOVER: _handover,
}
