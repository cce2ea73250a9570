"""STUN Binding codec against RFC 5769's sample messages, and bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.errors import Rejected
from p2pvoix.reach.stun import binding_request, parse_binding_response

TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
# RFC 5769 §2.2: a success response carrying XOR-MAPPED-ADDRESS 192.0.2.1:32853 (with SOFTWARE,
# MESSAGE-INTEGRITY and FINGERPRINT, which a Binding client may ignore).
RESPONSE_V4 = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96")
# RFC 5769 §2.3: the same for 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
RESPONSE_V6 = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c")


def test_a_binding_request_is_the_20_byte_header():
    assert binding_request(TXID) == bytes.fromhex("000100002112a442") + TXID
    with pytest.raises(ValueError):
        binding_request(b"short")


def test_rfc_5769_responses_give_their_mapped_addresses():
    assert parse_binding_response(RESPONSE_V4, TXID) == ("192.0.2.1", 32853)
    assert parse_binding_response(RESPONSE_V6, TXID) == ("2001:db8:1234:5678:11:2233:4455:6677",
                                                         32853)


def test_plain_mapped_address_is_read_when_there_is_no_xor_one():
    body = bytes.fromhex("000100080001d431c0000201")  # MAPPED-ADDRESS 192.0.2.1:54321
    message = bytes.fromhex("0101000c2112a442") + TXID + body
    assert parse_binding_response(message, TXID) == ("192.0.2.1", 54321)


@pytest.mark.parametrize("message, reason", [
    (RESPONSE_V4[:19], "stun-malformed"),
    (RESPONSE_V4[:-4], "stun-malformed"),  # length field says more
    (RESPONSE_V4[:4] + b"\0\0\0\0" + RESPONSE_V4[8:], "stun-malformed"),  # no magic cookie
    (bytes.fromhex("0111") + RESPONSE_V4[2:], "stun-not-a-success"),  # an error response
    (bytes.fromhex("010100002112a442") + TXID, "stun-no-mapped-address"),
])
def test_bad_responses_are_refused_with_a_reason(message, reason):
    with pytest.raises(Rejected) as refused:
        parse_binding_response(message, TXID)
    assert refused.value.reason == reason


def test_another_transactions_answer_is_not_ours():
    with pytest.raises(Rejected) as refused:
        parse_binding_response(RESPONSE_V4, bytes(12))
    assert refused.value.reason == "stun-not-our-transaction"


@given(st.binary(max_size=600))
def test_any_bytes_give_an_address_or_a_rejection(data):
    try:
        ip, port = parse_binding_response(data, data[8:20].ljust(12, b"\0"))
    except Rejected:
        return
    assert 0 <= port <= 65535 and ip


@given(st.binary(min_size=1, max_size=len(RESPONSE_V4)), st.integers(0, len(RESPONSE_V4) - 1))
def test_corrupted_rfc_responses_never_crash(noise, at):
    data = RESPONSE_V4[:at] + noise + RESPONSE_V4[at + len(noise):]
    try:
        parse_binding_response(data[:len(RESPONSE_V4)], TXID)
    except Rejected:
        pass
