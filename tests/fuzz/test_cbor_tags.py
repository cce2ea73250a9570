"""CBOR tags are outside the data model, and refusing one must cost no more than reading its bytes.

cbor2 decodes about twenty tags by itself; two of them ran attacker-sized work before the data
model check could refuse the result: tag 35 compiled a regular expression (about 1 s for a 1 MiB
checkpoint-sized message, and ``re`` kept the compiled pattern in its cache, about 10 MiB each),
tag 36 parsed a MIME message. The decoder now refuses every tag as it meets it.
"""

import re

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.crypto import cbor
from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason
from p2pvoix.room.wire import CHECKPOINT_MAX_SIZE
from tests.fuzz.harness import fuzz, outcome
from tests.fuzz.shapes import cbor_values

# The tags cbor2 6 decodes itself (found by decoding CBORTag(n, 0) for every n below 70 000).
SEMANTIC_TAGS = [0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
                 1004, 43000, 55799]
BIG = CHECKPOINT_MAX_SIZE - 64  # the largest message a room log reads
PAYLOADS = {
    35: "|".join(f"a{i}" for i in range(BIG // 8)),  # a regular expression: compiled
    36: "Content-Type: multipart/mixed; boundary=x\n\n" + "--x\n\n" * (BIG // 6),  # MIME: parsed
    4: [2**62, 2**62],  # a decimal fraction with a huge exponent
    5: [2**62, 2**62],  # a bigfloat
    2: b"\xff" * BIG,  # a bignum
}


def _decode(data: bytes):
    return outcome(lambda d: cbor.decode(d, max_size=CHECKPOINT_MAX_SIZE), data,
                   refusals=(EnvelopeError,),
                   reasons=frozenset({EnvelopeReason.MALFORMED, EnvelopeReason.TOO_DEEP}))


@pytest.mark.parametrize("tag", SEMANTIC_TAGS)
def test_every_tag_cbor2_knows_is_refused_cheaply(tag):
    payload = PAYLOADS.get(tag, "x" * BIG)
    data = cbor2.dumps(cbor2.CBORTag(tag, payload))
    cached = len(re._cache) if hasattr(re, "_cache") else 0
    result = _decode(data)
    assert isinstance(result, EnvelopeError)
    if hasattr(re, "_cache"):
        assert len(re._cache) == cached, "a peer's pattern was compiled and cached"


@fuzz()
@given(tag=st.integers(0, 2**64 - 1) | st.sampled_from(SEMANTIC_TAGS), value=cbor_values())
def test_any_tag_anywhere_is_refused(tag, value):
    data = cbor2.dumps([1, {"a": cbor2.CBORTag(tag, value)}], canonical=True)
    assert isinstance(_decode(data), EnvelopeError)
