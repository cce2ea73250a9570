"""mDNS TXT records: round trip, size bound, and hostile input refused without crashing."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.directory.lan_txt import MAX_TXT_BYTES, LanAdvert, decode_txt, encode_txt, txt_size
from p2pvoix.directory.records import announce, verify_announcement
from p2pvoix.errors import Rejected

HOST = SigningKey(bytes([9] * 32))
ROOM = SigningKey(bytes([7] * 32))
NOW = 1_767_225_600_000


def advert():
    ann = announce(ROOM, title="Café meetup — salon", host=HOST.public, host_name="Yasmine",
                   addrs=["/ip4/192.168.1.20/tcp/40123"], now_ms=NOW, ttl_ms=60_000,
                   tags=("meetup",), lang="fr")
    return LanAdvert(HOST.public.peer_id, ("/ip4/192.168.1.20/tcp/40123",), (ann.encoded,))


def test_round_trip_and_the_record_still_verifies():
    props = encode_txt(advert())
    assert txt_size(props) <= MAX_TXT_BYTES
    assert all(len(k) + len(v) + 1 <= 255 for k, v in props.items())
    decoded = decode_txt(props)
    assert decoded == advert()
    assert verify_announcement(decoded.announcements[0], NOW).title == "Café meetup — salon"


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.pop(b"v"),
        lambda p: p.update({b"v": b"2"}),
        lambda p: p.update({b"p": b"not a peer id"}),
        lambda p: p.update({b"a0": b"no-slash"}),
        lambda p: p.pop(b"r0.0"),
        lambda p: p.update({b"r0.1": None}),
        lambda p: p.update({b"r0.0": b"!!!"}),
        lambda p: p.update({b"x%d" % i: b"y" * 250 for i in range(20)}),
    ],
)
def test_malformed_txt_is_rejected(change):
    props = encode_txt(advert())
    change(props)
    with pytest.raises(Rejected):
        decode_txt(props)


@given(st.dictionaries(st.binary(max_size=12), st.none() | st.binary(max_size=260), max_size=30))
def test_arbitrary_txt_never_crashes(props):
    try:
        decode_txt(props)
    except Rejected:
        pass
