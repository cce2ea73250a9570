"""Who may do what to whom: the one permission table of the room, and its checker.

Every op has one ``Rule``: the roles that may ask, the roles it may be aimed at, whether a staff
target must be junior to the actor, the role the subject ends in, and named preconditions on the
state. Nothing else in the room core decides permissions. ``docs/protocol/authority.md`` embeds
``permission_table_markdown()``; a test keeps the two equal.

Seniority: the owner outranks every moderator; moderators rank by the entry that appointed them, so a
moderator may act on moderators appointed after them and never on the owner or on earlier ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pvoix.crypto.keys import PublicKey
from p2pvoix.room.ops import Op
from p2pvoix.room.reasons import RoomReason, RoomRejected
from p2pvoix.room.state import STAFF, STAGE, Role, RoomState
from p2pvoix.room.wire import Action

OWNER, MODERATOR, SPEAKER, AUDIENCE, BANNED = (
    Role.OWNER, Role.MODERATOR, Role.SPEAKER, Role.AUDIENCE, Role.BANNED
)


@dataclass(frozen=True)
class Request:
    """One op asked by ``actor`` at log time ``at_ms``; ``action`` is None for a what-if query."""

    actor: PublicKey
    op: Op
    target: PublicKey | None
    at_ms: int
    action: Action | None = None

    @property
    def subject(self) -> PublicKey:
        """Whom the op changes: the target, or the actor for an op on oneself."""
        return self.target if self.target is not None else self.actor


@dataclass(frozen=True)
class Condition:
    test: Callable[[RoomState, Request], bool]
    reason: RoomReason
    text: str


@dataclass(frozen=True)
class Rule:
    actors: frozenset[Role]
    targets: frozenset[Role] | None = None  # None: the op acts on the actor itself
    senior: bool = False  # a staff target must be junior to the actor
    becomes: Role | None = None  # the subject's role afterwards
    needs: tuple[str, ...] = ()  # names in CONDITIONS, checked in this order


def _mute_changes(s: RoomState, r: Request) -> bool:
    if r.action is None or r.subject not in s.muted:
        return True
    return bool(r.action.lock) and not s.muted[r.subject]  # only a lock can add to a mute


def _info_changes(s: RoomState, r: Request) -> bool:
    a = r.action
    return a is None or (a.title, a.tags, a.language) != (s.title, s.tags, s.language)


def _raise_interval(s: RoomState, r: Request) -> bool:
    last = s.raises.get(r.actor)
    return last is None or last + s.settings.hand_interval_ms <= r.at_ms


CONDITIONS: dict[str, Condition] = {
    "hands_open": Condition(
        lambda s, r: s.settings.hands, RoomReason.HANDS_CLOSED, "hand raising is open"
    ),
    "hand_down": Condition(
        lambda s, r: not s.hand_active(r.actor, r.at_ms), RoomReason.NO_CHANGE,
        "the actor's hand is not raised",
    ),
    "raise_interval": Condition(
        _raise_interval, RoomReason.RATE_LIMITED,
        "at least `hand_interval_ms` since the actor's last raise",
    ),
    "hand_up": Condition(
        lambda s, r: s.hand_active(r.subject, r.at_ms), RoomReason.NO_CHANGE,
        "the subject's hand is raised and not expired",
    ),
    "invited": Condition(
        lambda s, r: s.invitation_active(r.subject, r.at_ms), RoomReason.NOT_PERMITTED,
        "the subject holds an unexpired invitation to speak",
    ),
    "invitation_open": Condition(
        lambda s, r: s.invitation_active(r.subject, r.at_ms), RoomReason.NO_CHANGE,
        "the subject holds an unexpired invitation to speak",
    ),
    "not_invited": Condition(
        lambda s, r: not s.invitation_active(r.subject, r.at_ms), RoomReason.NO_CHANGE,
        "the subject holds no unexpired invitation",
    ),
    "stage_room": Condition(
        lambda s, r: len(s.speakers) < s.settings.max_speakers, RoomReason.STAGE_FULL,
        "fewer speakers than `max_speakers`",
    ),
    "mute_changes": Condition(
        _mute_changes, RoomReason.NO_CHANGE,
        "the subject is unmuted, or muted without a lock and this mute locks",
    ),
    "muted": Condition(
        lambda s, r: r.subject in s.muted, RoomReason.NO_CHANGE, "the subject is muted"
    ),
    "not_muted": Condition(
        lambda s, r: r.subject not in s.muted, RoomReason.NO_CHANGE, "the subject is not muted"
    ),
    "mute_locked": Condition(
        lambda s, r: s.muted.get(r.subject, False), RoomReason.NO_CHANGE,
        "the subject's mute is locked",
    ),
    "mute_unlocked": Condition(
        lambda s, r: not s.muted.get(r.subject, False), RoomReason.MUTE_LOCKED,
        "the subject's mute is not locked by a moderator",
    ),
    "appoint": Condition(
        lambda s, r: r.actor == s.owner or s.settings.mods_appoint, RoomReason.NOT_PERMITTED,
        "the actor is the owner, or the settings let moderators appoint (`mods_appoint`)",
    ),
    "sequencer_or_owner": Condition(
        lambda s, r: r.actor in (s.sequencer, s.owner), RoomReason.NOT_PERMITTED,
        "the actor is the current sequencer or the owner",
    ),
    "not_sequencer": Condition(
        lambda s, r: r.actor != s.sequencer, RoomReason.NOT_PERMITTED,
        "the actor is not the current sequencer (hand over first)",
    ),
    "target_not_sequencer": Condition(
        lambda s, r: r.target != s.sequencer, RoomReason.NO_CHANGE,
        "the target is not already the sequencer",
    ),
    "info_changes": Condition(
        _info_changes, RoomReason.NO_CHANGE, "title, tags or language differ from the current ones"
    ),
    "owner_settings": Condition(
        lambda s, r: r.action is None or r.actor == s.owner
        or r.action.settings is None or r.action.settings.mods_appoint == s.settings.mods_appoint,
        RoomReason.NOT_PERMITTED, "only the owner changes `mods_appoint`",
    ),
    "settings_change": Condition(
        lambda s, r: r.action is None or r.action.settings != s.settings, RoomReason.NO_CHANGE,
        "the settings differ from the current ones",
    ),
}

_STAFF = frozenset(STAFF)
_ON_STAGE = frozenset({MODERATOR, SPEAKER})
_ANYONE_BUT_OWNER = frozenset({MODERATOR, SPEAKER, AUDIENCE})

PERMISSIONS: dict[Op, Rule] = {
    Op.RAISE_HAND: Rule(
        frozenset({AUDIENCE}), needs=("hands_open", "hand_down", "raise_interval")
    ),
    Op.LOWER_HAND: Rule(frozenset({AUDIENCE}), needs=("hand_up",)),
    Op.CLEAR_HAND: Rule(_STAFF, frozenset({AUDIENCE}), needs=("hand_up",)),
    Op.INVITE: Rule(_STAFF, frozenset({AUDIENCE}), needs=("not_invited", "stage_room")),
    Op.CANCEL_INVITE: Rule(_STAFF, frozenset({AUDIENCE}), needs=("invitation_open",)),
    Op.ACCEPT_INVITE: Rule(
        frozenset({AUDIENCE}), becomes=SPEAKER, needs=("invited", "stage_room")
    ),
    Op.DECLINE_INVITE: Rule(frozenset({AUDIENCE}), needs=("invited",)),
    Op.LEAVE_STAGE: Rule(_ON_STAGE, becomes=AUDIENCE, needs=("not_sequencer",)),
    Op.DEMOTE: Rule(_STAFF, frozenset({SPEAKER}), becomes=AUDIENCE),
    Op.MUTE: Rule(_STAFF, _ON_STAGE, senior=True, needs=("mute_changes",)),
    Op.UNLOCK_MUTE: Rule(_STAFF, _ON_STAGE, senior=True, needs=("mute_locked",)),
    Op.SELF_MUTE: Rule(frozenset(STAGE), needs=("not_muted",)),
    Op.SELF_UNMUTE: Rule(frozenset(STAGE), needs=("muted", "mute_unlocked")),
    Op.REMOVE: Rule(_STAFF, _ANYONE_BUT_OWNER, senior=True, becomes=AUDIENCE),
    Op.BAN: Rule(_STAFF, _ANYONE_BUT_OWNER, senior=True, becomes=BANNED),
    Op.UNBAN: Rule(_STAFF, frozenset({BANNED}), becomes=AUDIENCE),
    Op.PROMOTE_MODERATOR: Rule(_STAFF, frozenset({SPEAKER}), becomes=MODERATOR, needs=("appoint",)),
    Op.DEMOTE_MODERATOR: Rule(_STAFF, frozenset({MODERATOR}), senior=True, becomes=SPEAKER),
    Op.SET_INFO: Rule(_STAFF, needs=("info_changes",)),
    Op.SET_SETTINGS: Rule(_STAFF, needs=("owner_settings", "settings_change")),
    Op.END_ROOM: Rule(_STAFF),
    Op.HANDOVER: Rule(
        _STAFF, _STAFF, needs=("sequencer_or_owner", "target_not_sequencer")
    ),
}


def check(state: RoomState, request: Request) -> None:
    """Raise ``RoomRejected`` unless the table allows ``request`` in ``state``."""
    rule = PERMISSIONS[request.op]
    role = state.role_of(request.actor)
    if role is BANNED:
        raise RoomRejected(RoomReason.BANNED, "the actor is banned")
    if role not in rule.actors:
        raise RoomRejected(RoomReason.NOT_PERMITTED, f"{role} may not {request.op}")
    if rule.targets is not None:
        if request.target is None:
            raise ValueError(f"{request.op} needs a target")
        target_role = state.role_of(request.target)
        if target_role not in rule.targets:
            raise RoomRejected(RoomReason.NOT_PERMITTED, f"{request.op} on a {target_role}")
        if rule.senior and target_role in STAFF:
            mine, theirs = state.rank(request.actor), state.rank(request.target)
            if mine is None or theirs is None or not mine < theirs:
                raise RoomRejected(RoomReason.NOT_PERMITTED, "the target is not junior")
    for name in rule.needs:
        condition = CONDITIONS[name]
        if not condition.test(state, request):
            raise RoomRejected(condition.reason, f"{request.op}: needs {name}")


def revokes_staff(state: RoomState, request: Request) -> bool:
    """Whether an allowed ``request`` strips a staff member of staff rights against their will."""
    rule = PERMISSIONS[request.op]
    return (
        request.target is not None
        and request.target != request.actor
        and state.role_of(request.target) in STAFF
        and rule.becomes is not None
        and rule.becomes not in STAFF
    )


def permission_table_markdown() -> str:
    """The table and the conditions legend as docs/protocol/authority.md shows them."""
    lines = [
        "| op | actor's role | target's role | staff target junior | subject becomes | also needs |",
        "|---|---|---|---|---|---|",
    ]
    def roles(chosen: frozenset[Role]) -> str:
        return ", ".join(role for role in Role if role in chosen)  # in order of rank

    for op, rule in PERMISSIONS.items():
        targets = roles(rule.targets) if rule.targets is not None else "(self)"
        lines.append(
            f"| `{op}` | {roles(rule.actors)} | {targets} | "
            f"{'yes' if rule.senior else ''} | {rule.becomes or ''} | "
            f"{', '.join(f'`{n}`' for n in rule.needs)} |"
        )
    lines += ["", "| condition | holds when | refused as |", "|---|---|---|"]
    for name, condition in CONDITIONS.items():
        lines.append(f"| `{name}` | {condition.text} | `{condition.reason}` |")
    return "\n".join(lines) + "\n"
