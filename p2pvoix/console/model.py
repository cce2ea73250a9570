"""What the console shows, as plain data: session events and the room state in, a ``View`` out.

Pure: the widgets draw a ``View`` and nothing else, so everything the console decides (who is on
stage and speaking, the audience, the hand queue, one's own role and state, the progress of joining,
why the session ended and with which exit code) is tested here without textual or a network.

The room state and the roster are read at each ``view`` call (they belong to the session); the model
keeps only what no state holds: who is speaking now, names of people who have gone, the steps of
opening, recent event sentences, the last refusal and the end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from p2pvoix.cli.interact import event_text
from p2pvoix.console.refusals import explain_code, label
from p2pvoix.crypto.keys import PublicKey
from p2pvoix.room import Role, RoomEnded, RoomState, hand_queue, stage
from p2pvoix.room.state import STAFF, STAGE
from p2pvoix.session.events import ActionRefused, FirstAudio, Left, SpeakingStarted, SpeakingStopped
from p2pvoix.session.presence import ParticipantJoined, ParticipantLeft, ParticipantUpdated

LOG_LINES = 200  # event sentences kept for the log pane
AUDIENCE_SHOWN = 500  # names listed; a bigger audience is counted, its hands still queue


class Phase(StrEnum):
    OPENING = "opening"  # the session does not exist yet: progress steps
    LIVE = "live"
    ENDED = "ended"  # the session is over (or never opened): ``View.ending`` says why


@dataclass(frozen=True)
class Step:
    text: str
    done: bool


@dataclass(frozen=True)
class Person:
    """One participant as a list row shows them."""

    identity: PublicKey
    name: str
    role: Role
    me: bool = False
    speaking: bool = False
    muted: bool = False
    locked: bool = False  # muted by a moderator, who must unlock it
    hand: bool = False
    invited: bool = False
    present: bool = True  # a stage member may be in the log but gone from the roster
    waited_s: int | None = None  # in the hand queue: seconds since the hand went up

    @property
    def on_stage(self) -> bool:
        return self.role in STAGE


@dataclass(frozen=True)
class Ending:
    """Why the console is over: a headline, what to do next, and the process's exit code."""

    reason: str  # a ``Left`` reason (leave, ended, removed, banned, lost) or ``error``
    headline: str
    advice: str
    exit_code: int
    by_me: bool = False  # one's own doing (leaving, ending the room): nothing to explain


@dataclass(frozen=True)
class View:
    phase: Phase
    steps: tuple[Step, ...]
    title: str = ""
    tags: tuple[str, ...] = ()
    language: str = ""
    share: str = ""  # the room key to give others (`p2pvoix join KEY`)
    me: Person | None = None
    hand_place: int | None = None  # 1-based place of one's own hand in the queue
    staff: bool = False  # owner or moderator: moderation keys and the hand queue
    stage: tuple[Person, ...] = ()
    audience: tuple[Person, ...] = ()
    audience_count: int = 0
    hands: tuple[Person, ...] = ()
    lost: bool = False  # everyone else timed out: our connection is probably down
    log: tuple[str, ...] = ()
    log_total: int = 0  # sentences logged so far, of which ``log`` holds the newest
    refusal: str = ""
    ending: Ending | None = None

    @property
    def status(self) -> str:
        """The newest progress step, for the header once the room is open."""
        return self.steps[-1].text if self.steps else ""


# What each way of leaving means for the person, and what they can do next.
ENDINGS: dict[str, tuple[str, str]] = {
    "leave": ("You left the room.", ""),
    "ended": ("The room has ended.", "Look for another live room with `p2pvoix rooms`."),
    "removed": ("A moderator removed you from the room.",
                "You can join again with the same key, unless they ban you."),
    "banned": ("A moderator banned you from this room.",
               "You cannot join it again with this identity."),
    "lost": ("The connection to the room was lost.",
             "Check your network, then join again with the same key."),
}
# Sentences the stage or the refusal line already show, kept out of the log.
_QUIET = (SpeakingStarted, SpeakingStopped, ActionRefused)


class ConsoleModel:
    """The console's memory of one session; ``exit_codes`` maps a ``Left`` reason to an exit code."""

    def __init__(self, exit_codes: Mapping[str, int], notices: tuple[str, ...] = ()) -> None:
        self.exit_codes = exit_codes
        self.phase = Phase.OPENING
        self.me: PublicKey | None = None
        self.my_name = ""
        self.share = ""
        self._steps: list[Step] = []
        self._speaking: set[PublicKey] = set()
        self._names: dict[PublicKey, str] = {}  # everyone seen, so the gone keep their names
        self._log: deque[str] = deque(maxlen=LOG_LINES)
        self._logged = 0
        self._timed_out = False  # the last departure was a timeout, not a goodbye
        self._heard = False
        self._ended_by_me = False
        self.refusal = ""
        self._pending: dict[str, str] = {}  # op sent -> whom it was for, to word a refusal
        self.ending: Ending | None = None
        for text in notices:
            self.note(text)

    # ---- opening ----

    def progress(self, text: str) -> None:
        """A new step of opening the room; the one before it is done."""
        self._finish_steps()
        self._steps.append(Step(text, False))

    def opened(self, me: PublicKey, name: str, share: str = "") -> None:
        """The session exists; its last step (waiting for audio) goes on until ``FirstAudio``."""
        self.phase = Phase.LIVE
        self.me, self.my_name, self.share = me, name, share

    def failed(self, message: str, exit_code: int) -> None:
        """Opening failed (``message`` says what happened and what to do)."""
        self.phase = Phase.ENDED
        self.ending = Ending("error", message, "", exit_code)

    # ---- live ----

    def apply(self, event: Any) -> None:
        """Take one session event (room core, presence or session)."""
        if isinstance(event, ParticipantJoined | ParticipantUpdated):
            self._names[event.identity] = event.name
            self._timed_out = False
        elif isinstance(event, ParticipantLeft):
            self._names[event.identity] = event.name
            self._speaking.discard(event.identity)
            self._timed_out = event.reason == "timeout"
        elif isinstance(event, SpeakingStarted):
            self._speaking.add(event.identity)
        elif isinstance(event, SpeakingStopped):
            self._speaking.discard(event.identity)
        elif isinstance(event, FirstAudio) and not self._heard:
            self._heard = True
            self._finish_steps()
            self._steps.append(Step(f"Hearing {self.name_of(event.identity)}.", True))
        elif isinstance(event, ActionRefused):
            who = self._pending.pop(event.op, "")
            self.refuse(f"Cannot {label(event.op, who)}: {explain_code(event.reason)}.")
        elif isinstance(event, RoomEnded):
            self._ended_by_me = event.by is not None and event.by == self.me
        elif isinstance(event, Left):
            self._end(event)
        if not isinstance(event, _QUIET):
            line = event_text(event, self.name_of)
            if line:
                self._write(line)

    def refuse(self, text: str) -> None:
        """An action was refused (here or by the room); the console shows why until the next."""
        self.refusal = text
        self._write(f"! {text}")

    def note(self, text: str) -> None:
        self._write(f"note: {text}")

    def sending(self, op: str, who: str = "") -> None:
        """An action is on its way to the sequencer: the last refusal is old news, and a refusal
        of this one will name ``who``."""
        self.refusal = ""
        self._pending[str(op)] = who

    def name_of(self, identity: PublicKey) -> str:
        if identity == self.me:
            return self.my_name
        return self._names.get(identity) or f"anon-{identity.fingerprint[:4]}"

    def view(self, state: RoomState | None, people: Mapping[PublicKey, str], now_ms: int) -> View:
        """What to draw now; ``people`` are the present participants (the roster) by name."""
        self._names.update(people)
        base = View(phase=self.phase, steps=tuple(self._steps), share=self.share,
                    log=tuple(self._log), log_total=self._logged, refusal=self.refusal,
                    ending=self.ending)
        if state is None or self.me is None:
            return base
        me = self.me
        queue = hand_queue(state, now_ms)
        hands = {hand.identity: hand for hand in queue}
        present = set(people) | {me}

        def person(who: PublicKey, **extra: Any) -> Person:
            return Person(
                identity=who, name=self.name_of(who), role=state.role_of(who), me=who == me,
                speaking=who in self._speaking, muted=who in state.muted,
                locked=state.muted.get(who, False), hand=who in hands,
                invited=state.invitation_active(who, now_ms), present=who in present, **extra)

        on_stage = tuple(person(member.identity) for member in stage(state))
        staged = {p.identity for p in on_stage}
        listeners = sorted((who for who in present if who not in staged
                            and state.role_of(who) is not Role.BANNED),
                           key=lambda who: (who != me, self.name_of(who).casefold(), who.raw))
        role = state.role_of(me)
        place = next((i for i, hand in enumerate(queue, 1) if hand.identity == me), None)
        return View(
            phase=self.phase, steps=base.steps, title=state.title, tags=state.tags,
            language=state.language, share=self.share, me=person(me), hand_place=place,
            staff=role in STAFF and not state.ended, stage=on_stage,
            audience=tuple(person(who) for who in listeners[:AUDIENCE_SHOWN]),
            audience_count=len(listeners),
            hands=tuple(person(h.identity, waited_s=max(0, (now_ms - h.at_ms) // 1000))
                        for h in queue),
            lost=self._timed_out and not people and state.sequencer != me,
            log=base.log, log_total=self._logged, refusal=self.refusal, ending=self.ending,
        )

    # ---- helpers ----

    def _write(self, line: str) -> None:
        self._log.append(line)
        self._logged += 1

    def _finish_steps(self) -> None:
        self._steps = [Step(step.text, True) for step in self._steps]

    def _end(self, left: Left) -> None:
        headline, advice = ENDINGS.get(left.reason, (f"The session ended ({left.reason}).", ""))
        by_me = left.reason == "leave" or (left.reason == "ended" and self._ended_by_me)
        if by_me and left.reason == "ended":
            headline, advice = "You ended the room.", ""
        self.phase = Phase.ENDED
        self.ending = Ending(left.reason, headline, advice, self.exit_codes.get(left.reason, 1),
                             by_me)
