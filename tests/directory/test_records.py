"""Room announcements: only the room key can make one; the DHT key is routable."""

import pytest

from p2pvoix.crypto import cbor
from p2pvoix.crypto.envelope import CONTEXT, seal
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import SigningKey
from p2pvoix.directory.records import (
    ANNOUNCE,
    RecordReason,
    announce,
    dht_key,
    select_newest,
    verify_announcement,
    verify_dht_record,
)
from p2pvoix.errors import Rejected

ROOM = SigningKey(bytes([7] * 32))
OTHER_ROOM = SigningKey(bytes([8] * 32))
HOST = SigningKey(bytes([9] * 32))
NOW = 1_767_225_600_000


def make(now=NOW, room=ROOM, **kw):
    args = {"title": "Darija & français", "host": HOST.public, "host_name": "Amina",
            "addrs": ["/ip4/10.0.0.2/tcp/4001"], "now_ms": now, "ttl_ms": 60_000,
            "tags": ("music", "diaspora"), "lang": "ar-MA", "speakers": 2, "listeners": 14}
    return announce(room, **{**args, **kw})


def test_round_trip():
    ann = make()
    again = verify_announcement(ann.encoded, NOW + 1)
    assert again == ann and again.title == "Darija & français" and again.expires_ms == NOW + 60_000


def reason(func, *args):
    with pytest.raises((Rejected, EnvelopeError)) as caught:
        func(*args)
    return caught.value.reason


def test_only_the_room_key_may_announce_its_room():
    body = cbor.decode(make().encoded, max_size=4096)["b"]
    forged = seal(ANNOUNCE, HOST, body, room=ROOM.public.raw, time=NOW)  # host signs for the room
    assert reason(verify_announcement, forged.encoded, NOW) == RecordReason.NOT_ROOM_KEY


def test_expired_and_future_records_are_refused():
    ann = make()
    assert reason(verify_announcement, ann.encoded, NOW + 60_000) == RecordReason.EXPIRED
    future = make(now=NOW + 10 * 60_000)
    assert reason(verify_announcement, future.encoded, NOW) == RecordReason.FROM_FUTURE


def test_wrong_room_and_tampering():
    ann = make()
    assert reason(verify_announcement, ann.encoded, NOW, OTHER_ROOM.public.raw) == "wrong-room"
    value = cbor.decode(ann.encoded, max_size=4096)
    value["b"]["listeners"] = 9999
    assert reason(verify_announcement, cbor.encode(value), NOW) == "bad-signature"
    value["b"]["bogus"] = 1
    unsigned = {k: v for k, v in value.items() if k != "x"}
    resigned = cbor.encode({**unsigned, "x": ROOM.sign(CONTEXT + cbor.encode(unsigned))})
    assert reason(verify_announcement, resigned, NOW) == "unknown-field"


def test_dht_key_is_short_and_bound_to_the_room():
    key = dht_key(ROOM.public)
    assert key.startswith("/p2pvoix/") and len(key.encode()) <= 50
    assert key != dht_key(OTHER_ROOM.public)
    ann = make()
    assert verify_dht_record(key, ann.encoded, NOW) == ann
    wrong = dht_key(OTHER_ROOM.public)
    assert reason(verify_dht_record, wrong, ann.encoded, NOW) == RecordReason.WRONG_DHT_KEY


def test_select_newest_ignores_invalid_records():
    old, new = make(), make(now=NOW + 1000)
    forged = bytearray(make(now=NOW + 2000).encoded)
    forged[-1] ^= 1
    assert select_newest([old.encoded, bytes(forged), new.encoded], NOW + 1000) == 2
    assert select_newest([new.encoded, old.encoded], NOW + 1000) == 0


def test_oversized_fields_cannot_be_signed():
    with pytest.raises(ValueError):
        make(title="x" * 101)
    with pytest.raises(ValueError):
        make(tags=("a", "a"))
