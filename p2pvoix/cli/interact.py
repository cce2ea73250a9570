"""Talking to a running room from a terminal or a script (docs/scripting.md).

Commands arrive one per line, either as JSON (``{"cmd": "invite", "who": "Amina"}``) or as words
(``invite Amina``). Events leave as JSON lines or as short sentences. Nothing here touches the
network: the live command feeds lines in and renders what the session emits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from enum import Enum
from typing import Any

from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PublicKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.room import Op


class CommandError(ValueError):
    """A command line that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class Command:
    name: str
    who: str | None = None
    lock: bool = False


# Command name -> (room op, whether it names a participant). "mute"/"unmute" without a
# participant act on oneself.
COMMANDS: dict[str, tuple[Op | None, bool]] = {
    "raise_hand": (Op.RAISE_HAND, False),
    "lower_hand": (Op.LOWER_HAND, False),
    "accept": (Op.ACCEPT_INVITE, False),
    "decline": (Op.DECLINE_INVITE, False),
    "mute": (Op.SELF_MUTE, False),
    "unmute": (Op.SELF_UNMUTE, False),
    "leave_stage": (Op.LEAVE_STAGE, False),
    "invite": (Op.INVITE, True),
    "cancel_invite": (Op.CANCEL_INVITE, True),
    "clear_hand": (Op.CLEAR_HAND, True),
    "demote": (Op.DEMOTE, True),
    "unlock": (Op.UNLOCK_MUTE, True),
    "remove": (Op.REMOVE, True),
    "ban": (Op.BAN, True),
    "unban": (Op.UNBAN, True),
    "promote_moderator": (Op.PROMOTE_MODERATOR, True),
    "demote_moderator": (Op.DEMOTE_MODERATOR, True),
    "handover": (Op.HANDOVER, True),
    "end": (Op.END_ROOM, False),
    "leave": (None, False),
    "status": (None, False),
    "help": (None, False),
}
ALIASES = {"raise": "raise_hand", "lower": "lower_hand", "hand": "raise_hand", "quit": "leave",
           "exit": "leave", "promote": "promote_moderator", "kick": "remove"}
MAX_LINE = 4096


def parse_command(line: str) -> Command | None:
    """One input line as a command; ``None`` for a blank line. Raises ``CommandError``."""
    line = line.strip()
    if not line:
        return None
    if len(line) > MAX_LINE:
        raise CommandError(f"line longer than {MAX_LINE} characters")
    if line.startswith("{"):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CommandError(f"not valid JSON: {exc.msg}") from None
        if not isinstance(value, dict) or not isinstance(value.get("cmd"), str):
            raise CommandError('a JSON command is an object with a "cmd" string')
        name, who, lock = value["cmd"], value.get("who"), value.get("lock", False)
        if who is not None and not isinstance(who, str):
            raise CommandError('"who" must be a string')
        if not isinstance(lock, bool):
            raise CommandError('"lock" must be true or false')
    else:
        words = line.split(maxsplit=1)
        name, who = words[0], (words[1] if len(words) > 1 else None)
        lock = False
        if who is not None and who.endswith(" --lock"):
            who, lock = who[: -len(" --lock")], True
    name = ALIASES.get(name.lower(), name.lower())
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name!r}; try: {', '.join(sorted(COMMANDS))}")
    op, needs_who = COMMANDS[name]
    if name == "mute" and who:
        return Command("mute_other", who.strip(), lock)
    if needs_who and not who:
        raise CommandError(f"{name} needs a participant: {name} NAME (or peer ID)")
    if not needs_who and who and name not in ("mute",):
        raise CommandError(f"{name} takes no participant")
    return Command(name, who.strip() if who else None, lock)


def resolve(who: str, people: Iterable[tuple[PublicKey, str]]) -> PublicKey:
    """The participant ``who`` names: a peer ID, a fingerprint prefix, or a unique name prefix."""
    people = list(people)
    try:
        return PublicKey.from_peer_id(who)
    except EnvelopeError:
        pass
    wanted = who.casefold()
    exact = [key for key, name in people if name.casefold() == wanted]
    if len(exact) == 1:
        return exact[0]
    found = {key for key, name in people
             if name.casefold().startswith(wanted) or key.fingerprint.startswith(wanted)
             or key.peer_id.endswith(who)}
    if len(found) == 1:
        return found.pop()
    if not found:
        raise CommandError(f"nobody called {who!r} is in the room")
    raise CommandError(f"{who!r} matches {len(found)} people; use more of the name or a peer ID")


def event_json(event: Any, name_of: Callable[[PublicKey], str]) -> dict[str, Any]:
    """An event as a JSON-ready dict: ``{"type": "hand_raised", "identity": {...}, ...}``."""
    data: dict[str, Any] = {"type": snake(type(event).__name__)}
    if is_dataclass(event):
        for field in fields(event):
            data[field.name] = jsonable(getattr(event, field.name), name_of, field.name)
    return data


def event_text(event: Any, name_of: Callable[[PublicKey], str]) -> str | None:
    """A short sentence for people, or ``None`` for events not worth a line."""
    kind = type(event).__name__
    who = getattr(event, "identity", None)
    name = name_of(who) if isinstance(who, PublicKey) else ""
    sentences = {
        "Joined": lambda: f"Joined “{event.title}” as {event.role}.",
        "ParticipantJoined": lambda: f"+ {name} joined",
        "ParticipantLeft": lambda: f"- {name} left" + (" (lost)" if event.reason != "left" else ""),
        "RoleChanged": lambda: f"* {name} is now {event.new.value}",
        "HandRaised": lambda: f"✋ {name} raised a hand",
        "HandLowered": lambda: f"* {name}'s hand is down ({event.reason})",
        "Invited": lambda: f"* {name} was invited to speak",
        "InviteAccepted": lambda: f"* {name} accepted the invitation",
        "InviteDeclined": lambda: f"* {name} declined the invitation",
        "Muted": lambda: f"* {name} is muted" + (" (locked)" if event.locked else ""),
        "Unmuted": lambda: f"* {name} unmuted",
        "Removed": lambda: f"* {name} was {'banned' if event.banned else 'removed'}",
        "SpeakingStarted": lambda: f"🔊 {name} is speaking",
        "FirstAudio": lambda: f"Hearing {name}.",
        "RoomEnded": lambda: "The room has ended.",
        "TitleChanged": lambda: f"* The room is now “{event.title}”",
        "AuthorityChanged": lambda: f"* {name_of(event.sequencer)} now keeps the room's log",
        "ActionRefused": lambda: f"! {event.op} refused: {event.reason}",
        "Notice": lambda: f"note: {event.text}",
        "LinkDown": lambda: f"* lost the audio link to {name} ({event.reason})"
        if event.reason not in ("bye", "not needed", "leaving") else None,
    }
    render = sentences.get(kind)
    return render() if render else None


def snake(name: str) -> str:
    out = []
    for index, char in enumerate(name):
        if char.isupper() and index:
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def jsonable(value: Any, name_of: Callable[[PublicKey], str], field: str = "") -> Any:
    """``value`` with keys, bytes, enums and dataclasses made into what ``json.dumps`` takes."""
    if isinstance(value, PublicKey) and field == "room":
        return RoomKey(value).text()
    if isinstance(value, PublicKey):
        return {"id": value.peer_id, "name": name_of(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [jsonable(item, name_of) for item in value]
    if isinstance(value, Mapping):
        # Statistics key some figures by raw identity bytes, which JSON objects cannot.
        return {_json_key(key): jsonable(item, name_of) for key, item in value.items()}
    if is_dataclass(value):
        return {f.name: jsonable(getattr(value, f.name), name_of) for f in fields(value)}
    return value


def _json_key(key: Any) -> str | int | float | bool | None:
    if isinstance(key, PublicKey):
        return key.peer_id
    if isinstance(key, bytes):
        return key.hex()
    if isinstance(key, Enum):
        return str(key.value)
    return key if isinstance(key, str | int | float | bool) or key is None else str(key)
