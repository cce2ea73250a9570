"""What an observer sees of a room, how events change it, and the events between two views.

``view_of(state)`` is the projection the UI renders; ``fold`` is the reference reader of events;
``diff_events`` produces the events that take one view to another (used when the head switches
branch). Hands and invitations appear here as stored; ``queries.hand_queue(now)`` hides expired ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from p2pvoix.crypto.keys import PublicKey
from p2pvoix.room.events import (
    AuthorityChanged,
    HandLowered,
    HandRaised,
    InviteAccepted,
    InviteCancelled,
    Invited,
    InviteDeclined,
    Muted,
    RoleChanged,
    RoomEnded,
    RoomEvent,
    RoomReopened,
    SettingsChanged,
    TitleChanged,
    Unmuted,
)
from p2pvoix.room.state import Hand, Invitation, Role, RoomState, Settings


@dataclass(frozen=True)
class View:
    roles: dict[PublicKey, Role] = field(default_factory=dict)  # everyone but the audience
    muted: dict[PublicKey, bool] = field(default_factory=dict)
    hands: dict[PublicKey, Hand] = field(default_factory=dict)
    invited: dict[PublicKey, Invitation] = field(default_factory=dict)
    info: tuple[str, tuple[str, ...], str] | None = None  # title, tags, language
    settings: Settings | None = None
    ended: bool = False
    authority: tuple[int, PublicKey] | None = None  # epoch, sequencer


EMPTY_VIEW = View()


def view_of(state: RoomState) -> View:
    roles = {state.owner: Role.OWNER}
    roles.update(dict.fromkeys(state.moderators, Role.MODERATOR))
    roles.update(dict.fromkeys(state.speakers, Role.SPEAKER))
    roles.update(dict.fromkeys(state.banned, Role.BANNED))
    return View(
        roles=roles,
        muted=dict(state.muted),
        hands=dict(state.hands),
        invited=dict(state.invited),
        info=(state.title, state.tags, state.language),
        settings=state.settings,
        ended=state.ended,
        authority=(state.epoch, state.sequencer),
    )


def fold(view: View, events: Iterable[RoomEvent]) -> View:
    """``view`` after ``events``: how an observer must read them."""
    roles, muted = dict(view.roles), dict(view.muted)
    hands, invited = dict(view.hands), dict(view.invited)
    info, settings, ended, authority = view.info, view.settings, view.ended, view.authority
    for event in events:
        match event:
            case RoleChanged(identity=who, new=new):
                if new is Role.AUDIENCE:
                    roles.pop(who, None)
                else:
                    roles[who] = new
            case Muted(identity=who, locked=locked):
                muted[who] = locked
            case Unmuted(identity=who):
                muted.pop(who, None)
            case HandRaised(identity=who, seq=seq, at_ms=at):
                hands[who] = Hand(who, seq, at)
            case HandLowered(identity=who):
                hands.pop(who, None)
            case Invited(identity=who, by=by, at_ms=at):
                invited[who] = Invitation(who, by, at)
            case InviteAccepted(identity=who) | InviteDeclined(identity=who):
                invited.pop(who, None)
            case InviteCancelled(identity=who):
                invited.pop(who, None)
            case TitleChanged(title=title, tags=tags, language=language):
                info = (title, tags, language)
            case SettingsChanged(settings=new_settings):
                settings = new_settings
            case RoomEnded():
                ended = True
            case RoomReopened():
                ended = False
            case AuthorityChanged(epoch=epoch, sequencer=sequencer):
                authority = (epoch, sequencer)
    hands = dict(sorted(hands.items(), key=lambda item: item[1].seq))
    return View(roles, muted, hands, invited, info, settings, ended, authority)


def diff_events(old: View, new: View) -> list[RoomEvent]:
    """Events that take an observer from ``old`` to ``new``."""
    out: list[RoomEvent] = []
    if new.authority != old.authority and new.authority is not None:
        out.append(AuthorityChanged(new.authority[0], new.authority[1], "reorganized"))
    for who in sorted(old.roles.keys() | new.roles.keys()):
        before, after = old.roles.get(who, Role.AUDIENCE), new.roles.get(who, Role.AUDIENCE)
        if before != after:
            out.append(RoleChanged(who, before, after, None))
    for who in old.muted:
        if who not in new.muted:
            out.append(Unmuted(who, None))
    for who, locked in new.muted.items():
        if old.muted.get(who) != locked:
            out.append(Muted(who, locked, None))
    for who, hand in old.hands.items():
        if new.hands.get(who) != hand:
            out.append(HandLowered(who, None, "reorganized"))
    for who, hand in new.hands.items():
        if old.hands.get(who) != hand:
            out.append(HandRaised(who, hand.seq, hand.at_ms))
    for who, invitation in old.invited.items():
        if new.invited.get(who) != invitation:
            out.append(InviteCancelled(who, None, "reorganized"))
    for who, invitation in new.invited.items():
        if old.invited.get(who) != invitation:
            out.append(Invited(who, invitation.by, invitation.at_ms))
    if new.info != old.info and new.info is not None:
        out.append(TitleChanged(*new.info, None))
    if new.settings != old.settings and new.settings is not None:
        out.append(SettingsChanged(new.settings, None))
    if new.ended != old.ended:
        out.append(RoomEnded(None) if new.ended else RoomReopened())
    return out
