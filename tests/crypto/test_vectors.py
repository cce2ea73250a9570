"""Test vectors of docs/protocol/envelope.md and room-key.md, checked both ways."""

import json
import pathlib

import pytest

from p2pvoix.crypto import cbor
from p2pvoix.crypto.envelope import CONTEXT, open_envelope, seal
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.crypto.roomkey import RoomKey, RoomKeyError, TcpAddress
from tests.vectors.kinds import NOTE, PROFILE

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "vectors"
ENVELOPES = json.loads((VECTORS / "envelope.json").read_text())
ROOM_KEYS = json.loads((VECTORS / "room-key.json").read_text())
KINDS = {spec.name: spec for spec in (NOTE, PROFILE)}


def test_context_string():
    assert bytes.fromhex(ENVELOPES["context"]) == CONTEXT == b"p2pvoix/envelope/v1\x00"


@pytest.mark.parametrize("vector", ENVELOPES["valid"], ids=lambda v: v["name"])
def test_valid_envelope_decodes_and_verifies(vector):
    spec = KINDS[vector["kind"]]
    room = bytes.fromhex(vector["room"]) if vector["room"] else None
    envelope = open_envelope(bytes.fromhex(vector["envelope"]), spec, room=room)
    assert envelope.signer.raw.hex() == vector["signer"]
    assert cbor.encode(envelope.body).hex() == vector["body_cbor"]
    assert envelope.time == vector["time"] and envelope.room == room
    assert envelope.digest.hex() == vector["digest"]
    assert envelope.signer.verify(bytes.fromhex(vector["signed_bytes"]), envelope.signature)


@pytest.mark.parametrize("vector", ENVELOPES["valid"], ids=lambda v: v["name"])
def test_valid_envelope_is_reproduced_byte_for_byte(vector):
    spec = KINDS[vector["kind"]]
    body = cbor.decode(bytes.fromhex(vector["body_cbor"]), max_size=4096)
    room = bytes.fromhex(vector["room"]) if vector["room"] else None
    key = SigningKey(bytes.fromhex(vector["signer_seed"]))
    envelope = seal(spec, key, body, room=room, time=vector["time"])
    assert envelope.encoded.hex() == vector["envelope"]


@pytest.mark.parametrize("vector", ENVELOPES["invalid"], ids=lambda v: v["name"])
def test_invalid_envelope_is_refused_for_the_documented_reason(vector):
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(bytes.fromhex(vector["envelope"]), KINDS[vector["kind"]])
    assert caught.value.reason == vector["reason"]


@pytest.mark.parametrize("vector", ROOM_KEYS["valid"], ids=lambda v: v["name"])
def test_room_key_vectors_both_ways(vector):
    parsed = RoomKey.parse(vector["text"])
    assert parsed.raw.hex() == vector["room_key"]
    assert parsed.raw == SigningKey(bytes.fromhex(vector["room_seed"])).public.raw
    assert (parsed.host.raw.hex() if parsed.host else None) == vector["host"]
    assert [[a.host, a.port] for a in parsed.addresses] == vector["addresses"]
    built = RoomKey(
        PublicKey(bytes.fromhex(vector["room_key"])),
        PublicKey(bytes.fromhex(vector["host"])) if vector["host"] else None,
        tuple(TcpAddress(host, port) for host, port in vector["addresses"]),
    )
    assert built.text() == vector["text"]


@pytest.mark.parametrize("vector", ROOM_KEYS["invalid"], ids=lambda v: v["name"])
def test_room_key_invalid_vectors(vector):
    with pytest.raises(RoomKeyError) as caught:
        RoomKey.parse(vector["text"])
    assert caught.value.reason == vector["reason"]
    if "position" in vector:
        assert caught.value.position == vector["position"]


def test_the_spec_quotes_the_current_vectors():
    docs = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol"
    room_key_doc = (docs / "room-key.md").read_text()
    for vector in ROOM_KEYS["valid"][:2]:
        assert vector["text"] in room_key_doc
    envelope_doc = (docs / "envelope.md").read_text()
    assert ENVELOPES["context"] in envelope_doc
