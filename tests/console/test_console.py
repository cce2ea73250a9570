"""The console driven by keys (textual's pilot, headless) against real rooms on loopback."""

from __future__ import annotations

import asyncio
import os

from p2pvoix.console.app import ConsoleApp
from p2pvoix.console.model import Person, Phase
from p2pvoix.console.widgets import EndPanel, MeBar, PeopleList, ProgressPanel, row
from p2pvoix.crypto.keys import SigningKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.room import Role
from p2pvoix.session.room import RoomSession
from tests.session.roomlab import Lab

SIZE = (120, 36)


def opener_of(session: RoomSession):  # type: ignore[no-untyped-def]
    async def open_session(progress):  # type: ignore[no-untyped-def]
        progress("Opening the room…")
        return session

    return open_session


def joiner(lab: Lab, name: str):  # type: ignore[no-untyped-def]
    async def open_session(progress):  # type: ignore[no-untyped-def]
        progress("Finding the room…")
        return await lab.join(name, record=False)

    return open_session


def rows(app: ConsoleApp, list_id: str) -> list[str]:
    """What a people list shows, line by line."""
    return [str(option.prompt) for option in app.query_one(list_id, PeopleList).options]


def app_text(app: ConsoleApp, widget: type) -> str:
    return str(app.query_one(widget).content)


async def test_a_raised_hand_goes_through_the_queue_to_the_stage_on_both_consoles(tmp_path):
    async with Lab(tmp_path) as lab:
        host = await lab.host("Mod", hz=440, record=False)
        moderator = ConsoleApp(opener_of(host))
        listener = ConsoleApp(joiner(lab, "Lis"))
        async with moderator.run_test(size=SIZE) as mod, listener.run_test(size=SIZE) as lis:
            # Joining shows its steps, then the first audio and who is speaking.
            await lab.until(lambda: listener.view.phase is Phase.LIVE, 15)
            assert listener.view.steps[0].text == "Finding the room…"
            await lab.until(lambda: listener.view.status == "Hearing Mod.", 20)
            await lab.until(lambda: rows(listener, "#stage")[0].startswith("◉ Mod owner"), 10)
            assert listener.view.me is not None and listener.view.me.name == "Lis"
            await lab.until(lambda: "Lis" in rows(moderator, "#audience")[0], 10)

            await lis.press("h")
            await lab.until(lambda: len(rows(moderator, "#hands")) == 1, 10)
            assert rows(moderator, "#hands")[0].startswith("1. Lis  0:0")  # place, name, wait
            assert "Lis ✋" in rows(moderator, "#audience")[0]
            assert "hand raised (1st in the queue)" in app_text(listener, MeBar)

            # A key that the room would refuse says why, and nothing is sent.
            await mod.press("i")  # the stage list has focus: Mod himself is selected
            assert moderator.view.refusal == "Cannot invite Mod to speak: that is you."
            assert "! Cannot invite Mod to speak: that is you." in app_text(moderator, MeBar)

            await mod.press("tab", "i")  # to the hand queue; its first hand is selected
            await lab.until(lambda: listener.view.me is not None and listener.view.me.invited, 10)
            assert "invited to speak: a accepts, d declines" in app_text(listener, MeBar)
            assert moderator.view.refusal == ""

            await lis.press("a")
            for app in (moderator, listener):
                await lab.until(lambda app=app: [r.split(" ")[1] for r in rows(app, "#stage")]
                                == ["Mod", "Lis"], 10)
            assert rows(listener, "#stage")[1].startswith("○ Lis (you) muted")
            assert rows(moderator, "#hands") == []
            assert listener.view.me is not None and listener.view.me.role == "speaker"

            await lis.press("q")  # leaves the room cleanly, with exit code 0
            await lab.until(lambda: listener.return_code is not None, 10)
            await mod.press("q")  # the owner is asked first: leaving ends the room
            assert moderator.return_code is None
            await mod.press("y")
            await lab.until(lambda: moderator.return_code is not None, 10)
        assert (listener.return_code, moderator.return_code) == (0, 0)
        assert listener.session is not None and listener.session.left is not None
        assert listener.session.left.reason == "leave"
        assert host.left is not None and host.state.ended  # the owner leaving ends the room


async def test_removed_and_ended_listeners_are_told_why_and_exit_with_its_code(tmp_path):
    async with Lab(tmp_path) as lab:
        host = await lab.host("Mod", hz=None, record=False)
        moderator = ConsoleApp(opener_of(host))
        ann, ben = ConsoleApp(joiner(lab, "Ann")), ConsoleApp(joiner(lab, "Ben"))
        async with (moderator.run_test(size=SIZE) as mod, ann.run_test(size=SIZE) as a,
                    ben.run_test(size=SIZE) as b):
            await lab.until(lambda: moderator.view.audience_count == 2, 15)
            await mod.press("tab", "tab")  # stage, hand queue, audience: Ann first by name
            await mod.press("r")
            await lab.until(lambda: ann.view.phase is Phase.ENDED, 10)
            assert "A moderator removed you from the room." in app_text(ann, EndPanel)
            assert "Press q to close." in app_text(ann, EndPanel)
            await a.press("q")
            await lab.until(lambda: ann.return_code is not None, 5)

            await mod.press("e")  # asks first
            await mod.press("y")
            await lab.until(lambda: ben.view.phase is Phase.ENDED, 10)
            assert "The room has ended." in app_text(ben, EndPanel)
            assert "p2pvoix rooms" in app_text(ben, EndPanel)
            await lab.until(lambda: moderator.return_code is not None, 10)  # its own doing
            await b.press("q")
            await lab.until(lambda: ben.return_code is not None, 5)
        assert (ann.return_code, ben.return_code, moderator.return_code) == (4, 0, 0)


async def test_a_room_that_cannot_be_found_says_what_to_do_and_exits_3(tmp_path):
    async with Lab(tmp_path) as lab:
        node = await lab.node("alone")
        nowhere = RoomKey(SigningKey(os.urandom(32)).public)
        app = ConsoleApp(lambda progress: RoomSession.join(node, nowhere, timeout=1.0))
        async with app.run_test(size=SIZE) as pilot:
            await lab.until(lambda: app.view.phase is Phase.ENDED, 10)
            text = app_text(app, EndPanel)
            assert "No live room with that key was found" in text and "--bootstrap" in text
            await pilot.press("q")
            await lab.until(lambda: app.return_code is not None, 5)
        assert app.return_code == 3


async def test_quitting_while_joining_stops_the_join_and_exits_130():
    cancelled = asyncio.Event()

    async def open_forever(progress):  # type: ignore[no-untyped-def]
        progress("Finding the room…")
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    app = ConsoleApp(open_forever)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "… Finding the room…" in app_text(app, ProgressPanel)
        await pilot.press("ctrl+c")
        await asyncio.wait_for(cancelled.wait(), 5)
        await pilot.pause()
    assert app.return_code == 130


def test_rows_show_names_as_typed_with_badges_and_states() -> None:
    someone = SigningKey(bytes(32)).public
    assert row(Person(someone, "[b]Eve[/b]", Role.AUDIENCE, hand=True, invited=True),
               "audience", 1).plain == "[b]Eve[/b] ✋ invited"  # a name is never markup
    assert row(Person(someone, "Bo", Role.MODERATOR, me=True, speaking=True, muted=True,
                      locked=True, present=False), "stage", 1).plain == (
        "◉ Bo (you) mod muted (locked) (away)")
    assert row(Person(someone, "Chen", Role.AUDIENCE, hand=True, waited_s=125), "hands",
               3).plain == "3. Chen  2:05"
