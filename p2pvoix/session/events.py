"""What a room session tells its user interface, besides the room core's and the roster's events."""

from __future__ import annotations

from dataclasses import dataclass

from p2pvoix.crypto.keys import PublicKey


@dataclass(frozen=True)
class Joined:
    room: PublicKey
    title: str
    role: str


@dataclass(frozen=True)
class Left:
    """The session ended: ``reason`` is leave, ended, removed, banned or lost."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class SpeakingStarted:
    identity: PublicKey


@dataclass(frozen=True)
class SpeakingStopped:
    identity: PublicKey


@dataclass(frozen=True)
class LinkUp:
    identity: PublicKey


@dataclass(frozen=True)
class LinkDown:
    identity: PublicKey
    reason: str


@dataclass(frozen=True)
class FirstAudio:
    """The first frame from the stage reached this node's playout (join → first audio)."""

    identity: PublicKey


@dataclass(frozen=True)
class ActionRefused:
    op: str
    reason: str


@dataclass(frozen=True)
class Notice:
    text: str


SessionEvent = (
    Joined | Left | SpeakingStarted | SpeakingStopped | LinkUp | LinkDown | FirstAudio
    | ActionRefused | Notice
)
