"""The console's widgets: each draws one part of a ``model.View`` and keeps no room state.

Names come from other people's signed presence, so every text is built as ``rich.text.Text`` and
never parsed as markup (a name like ``[b]x`` must show as typed).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, RichLog, Static
from textual.widgets.option_list import Option

from p2pvoix.console.model import Person, Phase, View
from p2pvoix.room import Role
from p2pvoix.session.presence import TTL_MS

BADGES = {Role.OWNER: ("owner", "bold magenta"), Role.MODERATOR: ("mod", "bold cyan")}


class RoomHeader(Static):
    """Title, topics and language, the join line to share, and how joining is going."""

    def show(self, view: View) -> None:
        text = Text()
        text.append(view.title or "p2pvoix", "bold")
        if view.tags:
            text.append("  " + " ".join(f"#{tag}" for tag in view.tags), "cyan")
        if view.language and view.language != "und":
            text.append(f"  [{view.language}]", "dim")
        if view.share:
            text.append("\nShare: ", "dim")
            text.append(f"p2pvoix join {view.share}")
        if view.phase is Phase.LIVE and view.status:
            text.append(f"\n{view.status}", "dim")
        if view.lost:
            text.append(f"\nConnection lost: nobody in the room has been heard from for "
                        f"{TTL_MS // 1000} s. Check your network; q leaves.", "bold red")
        self.content = text


class PeopleList(OptionList):
    """A selectable list of participants; the option IDs are their peer IDs."""

    def __init__(self, kind: str, heading: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.kind = kind  # stage | hands | audience
        self.heading = heading
        self._rows: tuple[tuple[str, str], ...] = ()

    def show(self, people: tuple[Person, ...], count: int | None = None) -> None:
        """Draw ``people``; the highlighted participant stays highlighted while present."""
        self.border_title = f"{self.heading} ({len(people) if count is None else count})"
        texts = [row(person, self.kind, place) for place, person in enumerate(people, 1)]
        rows = tuple((p.identity.peer_id, t.plain + str(t.spans)) for p, t in
                     zip(people, texts, strict=True))
        if rows == self._rows:
            return
        chosen = self.highlighted_option.id if self.highlighted_option is not None else None
        index = self.highlighted
        self._rows = rows
        self.set_options(Option(text, id=p.identity.peer_id)
                         for p, text in zip(people, texts, strict=True))
        ids = [peer_id for peer_id, _ in rows]
        if chosen in ids:
            self.highlighted = ids.index(chosen)
        elif index is not None and ids:
            self.highlighted = min(index, len(ids) - 1)
        elif self.has_focus and ids:
            self.highlighted = 0

    def selected(self) -> str | None:
        option = self.highlighted_option
        return option.id if option is not None else None

    def on_focus(self) -> None:
        if self.highlighted is None and self.option_count:
            self.highlighted = 0


def row(person: Person, kind: str, place: int) -> Text:
    """One participant as a list line."""
    text = Text()
    if kind == "hands":
        text.append(f"{place}. ")
    elif kind == "stage":
        text.append("◉ " if person.speaking else "○ ", "bold green" if person.speaking else "dim")
    text.append(person.name, "bold" if person.me else "")
    if person.me:
        text.append(" (you)", "dim")
    badge = BADGES.get(person.role)
    if badge is not None:
        text.append(f" {badge[0]}", badge[1])
    if kind == "stage" and person.muted:
        text.append(" muted" + (" (locked)" if person.locked else ""), "red")
    if kind == "stage" and not person.present:
        text.append(" (away)", "dim")
    if kind != "hands" and person.hand:
        text.append(" ✋", "yellow")
    if person.invited:
        text.append(" invited", "green")
    if person.waited_s is not None:
        minutes, seconds = divmod(person.waited_s, 60)
        text.append(f"  {minutes}:{seconds:02d}", "dim")
    return text


class MeBar(Static):
    """One's own role and state, what one can do about it, and the last refusal."""

    def show(self, view: View) -> None:
        me = view.me
        if me is None:
            self.content = ""
            return
        text = Text("You: ")
        text.append(me.name, "bold")
        text.append(" — ")
        text.append({Role.OWNER: "owner", Role.MODERATOR: "moderator", Role.SPEAKER: "speaker",
                     Role.AUDIENCE: "in the audience", Role.BANNED: "banned"}[me.role])
        if me.muted:
            text.append(" · muted" + (" by a moderator (locked)" if me.locked else ""), "red")
        elif me.role in (Role.OWNER, Role.MODERATOR, Role.SPEAKER):
            text.append(" · live", "green")
        if me.hand:
            text.append(f" · ✋ hand raised ({_ordinal(view.hand_place)} in the queue)", "yellow")
        if me.invited:
            text.append(" · invited to speak: a accepts, d declines", "bold green")
        if view.refusal:
            text.append(f"\n! {view.refusal}", "bold red")
        self.content = text


class ProgressPanel(Static):
    """The steps of opening the room, each ticked when the next begins."""

    def show(self, view: View) -> None:
        text = Text()
        for step in view.steps:
            text.append("✓ " if step.done else "… ", "green" if step.done else "yellow")
            text.append(step.text + "\n")
        self.content = text


class EndPanel(Static):
    """Why the console is over, what to do next, and how to close it."""

    def show(self, view: View) -> None:
        ending = view.ending
        if ending is None:
            return
        text = Text(ending.headline, "bold red" if ending.exit_code else "bold")
        if ending.advice:
            text.append("\n" + ending.advice)
        text.append("\n\nPress q to close.", "dim")
        self.content = text


class EventLog(RichLog):
    """Recent event sentences, oldest at the top, long ones wrapped."""

    can_focus = False

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(max_lines=500, wrap=True, markup=False, **kwargs)
        self._seen = 0

    def show(self, view: View) -> None:
        fresh = min(view.log_total - self._seen, len(view.log))
        for line in view.log[len(view.log) - fresh:] if fresh > 0 else ():
            self.write(Text(line))
        self._seen = view.log_total


class Confirm(ModalScreen[bool]):
    """A yes/no question before an action that cannot be taken back."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No"),
                Binding("escape", "answer(False)", "No", show=False)]
    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Vertical { width: 60; height: auto; border: thick $error; padding: 1 2;
                         background: $surface; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.question, "bold"))
            yield Static(Text("y yes · n no", "dim"))

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


def _ordinal(place: int | None) -> str:
    if place is None:
        return "?"
    suffix = "th" if 10 <= place % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(place % 10, "th")
    return f"{place}{suffix}"
