"""``ConsoleApp``: a live room in the terminal, from the first step of joining to the exit code.

The app starts before the session exists: it is given an opener (``open_session(progress)``) and
shows each step the opener reports, then renders the session's events and carries out keys as room
ops (the ops of ``cli.interact.COMMANDS``, checked first against the room's permission table so a
refusal is explained at once). One worker owns the session's life; quitting leaves the room through
``session.leave`` and exits only once the session has closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Footer

from p2pvoix.cli.common import EXIT_INTERRUPTED
from p2pvoix.cli.interact import COMMANDS
from p2pvoix.cli.live import EXIT_CODES, share_key
from p2pvoix.console.model import ConsoleModel, Phase
from p2pvoix.console.refusals import why_not
from p2pvoix.console.widgets import (
    Confirm,
    EndPanel,
    EventLog,
    MeBar,
    PeopleList,
    ProgressPanel,
    RoomHeader,
)
from p2pvoix.crypto.keys import PublicKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.errors import P2pvoixError
from p2pvoix.room import Invited, Op, Role
from p2pvoix.session.events import Left
from p2pvoix.session.room import NotAllowed, RoomSession

Progress = Callable[[str], None]
Opener = Callable[[Progress], Awaitable[RoomSession]]

# Keys acting on oneself -> the cli.interact command they carry out.
OWN_KEYS = {"raise_hand": "raise_hand", "lower_hand": "lower_hand", "accept": "accept",
            "decline": "decline", "mute_self": "mute", "unmute_self": "unmute",
            "leave_stage": "leave_stage"}
# Moderation keys acting on the selected participant -> their command; some ask first.
MODERATION_KEYS = {"invite": "invite", "demote": "demote", "mute_other": "mute_other",
                   "remove": "remove", "ban": "ban", "promote": "promote_moderator",
                   "end": "end"}
CONFIRM = {"ban": "Ban {who} from this room for good?", "end": "End the room for everyone?"}


class ConsoleApp(App[int]):
    """A live room; ``duration`` (seconds) leaves by itself like ``--duration``."""

    TITLE = "p2pvoix"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #room { height: auto; padding: 0 1; background: $boost; }
    #progress, #ended { height: auto; padding: 1 2; }
    #people { height: 1fr; }
    #stage { width: 1fr; height: 1fr; }
    #side { width: 1fr; }
    #hands { height: auto; min-height: 3; max-height: 50%; }
    #audience { height: 1fr; }
    #me { height: auto; padding: 0 1; }
    #log { height: 7; border-top: solid $panel; }
    """
    BINDINGS = [
        Binding("q", "leave", "Leave"),
        Binding("q", "close", "Close"),
        Binding("h", "raise_hand", "Raise hand"),
        Binding("h", "lower_hand", "Lower hand"),
        Binding("a", "accept", "Accept"),
        Binding("d", "decline", "Decline"),
        Binding("m", "mute_self", "Mute"),
        Binding("m", "unmute_self", "Unmute"),
        Binding("s", "leave_stage", "Leave stage"),
        Binding("i", "invite", "Invite"),
        Binding("o", "demote", "Demote"),
        Binding("M", "mute_other", "Mute them"),
        Binding("r", "remove", "Remove"),
        Binding("b", "ban", "Ban"),
        Binding("p", "promote", "Promote"),
        Binding("e", "end", "End"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, open_session: Opener, *, notices: tuple[str, ...] = (),
                 duration: float | None = None) -> None:
        super().__init__()
        self.open_session = open_session
        self.duration = duration
        self.model = ConsoleModel(EXIT_CODES, notices)
        self.session: RoomSession | None = None
        self.view = self.model.view(None, {}, 0)
        self._opening: asyncio.Task[RoomSession] | None = None
        self._leaving = False
        self._last_list = "stage"

    # ---- layout ----

    def compose(self) -> ComposeResult:
        yield RoomHeader(id="room")
        yield ProgressPanel(id="progress")
        yield EndPanel(id="ended")
        with Horizontal(id="people"):
            yield PeopleList("stage", "Stage", id="stage")
            with Vertical(id="side"):
                yield PeopleList("hands", "Hands", id="hands")
                yield PeopleList("audience", "Audience", id="audience")
        yield MeBar(id="me")
        yield EventLog(id="log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._render()
        # Opening starts once the screen is laid out: textual does not resize a widget whose
        # content changes before its first layout, so early progress lines would be cut off.
        self.call_after_refresh(self._begin)
        self.set_interval(1.0, self._render)  # hand waits, expiries

    def _begin(self) -> None:
        self.run_worker(self._life(), name="session", exit_on_error=True)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, PeopleList):
            self._last_list = event.widget.kind

    # ---- the session's life ----

    async def _life(self) -> None:
        if self._leaving:  # Ctrl-C before the first frame
            self.exit(EXIT_INTERRUPTED, return_code=EXIT_INTERRUPTED)
            return
        self._opening = asyncio.ensure_future(self.open_session(self._progress))
        try:
            session = await self._opening
        except P2pvoixError as exc:
            self.model.failed(exc.user_message, exc.exit_code)
            self._render()
            return  # the end panel stays until q
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the app itself is closing
            self.exit(EXIT_INTERRUPTED, return_code=EXIT_INTERRUPTED)  # q while opening
            return
        self.session = session
        share = share_key(session.room, session.node) if session.room_key else RoomKey(session.room)
        self.model.opened(session.me, session.name, share.text())
        if session.room_key is not None and session.node.isolated():
            self.model.note("nobody can find this room yet (no bootstrap peer, no p2pvoix node on "
                            "the LAN): share the key above with people on this LAN, or start "
                            "with --bootstrap MULTIADDR")
        if self._leaving:
            self._leave()
        elif self.duration is not None:  # like --duration without the console: from the opening
            self.set_timer(self.duration, self.action_quit)
        self._render()
        self.query_one("#stage", PeopleList).focus()
        await self._pump(session)
        if self._leaving or (self.model.ending is not None and self.model.ending.by_me):
            self._exit_with_code()
        # Otherwise the room ended us: the end panel says why until q.

    async def _pump(self, session: RoomSession) -> None:
        """Apply the session's events to the model, a batch per frame, until it has left."""
        while True:
            batch = [await session.events.get()]
            while not session.events.empty():
                batch.append(session.events.get_nowait())
            for event in batch:
                self.model.apply(event)
                if isinstance(event, Invited) and event.identity == session.me:
                    self.bell()
                    self.notify("You are invited to speak: a accepts, d declines.", timeout=10)
            self._render()
            if any(isinstance(event, Left) for event in batch):
                return

    def _progress(self, text: str) -> None:
        self.model.progress(text)
        self._render()

    def _leave(self) -> None:
        """Leave the room (as ``lost`` if the connection is down); the pump sees ``Left``."""
        assert self.session is not None
        self.model.progress("Leaving the room…")
        reason = "lost" if self.view.lost else "leave"
        self.run_worker(self.session.leave(reason), name="leave", group="leave")

    def _exit_with_code(self) -> None:
        code = self.model.ending.exit_code if self.model.ending else 1
        self.exit(code, return_code=code)

    # ---- drawing ----

    def _render(self) -> None:
        session = self.session
        if session is None:
            self.view = self.model.view(None, {}, 0)
        else:
            people = {p.identity: p.name for p in session.roster.present()}
            self.view = self.model.view(session.state, people, session.node.now_ms())
        view = self.view
        self.query_one(RoomHeader).show(view)
        self.query_one(ProgressPanel).show(view)
        self.query_one(EndPanel).show(view)
        for widget_id, shown in (("#progress", view.phase is Phase.OPENING),
                                 ("#ended", view.phase is Phase.ENDED),
                                 ("#people", view.me is not None)):
            self.query_one(widget_id, Widget).display = shown
        self.query_one("#stage", PeopleList).show(view.stage)
        hands = self.query_one("#hands", PeopleList)
        hands.display = view.staff
        hands.show(view.hands)
        self.query_one("#audience", PeopleList).show(view.audience, view.audience_count)
        self.query_one(MeBar).show(view)
        self.query_one(EventLog).show(view)
        self.refresh_bindings()

    # ---- keys ----

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        view, me = self.view, self.view.me
        if action in ("leave", "close"):
            return (action == "close") == (view.phase is Phase.ENDED)
        if action not in OWN_KEYS | MODERATION_KEYS:
            return True
        if view.phase is not Phase.LIVE or me is None or self._leaving:
            return False
        shown = {
            "raise_hand": me.role is Role.AUDIENCE and not me.hand,
            "lower_hand": me.role is Role.AUDIENCE and me.hand,
            "accept": me.invited, "decline": me.invited,
            "mute_self": me.on_stage and not me.muted,
            "unmute_self": me.on_stage and me.muted,
            "leave_stage": me.role in (Role.SPEAKER, Role.MODERATOR),
        }
        return shown.get(action, view.staff)

    async def action_quit(self) -> None:
        """Ctrl-C, SIGTERM, --duration: leave now (no question), or close once ended."""
        if self.model.phase is Phase.ENDED:
            self._exit_with_code()
        elif self.session is None:
            self._leaving = True
            if self._opening is not None:
                self._opening.cancel()  # _life exits with EXIT_INTERRUPTED
        elif not self._leaving:
            self._leaving = True
            self._leave()
            self._render()

    def action_close(self) -> None:
        self._exit_with_code()

    async def action_leave(self) -> None:
        """q: leave the room; its owner is asked first, since that ends it for everyone."""
        view = self.view
        if view.me is None or view.me.role is not Role.OWNER or view.phase is not Phase.LIVE:
            await self.action_quit()
            return

        async def answered(yes: bool | None) -> None:
            if yes:
                await self.action_quit()

        self.push_screen(Confirm("You own this room: leaving ends it for everyone. Leave?"),
                         answered)

    def action_raise_hand(self) -> None:
        self._own("raise_hand")

    def action_lower_hand(self) -> None:
        self._own("lower_hand")

    def action_accept(self) -> None:
        self._own("accept")

    def action_decline(self) -> None:
        self._own("decline")

    def action_mute_self(self) -> None:
        self._own("mute_self")

    def action_unmute_self(self) -> None:
        self._own("unmute_self")

    def action_leave_stage(self) -> None:
        self._own("leave_stage")

    def action_invite(self) -> None:
        self._moderate("invite")

    def action_demote(self) -> None:
        self._moderate("demote")

    def action_mute_other(self) -> None:
        self._moderate("mute_other")

    def action_remove(self) -> None:
        self._moderate("remove")

    def action_ban(self) -> None:
        self._moderate("ban")

    def action_promote(self) -> None:
        self._moderate("promote")

    def action_end(self) -> None:
        self._moderate("end")

    def _own(self, key: str) -> None:
        op = COMMANDS[OWN_KEYS[key]][0]
        assert op is not None
        self._act(op, None)

    def _moderate(self, key: str) -> None:
        command = MODERATION_KEYS[key]
        op = Op.MUTE if command == "mute_other" else COMMANDS[command][0]
        assert op is not None
        target = self.selected() if command != "end" else None
        question = CONFIRM.get(key)
        if question is None or self._refusal(op, target) is not None:
            self._act(op, target)
            return
        who = self.model.name_of(target) if target is not None else ""

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(op, target)

        self.push_screen(Confirm(question.format(who=who)), answered)

    def selected(self) -> PublicKey | None:
        """The highlighted participant of the focused list (or of the last one focused)."""
        focused = self.focused
        people = focused if isinstance(focused, PeopleList) else self.query_one(
            f"#{self._last_list}", PeopleList)
        peer_id = people.selected()
        return PublicKey.from_peer_id(peer_id) if peer_id is not None else None

    def _refusal(self, op: Op, target: PublicKey | None) -> str | None:
        session = self.session
        if session is None:
            return "The room is not open yet."
        return why_not(session.state, session.me, op, target, session.node.now_ms(),
                       self.model.name_of)

    def _act(self, op: Op, target: PublicKey | None) -> None:
        refusal = self._refusal(op, target)
        if refusal is not None:
            self.model.refuse(refusal)
            self._render()
            return
        self.model.sending(op, self.model.name_of(target) if target is not None else "")
        self.run_worker(self._send(op, target), group="act")

    async def _send(self, op: Op, target: PublicKey | None) -> None:
        assert self.session is not None
        params = {"lock": False} if op is Op.MUTE else {}  # as `mute NAME` without --lock
        # A refusal by the sequencer also arrives as ActionRefused, which the model shows.
        with contextlib.suppress(NotAllowed):
            await self.session.act(op, target, **params)
