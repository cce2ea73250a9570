"""The signed envelope: strict decoding, verification and domain separation."""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from p2pvoix.crypto import cbor
from p2pvoix.crypto.envelope import CONTEXT, KindSpec, open_envelope, seal
from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason
from p2pvoix.crypto.keys import SigningKey
from p2pvoix.crypto.schema import Bytes, Int, ListOf, Schema, Text

NOTE = KindSpec(
    name="test.note",
    body=Schema(
        required={"text": Text(max=200), "n": Int()},
        optional={"tags": ListOf(Text(max=16), max=4), "blob": Bytes(max=64)},
    ),
    room=True,
    time=True,
    max_size=1024,
)
OTHER = KindSpec(name="test.other", body=NOTE.body, room=True, time=True, max_size=1024)
PLAIN = KindSpec(name="test.plain", body=Schema(required={"n": Int()}))

ALICE = SigningKey(bytes(range(32)))
MALLORY = SigningKey(bytes(range(1, 33)))
ROOM = SigningKey(bytes([7] * 32)).public.raw
OTHER_ROOM = SigningKey(bytes([8] * 32)).public.raw

bodies = st.fixed_dictionaries(
    {"text": st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs"]), max_size=50),
     "n": st.integers(0, 2**63 - 1)},
    optional={"tags": st.lists(st.text(st.characters(categories=["Ll"]), max_size=16), max_size=4),
              "blob": st.binary(max_size=64)},
).map(lambda b: _nfc(b))


def _nfc(body: dict) -> dict:
    """Text fields as the schema requires them (Unicode NFC): tags too — CI once drew "ά", a
    lowercase letter whose NFC form is another code point."""
    normal = __import__("unicodedata").normalize
    body = {**body, "text": normal("NFC", body["text"])}
    if "tags" in body:
        body["tags"] = [normal("NFC", tag) for tag in body["tags"]]
    return body


def sealed(body=None, **kw):
    args = {"room": ROOM, "time": 1_700_000_000_000, **kw}
    return seal(NOTE, ALICE, body or {"text": "hello", "n": 1}, **args)


@given(bodies, st.integers(0, 2**63 - 1))
@example(_nfc({"text": "", "n": 0, "tags": ["\u1f71"]}), 0)  # the CI find
def test_round_trip(body, time):
    envelope = seal(NOTE, ALICE, body, room=ROOM, time=time)
    opened = open_envelope(envelope.encoded, NOTE, room=ROOM)
    assert opened == envelope
    assert opened.body == body and opened.time == time and opened.signer == ALICE.public


def test_every_single_bit_flip_is_rejected():
    encoded = sealed().encoded
    for index in range(len(encoded) * 8):
        flipped = bytearray(encoded)
        flipped[index // 8] ^= 1 << (index % 8)
        with pytest.raises(EnvelopeError):
            open_envelope(bytes(flipped), NOTE, room=ROOM)


@given(st.data())
def test_random_bit_flips_of_random_envelopes_are_rejected(data):
    envelope = seal(NOTE, ALICE, data.draw(bodies), room=ROOM, time=5)
    index = data.draw(st.integers(0, len(envelope.encoded) * 8 - 1))
    flipped = bytearray(envelope.encoded)
    flipped[index // 8] ^= 1 << (index % 8)
    with pytest.raises(EnvelopeError):
        open_envelope(bytes(flipped), NOTE, room=ROOM)


def resign(value, key=ALICE):
    """Re-sign a hand-built map, so a test reaches the check after the signature."""
    unsigned = {k: v for k, v in value.items() if k != "x"}
    return cbor.encode({**unsigned, "x": key.sign(CONTEXT + cbor.encode(unsigned))})


def decoded_map():
    return cbor.decode(sealed().encoded, max_size=4096)


def reason_of(data, kinds=NOTE, **kw):
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(data, kinds, **kw)
    return caught.value.reason


def test_a_signature_for_one_kind_is_not_valid_for_another():
    value = decoded_map()
    value["k"] = "test.other"  # same body and signature, other purpose
    assert reason_of(cbor.encode(value), [NOTE, OTHER]) == EnvelopeReason.BAD_SIGNATURE


def test_a_signature_for_one_room_is_not_valid_for_another():
    value = decoded_map()
    value["r"] = OTHER_ROOM
    assert reason_of(cbor.encode(value), NOTE) == EnvelopeReason.BAD_SIGNATURE
    # Validly signed for another room: refused by the room check.
    other = seal(NOTE, ALICE, {"text": "x", "n": 1}, room=OTHER_ROOM, time=1)
    assert reason_of(other.encoded, NOTE, room=ROOM) == EnvelopeReason.WRONG_ROOM


def test_signer_substitution_is_refused():
    value = decoded_map()
    value["s"] = MALLORY.public.raw
    assert reason_of(cbor.encode(value)) == EnvelopeReason.BAD_SIGNATURE
    assert reason_of(sealed().encoded, signer=MALLORY.public) == EnvelopeReason.WRONG_SIGNER


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda v: v.update(z=1), EnvelopeReason.UNKNOWN_FIELD),
        (lambda v: v["b"].update(extra=1), EnvelopeReason.UNKNOWN_FIELD),
        (lambda v: v["b"].pop("n"), EnvelopeReason.MISSING_FIELD),
        (lambda v: v.pop("t"), EnvelopeReason.MISSING_FIELD),
        (lambda v: v.update(n=3), EnvelopeReason.UNKNOWN_FIELD),  # NOTE has no sequence
        (lambda v: v.update(k="test.nope"), EnvelopeReason.UNKNOWN_KIND),
        (lambda v: v.update(v=2), EnvelopeReason.UNKNOWN_VERSION),
        (lambda v: v.update(s=b"\1" * 31), EnvelopeReason.BAD_KEY),
        (lambda v: v.update(r=b"\1" * 31), EnvelopeReason.BAD_FIELD),
        (lambda v: v["b"].update(n=-1), EnvelopeReason.BAD_FIELD),
        (lambda v: v["b"].update(text="a\x00b"), EnvelopeReason.BAD_FIELD),
        (lambda v: v["b"].update(text="e\u0301"), EnvelopeReason.BAD_FIELD),  # not NFC
        (lambda v: v.update(t=True), EnvelopeReason.BAD_FIELD),
        (lambda v: v.update(b=[1]), EnvelopeReason.BAD_FIELD),
    ],
)
def test_strict_fields_even_when_correctly_signed(change, reason):
    value = decoded_map()
    change(value)
    assert reason_of(resign(value)) == reason


def test_size_caps_per_kind():
    body = {"text": "x" * 200, "n": 1, "tags": ["y" * 16] * 4, "blob": b"z" * 64}
    small = KindSpec(name="test.note", body=NOTE.body, room=True, time=True, max_size=300)
    big = seal(NOTE, ALICE, body, room=ROOM, time=1)
    assert reason_of(big.encoded, small) == EnvelopeReason.TOO_LARGE
    assert reason_of(b"\xa0" + b"\x00" * 5000, NOTE) == EnvelopeReason.TOO_LARGE


def test_bad_signature_and_bad_key_point():
    value = decoded_map()
    value["x"] = bytes(64)
    assert reason_of(cbor.encode(value)) == EnvelopeReason.BAD_SIGNATURE
    value = decoded_map()
    value["s"] = bytes(32)  # a small-order point: never a valid signer
    assert reason_of(resign(value)) == EnvelopeReason.BAD_SIGNATURE


def test_sealing_what_open_would_refuse_is_a_local_error():
    with pytest.raises(ValueError):
        seal(NOTE, ALICE, {"text": "x"}, room=ROOM, time=1)  # missing n
    with pytest.raises(ValueError):
        seal(NOTE, ALICE, {"text": "x", "n": 1}, time=1)  # NOTE is room-bound
    with pytest.raises(ValueError):
        seal(PLAIN, ALICE, {"n": 1}, seq=4)  # PLAIN has no sequence


def test_digest_is_stable_and_distinct():
    a, b = sealed(), sealed({"text": "hello", "n": 2})
    assert a.digest == sealed().digest and a.digest != b.digest
