"""The authority vectors in tests/vectors/authority, checked both ways: the stored bytes decode and
verify to the stored fields, and signing the stored fields with the stored seeds gives the bytes."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.room import (
    Accepted,
    Genesis,
    Op,
    RoomLog,
    RoomRejected,
    Settings,
    create_room,
    decode_snapshot,
    sign_action,
    sign_entry,
    state_digest,
)
from p2pvoix.room.ops import OP_PARAMS
from p2pvoix.room.wire import (
    CHECKPOINT,
    ENTRY,
    Action,
    Checkpoint,
    Entry,
    open_room_message,
    sign_checkpoint,
)

VECTORS = pathlib.Path(__file__).parents[1] / "vectors" / "authority"


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{name}.json").read_text())


SEEDS = load("genesis")["seeds"]
KEYS = {name: SigningKey(bytes.fromhex(seed)) for name, seed in SEEDS.items()}
GENESIS = load("genesis")["genesis"]
ROOM = KEYS["room"].public.raw


def test_genesis_both_ways() -> None:
    data = bytes.fromhex(GENESIS["encoded"])
    genesis = Genesis.decode(data, ROOM)
    assert genesis.owner == KEYS["owner"].public
    assert (genesis.title, list(genesis.tags), genesis.language) == (
        GENESIS["title"], GENESIS["tags"], GENESIS["lang"])
    assert genesis.settings.to_wire() == GENESIS["settings"]
    assert genesis.created_ms == GENESIS["created_ms"]
    assert genesis.digest.hex() == GENESIS["digest"]
    again = create_room(KEYS["room"], KEYS["owner"].public, title=GENESIS["title"],
                        language=GENESIS["lang"], tags=GENESIS["tags"],
                        settings=Settings.from_wire(GENESIS["settings"]),
                        now_ms=GENESIS["created_ms"])
    assert again.encoded == data


@pytest.mark.parametrize("vector", load("actions")["actions"], ids=lambda v: v["op"])
def test_actions_both_ways(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["encoded"])
    action = Action.decode(data, ROOM)
    assert action.actor == KEYS[vector["signer"]].public
    assert action.op == vector["op"] and action.time_ms == vector["time_ms"]
    assert action.envelope.body["nonce"].hex() == vector["nonce"]
    params = vector["params"]
    assert set(params) == OP_PARAMS[Op(vector["op"])]
    kwargs: dict[str, Any] = {}
    if "to" in params:
        assert action.target == KEYS[params["to"]].public
        kwargs["target"] = KEYS[params["to"]].public
    if "lock" in params:
        assert action.lock is params["lock"]
        kwargs["lock"] = params["lock"]
    if "title" in params:
        kwargs.update(title=params["title"], tags=params["tags"], language=params["lang"])
    again = sign_action(KEYS[vector["signer"]], ROOM, Op(vector["op"]), now_ms=vector["time_ms"],
                        nonce=bytes.fromhex(vector["nonce"]), **kwargs)
    assert again.encoded == data and again.digest.hex() == vector["digest"]


@pytest.mark.parametrize("vector", [*load("entries")["entries"], load("takeover")["takeover"]],
                         ids=lambda v: str(v["seq"]))
def test_entries_both_ways(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["encoded"])
    entry = open_room_message(data, ENTRY, ROOM)
    assert isinstance(entry, Entry)
    assert entry.sequencer == KEYS[vector["signer"]].public
    assert (entry.seq, entry.time_ms, entry.prev.hex(), entry.epoch) == (
        vector["seq"], vector["time_ms"], vector["prev"], vector["epoch"])
    action = Action.decode(bytes.fromhex(vector["action"]), ROOM) if "action" in vector else None
    assert entry.action == action
    again = sign_entry(KEYS[vector["signer"]], ROOM, seq=vector["seq"], now_ms=vector["time_ms"],
                       prev=bytes.fromhex(vector["prev"]), epoch=vector["epoch"], action=action)
    assert again.encoded == data and again.digest.hex() == vector["digest"]


def test_entries_chain_from_the_genesis() -> None:
    entries = load("entries")["entries"]
    assert entries[0]["prev"] == GENESIS["digest"]
    for before, after in zip(entries, [*entries[1:], load("takeover")["takeover"]], strict=True):
        assert after["prev"] == before["digest"] and after["seq"] == before["seq"] + 1


def test_checkpoint_both_ways() -> None:
    vector = load("checkpoint")["checkpoint"]
    data = bytes.fromhex(vector["encoded"])
    checkpoint = open_room_message(data, CHECKPOINT, ROOM)
    assert isinstance(checkpoint, Checkpoint)
    assert (checkpoint.seq, checkpoint.head.hex(), checkpoint.snapshot.hex()) == (
        vector["seq"], vector["head"], vector["snapshot"])
    assert state_digest(decode_snapshot(checkpoint.snapshot)).hex() == vector["state_digest"]
    again = sign_checkpoint(KEYS["room"], seq=vector["seq"], head=bytes.fromhex(vector["head"]),
                            snapshot=bytes.fromhex(vector["snapshot"]), now_ms=vector["time_ms"])
    assert again.encoded == data and again.digest.hex() == vector["digest"]


def test_replaying_the_vectors_reaches_the_stored_head_and_state() -> None:
    expected = load("log")["log"]
    genesis = Genesis.decode(bytes.fromhex(GENESIS["encoded"]), ROOM)
    late = RoomLog(genesis)
    full = RoomLog(genesis)
    takeover = load("takeover")["takeover"]
    now = takeover["time_ms"]
    for vector in [*load("entries")["entries"], takeover]:
        assert isinstance(full.receive(bytes.fromhex(vector["encoded"]), now), Accepted)
    checkpoint = load("checkpoint")["checkpoint"]
    assert isinstance(late.receive(bytes.fromhex(checkpoint["encoded"]), now), Accepted)
    assert isinstance(late.receive(bytes.fromhex(takeover["encoded"]), now), Accepted)
    for log in (full, late):
        assert log.head.hex() == expected["head"]
        assert state_digest(log.state).hex() == expected["state_digest"]
        assert log.state.sequencer == KEYS[expected["sequencer"]].public
        assert log.state.epoch == expected["epoch"]
        refused = log.receive(bytes.fromhex(expected["refused"]["encoded"]), now)
        assert isinstance(refused, RoomRejected) and refused.reason == expected["refused"]["reason"]


def test_the_generator_reproduces_the_files() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build()
    for name in ("genesis", "actions", "entries", "takeover", "checkpoint", "log"):
        assert load(name)[name] == built[name], name
