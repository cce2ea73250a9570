"""The console's view model: room events and state in, what the widgets draw out — no textual."""

from __future__ import annotations

import subprocess
import sys

import pytest

from p2pvoix.cli.live import EXIT_CODES
from p2pvoix.console.model import AUDIENCE_SHOWN, ConsoleModel, Phase
from p2pvoix.room import Op, Role
from p2pvoix.session.events import (
    ActionRefused,
    FirstAudio,
    Joined,
    Left,
    SpeakingStarted,
    SpeakingStopped,
)
from p2pvoix.session.presence import ParticipantJoined, ParticipantLeft
from tests.room.helpers import MODS, OWNER, PEOPLE, Room

NAMES = {OWNER.public: "Amina", MODS[0].public: "Bo", PEOPLE[0].public: "Chen",
         PEOPLE[1].public: "Dee", PEOPLE[2].public: "[b]Eve"}


def model_for(me=OWNER, name: str | None = None) -> ConsoleModel:  # type: ignore[no-untyped-def]
    model = ConsoleModel(EXIT_CODES)
    model.progress("Finding the room…")
    model.opened(me.public, name or NAMES[me.public], share="pv1share")
    return model


def present(*keys) -> dict:  # type: ignore[no-untyped-def]
    return {key.public: NAMES[key.public] for key in keys}


def feed(model: ConsoleModel, sequenced) -> None:  # type: ignore[no-untyped-def]
    for event in sequenced.events:
        model.apply(event)


def test_opening_shows_each_step_ticked_when_the_next_begins() -> None:
    model = ConsoleModel(EXIT_CODES, notices=("no microphone found",))
    model.progress("Finding the room…")
    model.progress("Found the room (1 peer); connecting and syncing its log…")
    view = model.view(None, {}, 0)
    assert view.phase is Phase.OPENING and view.me is None
    assert [(s.text[:5], s.done) for s in view.steps] == [("Findi", True), ("Found", False)]
    assert view.log == ("note: no microphone found",)

    model.progress("Joined. Waiting for the first audio from the stage…")
    model.opened(PEOPLE[0].public, "Chen", share="pv1key")
    room = Room()
    model.apply(ParticipantJoined(OWNER.public, "Amina"))
    model.apply(FirstAudio(OWNER.public))
    view = model.view(room.log.state, present(OWNER), room.now)
    assert view.phase is Phase.LIVE and view.share == "pv1key"
    assert view.status == "Hearing Amina." and all(step.done for step in view.steps)


def test_a_failed_opening_ends_with_the_errors_message_and_exit_code() -> None:
    model = ConsoleModel(EXIT_CODES)
    model.progress("Finding the room…")
    model.failed("No live room with that key was found. Check the key…", 3)
    view = model.view(None, {}, 0)
    assert view.phase is Phase.ENDED
    assert view.ending is not None and view.ending.exit_code == 3
    assert view.ending.headline.startswith("No live room")


def test_a_moderator_sees_the_stage_the_audience_and_the_hand_queue_in_order() -> None:
    room = Room()
    room.staff(moderators=1, speakers=1)  # Bo moderates, Chen speaks
    model = model_for(OWNER)
    model.apply(ParticipantJoined(PEOPLE[2].public, "[b]Eve"))
    for person in (PEOPLE[2], PEOPLE[1]):  # Eve's hand first, then Dee's
        feed(model, room.ok(person, Op.RAISE_HAND))
    feed(model, room.ok(OWNER, Op.MUTE, target=PEOPLE[0].public, lock=True))
    model.apply(SpeakingStarted(MODS[0].public))
    room.tick(65_000)

    view = model.view(room.log.state, present(MODS[0], PEOPLE[0], PEOPLE[1], PEOPLE[2]), room.now)
    assert view.staff and view.title == "Morning show" and view.tags == ("news", "talk")
    assert [(p.name, p.role, p.me) for p in view.stage] == [
        ("Amina", Role.OWNER, True), ("Bo", Role.MODERATOR, False), ("Chen", Role.SPEAKER, False)]
    assert [p.speaking for p in view.stage] == [False, True, False]
    chen = view.stage[2]
    assert chen.muted and chen.locked
    assert [(p.name, p.hand) for p in view.audience] == [("[b]Eve", True), ("Dee", True)]
    assert view.audience_count == 2
    assert [p.name for p in view.hands] == ["[b]Eve", "Dee"]
    assert [p.waited_s for p in view.hands] == [67, 66]  # each action ticks 1 s

    model.apply(SpeakingStopped(MODS[0].public))
    assert not model.view(room.log.state, {}, room.now).stage[1].speaking


def test_a_listener_sees_its_own_hand_place_invitation_and_mute() -> None:
    room = Room()
    model = model_for(PEOPLE[1])
    feed(model, room.ok(PEOPLE[0], Op.RAISE_HAND))
    feed(model, room.ok(PEOPLE[1], Op.RAISE_HAND))
    view = model.view(room.log.state, present(OWNER, PEOPLE[0]), room.now)
    assert not view.staff and view.me is not None
    assert view.me.role is Role.AUDIENCE and view.me.hand and view.hand_place == 2
    assert view.audience[0].me  # oneself first, then the others by name
    assert view.audience_count == 2

    feed(model, room.ok(OWNER, Op.INVITE, target=PEOPLE[1].public))
    view = model.view(room.log.state, present(OWNER, PEOPLE[0]), room.now)
    assert view.me is not None and view.me.invited and not view.me.hand
    assert view.hand_place is None

    feed(model, room.ok(PEOPLE[1], Op.ACCEPT_INVITE))
    view = model.view(room.log.state, present(OWNER, PEOPLE[0]), room.now)
    assert view.me is not None and view.me.role is Role.SPEAKER and view.me.on_stage
    assert view.me.muted and not view.me.locked  # speakers come up muted
    assert [p.name for p in view.stage] == ["Amina", "Dee"]
    assert "* Dee is now speaker" in view.log


def test_a_stage_member_who_left_keeps_their_name_and_shows_as_away() -> None:
    room = Room()
    room.staff(moderators=0, speakers=1)
    model = model_for(OWNER)
    model.apply(ParticipantJoined(PEOPLE[0].public, "Chen"))
    model.apply(SpeakingStarted(PEOPLE[0].public))
    model.apply(ParticipantLeft(PEOPLE[0].public, "Chen", "left"))
    chen = model.view(room.log.state, {}, room.now).stage[1]
    assert (chen.name, chen.present, chen.speaking) == ("Chen", False, False)
    assert model.name_of(PEOPLE[5].public).startswith("anon-")


@pytest.mark.parametrize("reason", sorted(EXIT_CODES))
def test_every_way_of_leaving_ends_with_its_exit_code(reason: str) -> None:
    model = model_for(PEOPLE[0])
    model.apply(Left(reason))
    view = model.view(Room().log.state, {}, 0)
    assert view.phase is Phase.ENDED and view.ending is not None
    assert view.ending.reason == reason and view.ending.exit_code == EXIT_CODES[reason]
    assert view.ending.headline
    assert bool(view.ending.advice) == (reason != "leave")  # say what to do next
    assert view.ending.by_me == (reason == "leave")


def test_an_unknown_end_is_a_failure() -> None:
    model = model_for(PEOPLE[0])
    model.apply(Left("mystery"))
    assert model.ending is not None and model.ending.exit_code == 1


def test_a_refusal_from_the_room_names_the_action_and_whom_it_was_for() -> None:
    model = model_for(OWNER)
    model.apply(ParticipantJoined(PEOPLE[0].public, "Chen"))
    model.sending(Op.INVITE, "Chen")
    model.apply(ActionRefused("invite", "stage-full"))
    view = model.view(Room().log.state, {}, 0)
    assert view.refusal == "Cannot invite Chen to speak: the stage is full."
    assert view.log[-1] == "! " + view.refusal
    model.sending(Op.RAISE_HAND)
    assert model.view(None, {}, 0).refusal == ""  # a new action clears the old refusal


def test_everyone_else_timing_out_means_our_connection_is_lost() -> None:
    room = Room()
    listener = model_for(PEOPLE[0])
    listener.apply(ParticipantJoined(OWNER.public, "Amina"))
    assert not listener.view(room.log.state, present(OWNER), room.now).lost
    listener.apply(ParticipantLeft(OWNER.public, "Amina", "timeout"))
    assert listener.view(room.log.state, {}, room.now).lost
    listener.apply(ParticipantJoined(OWNER.public, "Amina"))
    assert not listener.view(room.log.state, present(OWNER), room.now).lost

    host = model_for(OWNER)  # the sequencer is the room: it is the others who are gone
    host.apply(ParticipantLeft(PEOPLE[0].public, "Chen", "timeout"))
    assert not host.view(room.log.state, {}, room.now).lost

    polite = model_for(PEOPLE[0])
    polite.apply(ParticipantLeft(OWNER.public, "Amina", "left"))
    assert not polite.view(room.log.state, {}, room.now).lost


def test_the_log_keeps_sentences_not_speaking_blips_and_counts_them() -> None:
    model = model_for(PEOPLE[0])
    model.apply(Joined(OWNER.public, "Morning show", "audience"))
    model.apply(SpeakingStarted(OWNER.public))
    model.apply(ParticipantJoined(PEOPLE[1].public, "Dee"))
    view = model.view(None, {}, 0)
    assert view.log == ("Joined “Morning show” as audience.", "+ Dee joined")
    assert view.log_total == 2
    for n in range(300):
        model.note(str(n))
    view = model.view(None, {}, 0)
    assert view.log_total == 302 and view.log[-1] == "note: 299" and len(view.log) < 302


def test_a_huge_audience_is_counted_and_listed_up_to_a_bound() -> None:
    from p2pvoix.crypto.keys import SigningKey

    room = Room()
    people = {SigningKey((3000 + n).to_bytes(2, "big") * 16).public: f"p{n}"
              for n in range(AUDIENCE_SHOWN + 50)}
    view = model_for(OWNER).view(room.log.state, people, room.now)
    assert view.audience_count == AUDIENCE_SHOWN + 50
    assert len(view.audience) == AUDIENCE_SHOWN


@pytest.mark.parametrize("module", ["p2pvoix.console.model", "p2pvoix.console.refusals"])
def test_the_model_is_pure(module: str) -> None:
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "print(','.join(m for m in ('asyncio', 'textual', 'trio', 'aiortc', 'libp2p') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_ending_the_room_oneself_needs_no_explaining() -> None:
    ended = Room().ok(OWNER, Op.END_ROOM)
    host, listener = model_for(OWNER), model_for(PEOPLE[0])
    for model in (host, listener):
        feed(model, ended)
        model.apply(Left("ended"))
    assert host.ending is not None and host.ending.by_me
    assert host.ending.headline == "You ended the room." and host.ending.exit_code == 0
    assert listener.ending is not None and not listener.ending.by_me
    assert listener.ending.headline == "The room has ended."
