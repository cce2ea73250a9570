"""Every decoder of a peer's bytes, under arbitrary bytes, mutants of valid messages and valid CBOR
of the wrong shape: it returns or refuses with a documented reason, in time, and a signed message
that was changed in any way never verifies."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.decoders import DECODERS, Decoder
from tests.fuzz.harness import fuzz, mutations, outcome, refused
from tests.fuzz.shapes import cbor_values, encode, reshaped

pytestmark = pytest.mark.parametrize("decoder", DECODERS, ids=str)


def check(decoder: Decoder, data: bytes, *, resigned: bool = False) -> None:
    result = outcome(decoder.decode, data, refusals=decoder.refusals, reasons=decoder.reasons)
    if refused(result):
        return
    if decoder.signed and not resigned:
        assert data in decoder.seeds(), "changed bytes of a signed message verified"
    decoder.accepted(data, result)


def test_every_seed_is_accepted(decoder):
    for seed in decoder.seeds():
        result = outcome(decoder.decode, seed, refusals=(), reasons=None)
        decoder.accepted(seed, result)


@fuzz()
@given(data=st.binary(max_size=1500))
def test_arbitrary_bytes(decoder, data):
    check(decoder, data)


@fuzz(scale=2)
@given(draw=st.data())
def test_mutants_of_valid_messages(decoder, draw):
    _, mutant = draw.draw(mutations(decoder.seeds()), label="mutant")
    check(decoder, mutant)


@fuzz()
@given(value=cbor_values())
def test_valid_cbor_of_any_shape(decoder, value):
    check(decoder, encode(value))


@fuzz(scale=2)
@given(draw=st.data())
def test_valid_messages_reshaped_and_resigned(decoder, draw):
    data, resigned = draw.draw(reshaped(decoder.seeds()), label="reshaped")
    check(decoder, data, resigned=resigned)


def test_no_decoder_takes_another_decoders_message(decoder):
    """Valid messages of every other kind and context (another kind, another room, another
    signer's role) are refused, unless they are this decoder's own."""
    own = set(decoder.seeds())
    for other in DECODERS:
        for data in other.seeds():
            result = outcome(decoder.decode, data, refusals=decoder.refusals,
                             reasons=decoder.reasons)
            if not refused(result) and decoder.signed:
                assert data in own, f"{decoder} took a {other} message"
