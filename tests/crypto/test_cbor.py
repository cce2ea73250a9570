"""Canonical CBOR: one encoding per value, everything else refused with a reason."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.crypto import cbor
from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(values)
def test_round_trip_is_identity_and_bytes_are_stable(value):
    encoded = cbor.encode(value)
    decoded = cbor.decode(encoded, max_size=1 << 20)
    assert cbor.encode(decoded) == encoded


def test_map_keys_are_in_rfc8949_bytewise_order():
    # "b" (0x61 0x62) sorts before "aa" (0x62 0x61 0x61): shorter encodings first.
    assert cbor.encode({"aa": 1, "b": 2}).hex() == "a2616202626161" + "01"


@pytest.mark.parametrize(
    ("hex_bytes", "reason"),
    [
        ("1801", EnvelopeReason.NOT_CANONICAL),  # 1 in a two-byte form
        ("a2616201616102", EnvelopeReason.NOT_CANONICAL),  # keys out of order
        ("a2616101616102", EnvelopeReason.MALFORMED),  # duplicate key
        ("9f01ff", EnvelopeReason.MALFORMED),  # indefinite-length array
        ("f93c00", EnvelopeReason.MALFORMED),  # half float 1.0
        ("c11a514b67b0", EnvelopeReason.MALFORMED),  # tag 1 (epoch time)
        ("a1016178", EnvelopeReason.MALFORMED),  # integer map key
        ("0102", EnvelopeReason.NOT_CANONICAL),  # trailing bytes after one item
        ("62ff", EnvelopeReason.MALFORMED),  # truncated text
        ("62c328", EnvelopeReason.MALFORMED),  # invalid UTF-8
        ("", EnvelopeReason.MALFORMED),
        ("f7", EnvelopeReason.MALFORMED),  # undefined
    ],
)
def test_non_canonical_or_unsupported_encodings_are_refused(hex_bytes, reason):
    with pytest.raises(EnvelopeError) as caught:
        cbor.decode(bytes.fromhex(hex_bytes), max_size=100)
    assert caught.value.reason == reason


def test_depth_and_size_caps():
    nested = bytes.fromhex("81" * 20 + "00")
    with pytest.raises(EnvelopeError) as caught:
        cbor.decode(nested, max_size=100)
    assert caught.value.reason == EnvelopeReason.TOO_DEEP
    with pytest.raises(EnvelopeError) as caught:
        cbor.decode(b"\x40" * 101, max_size=100)
    assert caught.value.reason == EnvelopeReason.TOO_LARGE
    # Very deep input is refused without recursion trouble.
    with pytest.raises(EnvelopeError):
        cbor.decode(b"\x81" * 100_000 + b"\x00", max_size=1 << 20)


def test_local_misuse_raises_plain_errors():
    with pytest.raises(TypeError):
        cbor.encode({"x": 1.5})
    with pytest.raises(TypeError):
        cbor.encode({1: "integer keys are not in the model"})
    with pytest.raises(TypeError):
        cbor.encode(2**64)
