"""Why the room would refuse an action, in words a person can act on.

``why_not`` asks the room's own permission table (``room.permissions``) before anything is signed,
so a key pressed at the wrong moment is explained at once instead of travelling to the sequencer to
be refused; ``explain_code`` words a refusal that came back from the sequencer anyway (the state
moved on meanwhile). Pure.
"""

from __future__ import annotations

from collections.abc import Callable

from p2pvoix.crypto.keys import PublicKey
from p2pvoix.room import Op, Role, RoomRejected, RoomState
from p2pvoix.room.permissions import CONDITIONS, PERMISSIONS, Request, check
from p2pvoix.room.reasons import RoomReason

# What each op does, for "Cannot …"; {who} is the selected participant.
LABELS: dict[Op, str] = {
    Op.RAISE_HAND: "raise your hand",
    Op.LOWER_HAND: "lower your hand",
    Op.CLEAR_HAND: "clear {who}'s hand",
    Op.INVITE: "invite {who} to speak",
    Op.CANCEL_INVITE: "cancel {who}'s invitation",
    Op.ACCEPT_INVITE: "accept the invitation",
    Op.DECLINE_INVITE: "decline the invitation",
    Op.LEAVE_STAGE: "leave the stage",
    Op.DEMOTE: "move {who} to the audience",
    Op.MUTE: "mute {who}",
    Op.UNLOCK_MUTE: "unlock {who}'s mute",
    Op.SELF_MUTE: "mute yourself",
    Op.SELF_UNMUTE: "unmute yourself",
    Op.REMOVE: "remove {who}",
    Op.BAN: "ban {who}",
    Op.UNBAN: "unban {who}",
    Op.PROMOTE_MODERATOR: "make {who} a moderator",
    Op.DEMOTE_MODERATOR: "make {who} a plain speaker",
    Op.SET_INFO: "change the room's title",
    Op.SET_SETTINGS: "change the room's settings",
    Op.END_ROOM: "end the room",
    Op.HANDOVER: "hand the room's log over to {who}",
}
ROLE_NAMES = {Role.OWNER: "the owner", Role.MODERATOR: "a moderator", Role.SPEAKER: "a speaker",
              Role.AUDIENCE: "in the audience", Role.BANNED: "banned"}
ROLE_GROUPS = {Role.OWNER: "the owner", Role.MODERATOR: "moderators", Role.SPEAKER: "speakers",
               Role.AUDIENCE: "the audience", Role.BANNED: "the banned"}
# A failed precondition of the permission table: (said to oneself, said about {who}).
CONDITION_TEXT: dict[str, tuple[str, str]] = {
    "hands_open": ("the moderators have closed hand raising", ""),
    "hand_down": ("your hand is already raised", ""),
    "raise_interval": ("you raised your hand a moment ago; wait {wait} s", ""),
    "hand_up": ("your hand is not raised", "{who}'s hand is not raised"),
    "invited": ("you have no open invitation to speak", "{who} has no open invitation"),
    "invitation_open": ("you have no open invitation to speak", "{who} has no open invitation"),
    "not_invited": ("you are already invited", "{who} is already invited"),
    "stage_room": ("the stage is full", "the stage is full"),
    "mute_changes": ("you are already muted", "{who} is already muted"),
    "muted": ("you are not muted", "{who} is not muted"),
    "not_muted": ("you are already muted", "{who} is already muted"),
    "mute_locked": ("your mute is not locked", "{who}'s mute is not locked"),
    "mute_unlocked": ("a moderator locked your mute; ask one to unlock it",
                      "{who}'s mute is locked"),
    "appoint": ("only the owner appoints moderators in this room", ""),
    "sequencer_or_owner": ("only the owner or the node keeping the log can hand it over", ""),
    "not_sequencer": ("your node keeps the room's log: hand it to another moderator first", ""),
    "target_not_sequencer": ("", "{who} already keeps the room's log"),
}
# Refusal codes from the sequencer (room.reasons), when the local check had let the action go.
CODE_TEXT: dict[str, str] = {
    RoomReason.NOT_PERMITTED: "the room does not allow it now (roles may have just changed)",
    RoomReason.BANNED: "you are banned from this room",
    RoomReason.RATE_LIMITED: "too soon after your last raised hand; wait a little",
    RoomReason.HANDS_CLOSED: "the moderators have closed hand raising",
    RoomReason.STAGE_FULL: "the stage is full",
    RoomReason.MUTE_LOCKED: "a moderator locked that mute",
    RoomReason.NO_CHANGE: "it is already so",
    RoomReason.ROOM_ENDED: "the room has ended",
    RoomReason.STALE: "your clock differs from the room's; check the system time",
    RoomReason.FUTURE: "your clock differs from the room's; check the system time",
    RoomReason.REPLAYED: "a newer action of yours came first; try again",
}


def why_not(state: RoomState, actor: PublicKey, op: Op, target: PublicKey | None, now_ms: int,
            name_of: Callable[[PublicKey], str]) -> str | None:
    """``None`` if the permission table allows ``op`` now, else a sentence saying why not."""
    rule = PERMISSIONS[op]
    who = name_of(target) if target is not None else ""
    doing = label(op, who)
    if state.ended:
        return f"Cannot {doing}: the room has ended."
    if rule.targets is not None and target is None:
        return f"Cannot {doing}: select someone first (Tab to a list, then ↑ ↓)."
    if rule.targets is not None and target == actor:
        return f"Cannot {doing}: that is you."
    if op is Op.MUTE and target in state.muted:  # the table's what-if ignores the lock flag
        return f"Cannot {doing}: {who} is already muted."
    request = Request(actor, op, target if rule.targets is not None else None, now_ms)
    try:
        check(state, request)
    except RoomRejected as exc:
        return f"Cannot {doing}: {_reason(state, request, rule, who, exc)}."
    return None


def explain_code(reason: str) -> str:
    """A sequencer's refusal code (or the session's own reason text) as a sentence."""
    if reason.startswith("sequencer unreachable"):
        return "the room's log keeper did not answer; try again in a moment"
    return CODE_TEXT.get(reason, reason)


def label(op: Op | str, who: str = "") -> str:
    try:
        return LABELS[Op(op)].format(who=who or "them")
    except ValueError:
        return str(op)


def _reason(state: RoomState, request: Request, rule, who: str,  # type: ignore[no-untyped-def]
            exc: RoomRejected) -> str:
    role = state.role_of(request.actor)
    if exc.code is RoomReason.BANNED:
        return "you are banned from this room"
    if role not in rule.actors:
        allowed = " and ".join(ROLE_GROUPS[r] for r in Role if r in rule.actors)
        return f"you are {ROLE_NAMES[role]}; only {allowed} can"
    if rule.targets is not None and request.target is not None:
        theirs = state.role_of(request.target)
        if theirs not in rule.targets:
            return f"{who} is {ROLE_NAMES[theirs]}"
        mine_rank, their_rank = state.rank(request.actor), state.rank(request.target)
        if rule.senior and their_rank is not None and (mine_rank is None or mine_rank >= their_rank):
            return f"{who} ranks above you"
    for name in rule.needs:
        if not CONDITIONS[name].test(state, request):
            mine, about = CONDITION_TEXT.get(name, ("", ""))
            text = (about if request.target is not None else mine) or mine or about
            if name == "raise_interval":
                last = state.raises.get(request.actor, request.at_ms)
                wait = -(-(last + state.settings.hand_interval_ms - request.at_ms) // 1000)
                return text.format(wait=max(1, wait))
            return text.format(who=who) if text else CONDITIONS[name].text
    return explain_code(exc.reason)
