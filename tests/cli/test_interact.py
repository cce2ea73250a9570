"""Command lines and event rendering of the JSON/text interface, without any network."""

import json

import pytest

from p2pvoix.cli.interact import (
    Command,
    CommandError,
    event_json,
    event_text,
    jsonable,
    parse_command,
    resolve,
)
from p2pvoix.crypto.keys import SigningKey
from p2pvoix.room import HandRaised, Role, RoleChanged

AMINA, AMIR, YOUSSEF = (SigningKey(bytes([i] * 32)).public for i in (1, 2, 3))
PEOPLE = [(AMINA, "Amina"), (AMIR, "Amir"), (YOUSSEF, "Youssef")]


@pytest.mark.parametrize(("line", "command"), [
    ('{"cmd": "raise_hand"}', Command("raise_hand")),
    ("raise", Command("raise_hand")),
    ("invite Youssef", Command("invite", "Youssef")),
    ('{"cmd": "invite", "who": "Amina"}', Command("invite", "Amina")),
    ("mute", Command("mute")),
    ("mute Amir --lock", Command("mute_other", "Amir", True)),
    ('{"cmd": "mute", "who": "Amir", "lock": true}', Command("mute_other", "Amir", True)),
    ("   ", None),
])
def test_commands(line, command):
    assert parse_command(line) == command


@pytest.mark.parametrize("line", [
    "fly", '{"cmd": 3}', "{not json", '["raise_hand"]', "invite", "raise_hand Amina",
    '{"cmd": "invite", "who": 5}', "x" * 5000,
])
def test_bad_commands_are_explained(line):
    with pytest.raises(CommandError):
        parse_command(line)


def test_resolve_names_fingerprints_and_peer_ids():
    assert resolve("youssef", PEOPLE) == YOUSSEF
    assert resolve(AMIR.peer_id, PEOPLE) == AMIR
    assert resolve(AMINA.fingerprint[:6], PEOPLE) == AMINA
    with pytest.raises(CommandError, match="matches 2"):
        resolve("Am", PEOPLE)
    with pytest.raises(CommandError, match="nobody"):
        resolve("Zineb", PEOPLE)


def test_events_as_json_and_text():
    names = dict((k, n) for k, n in PEOPLE).get
    data = event_json(HandRaised(AMINA, 4, 1000), names)
    assert data == {"type": "hand_raised", "identity": {"id": AMINA.peer_id, "name": "Amina"},
                    "seq": 4, "at_ms": 1000}
    change = RoleChanged(AMIR, Role.AUDIENCE, Role.SPEAKER, AMINA)
    assert event_json(change, names)["new"] == "speaker"
    assert event_text(change, names) == "* Amir is now speaker"


def test_statistics_keyed_by_identity_bytes_become_json():
    names = dict((k, n) for k, n in PEOPLE).get
    figures = {"fanout": {AMINA.raw: 2}, "by_key": {AMIR: 1}, "role": Role.SPEAKER}
    assert json.loads(json.dumps(jsonable(figures, names))) == {
        "fanout": {AMINA.raw.hex(): 2}, "by_key": {AMIR.peer_id: 1}, "role": "speaker"}
