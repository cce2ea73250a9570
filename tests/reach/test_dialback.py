"""The dial-back wire format (docs/protocol/reachability.md) and the reach verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.errors import Rejected
from p2pvoix.reach import dialback
from p2pvoix.reach.dialback import DialBack
from p2pvoix.reach.verdict import Reach, judge

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "reachability.json").read_text())


def test_vectors_decode_to_their_values_and_encode_back_to_their_bytes():
    request = VECTORS["request"]
    assert dialback.decode_request(bytes.fromhex(request["hex"])) == tuple(request["ports"])
    assert dialback.encode_request(tuple(request["ports"])).hex() == request["hex"]
    reply = VECTORS["reply"]
    value = DialBack(reply["ip"], reply["port"], tuple(reply["open"]))
    assert dialback.decode_reply(bytes.fromhex(reply["hex"])) == value
    assert dialback.encode_reply(value).hex() == reply["hex"]


@pytest.mark.parametrize("name", sorted(VECTORS["bad_requests"]))
def test_bad_requests_are_refused(name):
    with pytest.raises(Rejected) as refused:
        dialback.decode_request(bytes.fromhex(VECTORS["bad_requests"][name]))
    assert refused.value.reason == "dialback-malformed"


@pytest.mark.parametrize("name", sorted(VECTORS["bad_replies"]))
def test_bad_replies_are_refused(name):
    with pytest.raises(Rejected) as refused:
        dialback.decode_reply(bytes.fromhex(VECTORS["bad_replies"][name]))
    assert refused.value.reason == "dialback-malformed"


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_refused(data):
    for decode in (dialback.decode_request, dialback.decode_reply):
        try:
            decode(data)
        except Rejected:
            pass


SEEN = DialBack("198.51.100.7", 40001, ())


def test_one_peer_reaching_us_back_makes_us_public():
    verdict = judge([SEEN, DialBack("198.51.100.7", 40001, (4001,))], [])
    assert verdict.reach is Reach.PUBLIC and verdict.seen == ("198.51.100.7", 4001)


def test_nobody_answering_is_unknown_and_refusals_with_two_stun_views_tell_the_nat_kind():
    assert judge([], []).reach is Reach.UNKNOWN
    same = [("stun1", ("198.51.100.7", 5000)), ("stun2", ("198.51.100.7", 5000))]
    differ = [("stun1", ("198.51.100.7", 5000)), ("stun2", ("198.51.100.7", 5002))]
    assert judge([SEEN], same).reach is Reach.NAT
    assert judge([SEEN], differ).reach is Reach.SYMMETRIC
    one = judge([SEEN], differ[:1])
    assert one.reach is Reach.NAT and "not known" in one.why  # one server cannot tell
    assert one.seen == ("198.51.100.7", 40001)
