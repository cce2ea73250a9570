"""Decoders of text and of mDNS TXT properties: room keys people paste, peer IDs, a peer's SDP, and
a LAN node's TXT record. Same rules: return or refuse with a documented reason, in time."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.crypto import bech32
from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason
from p2pvoix.crypto.keys import PublicKey
from p2pvoix.crypto.roomkey import MAX_TEXT_LENGTH, RoomKey, RoomKeyError, RoomKeyReason
from p2pvoix.directory.lan_txt import MAX_ADDRS, TxtReason, decode_txt, encode_txt
from p2pvoix.errors import Rejected
from p2pvoix.mesh import rtc
from tests.fuzz import corpus
from tests.fuzz.harness import fuzz, mutations, outcome, refused, text_mutations

BECH32_PROBLEMS = {"mixed-case", "no-separator", "bad-character", "bad-checksum", "too-long",
                   "empty"}
SDP_REASONS = frozenset({"rtc-sdp-malformed", "rtc-sdp-media", "rtc-sdp-codec",
                         "rtc-sdp-fingerprint", "rtc-sdp-candidate"})
PEER_IDS = [key.public.peer_id for key in (corpus.HOST, corpus.LISTENER, corpus.MALLORY)]
texts = st.text(max_size=300) | st.text(alphabet=bech32.CHARSET + "PV1 ", max_size=300)


# ---- room keys ----------------------------------------------------------------------------------

def _room_key(text: str) -> None:
    result = outcome(RoomKey.parse, text, refusals=(RoomKeyError,),
                     reasons=frozenset(RoomKeyReason), size=len(text.encode()))
    if refused(result):
        assert result.pointer(text).startswith(text)
    else:  # what parses is a room key, hints and all, and prints back as itself
        assert RoomKey.parse(result.text()) == result
        assert result.text() == text.strip().lower()


@fuzz()
@given(text=texts)
def test_room_key_arbitrary_text(text):
    _room_key(text)


@fuzz(scale=2)
@given(text=text_mutations(corpus.room_key_texts()))
def test_room_key_mutants(text):
    _room_key(text)


@fuzz()
@given(text=texts | text_mutations(corpus.room_key_texts()))
def test_bech32_decode(text):
    result = outcome(lambda t: bech32.decode(t, max_length=MAX_TEXT_LENGTH), text,
                     refusals=(bech32.Bech32Error,), reasons=None, size=len(text.encode()))
    if refused(result):
        assert result.problem.reason in BECH32_PROBLEMS
        position = result.problem.position
        assert position is None or result.problem.reason == "too-long" or 0 <= position < len(text)


@fuzz()
@given(text=st.text(alphabet="123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz",
                    max_size=140) | st.text(max_size=60) | text_mutations(PEER_IDS))
def test_peer_id(text):
    result = outcome(PublicKey.from_peer_id, text, refusals=(EnvelopeError,),
                     reasons=frozenset({EnvelopeReason.BAD_KEY}), size=len(text.encode()))
    if not refused(result):
        assert result.peer_id == text


# ---- a peer's SDP ------------------------------------------------------------------------------

@fuzz(scale=2)
@given(sdp=text_mutations(corpus.sdps(), max_steps=8) | st.text(max_size=400).map(
    lambda text: "v=0\r\n" + text))
def test_remote_sdp_checks(sdp):
    outcome(rtc._check_remote_sdp, sdp, refusals=(Rejected,), reasons=SDP_REASONS,
            size=len(sdp.encode()))
    found = outcome(rtc.sdp_fingerprints, sdp, refusals=(Rejected,),
                    reasons=frozenset({"rtc-sdp-malformed"}), size=len(sdp.encode()))
    if not refused(found):
        assert len(set(found)) == len(found)


def test_remote_sdp_seed_passes():
    rtc._check_remote_sdp(corpus.AIORTC_OFFER)


# ---- mDNS TXT ------------------------------------------------------------------------------------

TXT_REASONS = frozenset(TxtReason)
txt_keys = st.sampled_from([b"v", b"p", *(b"a%d" % i for i in range(MAX_ADDRS + 1)),
                            *(b"r%d.%d" % (r, c) for r in range(3) for c in range(4)),
                            b"r0.0\n", b"p\n"]) | st.binary(max_size=6)
txt_values = st.none() | st.binary(max_size=300) | st.sampled_from(
    [b"1", b"2", b"", b"1\n", PEER_IDS[0].encode(), PEER_IDS[0].encode() + b"\n",
     b"/ip4/1.2.3.4/tcp/1", b"/ip4/1.2.3.4/tcp/1\n", b"AAAA", b"A", b"-_", b"+/", b"AA==", b"r"])


def _txt(props: dict[bytes, bytes | None]) -> None:
    size = sum(len(k) + len(v or b"") for k, v in props.items())
    result = outcome(decode_txt, props, refusals=(Rejected,), reasons=TXT_REASONS, size=size)
    if refused(result):
        return
    # Accepted: every part is what the format allows, and it encodes back to a record that
    # decodes to the same advert.
    assert re.fullmatch(r"[1-9A-HJ-NP-Za-km-z]{40,60}", result.peer_id)
    assert all(re.fullmatch(r"/[\x21-\x7e]{1,127}", addr) for addr in result.addrs)
    chunks = sorted({key[:2] for key in props if re.fullmatch(rb"r[0-9]\.[0-9]", key)})
    for room in chunks[: len(result.announcements)]:
        text = b"".join(v for k, v in props.items() if k.startswith(room) and len(k) == 4)
        assert re.fullmatch(rb"[A-Za-z0-9_-]+", text), "a chunk outside the base64url alphabet"
    try:
        again = encode_txt(result)
    except ValueError:  # too large for one packet once re-encoded: the encoder says so
        return
    assert decode_txt(again) == result


@fuzz()
@given(props=st.dictionaries(txt_keys, txt_values, max_size=12))
def test_txt_arbitrary_properties(props):
    _txt(props)


@fuzz(scale=2)
@given(data=st.data())
def test_txt_mutants(data):
    record = dict(data.draw(st.sampled_from(corpus.txt_records())))
    for _ in range(data.draw(st.integers(1, 4))):
        key = data.draw(st.sampled_from(sorted(record)) | txt_keys if record else txt_keys)
        action = data.draw(st.sampled_from(["mutate", "drop", "set"]))
        if action == "drop":
            record.pop(key, None)
        elif action == "set" or record.get(key) is None:
            record[key] = data.draw(txt_values)
        else:
            record[key] = data.draw(mutations([record[key]], max_steps=3))[1]
    _txt(record)


@pytest.mark.parametrize("record", corpus.txt_records(), ids=["vector", "two-rooms", "bare"])
def test_txt_seeds_decode(record):
    decode_txt(record)
