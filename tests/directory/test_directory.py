"""The directory: verified, deduplicated, expiring, order-independent."""

from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.directory.directory import Directory
from p2pvoix.directory.events import RoomAppeared, RoomGone, RoomUpdated, Source
from p2pvoix.directory.records import announce

HOST = SigningKey(bytes([9] * 32))
ROOMS = [SigningKey(bytes([i + 1] * 32)) for i in range(3)]
NOW = 1_767_225_600_000


def make(room=ROOMS[0], now=NOW, ttl=60_000, **kw):
    args = {"title": f"room {room.public.fingerprint[:4]}", "host": HOST.public,
            "host_name": "Amina", "addrs": [], "now_ms": now, "ttl_ms": ttl, "listeners": 3}
    return announce(room, **{**args, **kw})


def test_appear_update_and_sources():
    directory = Directory()
    first = directory.offer(make().encoded, Source.GOSSIP, NOW)
    assert [type(e) for e in first] == [RoomAppeared]
    assert first[0].listing.seen_via == {Source.GOSSIP}
    # The same record via the DHT adds a source; a newer one updates the listing.
    update = directory.offer(make().encoded, Source.DHT, NOW)
    assert [type(e) for e in update] == [RoomUpdated]
    assert update[0].listing.seen_via == {Source.GOSSIP, Source.DHT}
    assert directory.offer(make().encoded, Source.DHT, NOW) == []
    newer = directory.offer(make(now=NOW + 5, listeners=40).encoded, Source.LAN, NOW + 5)
    assert newer[0].listing.listeners == 40 and len(newer[0].listing.seen_via) == 3
    # An older record after a newer one changes nothing.
    assert directory.offer(make(listeners=1).encoded, Source.LAN, NOW + 6) == []
    assert directory.get(ROOMS[0].public).listeners == 40


def test_expiry_and_end():
    directory = Directory()
    directory.offer(make(ttl=10_000).encoded, Source.GOSSIP, NOW)
    directory.offer(make(room=ROOMS[1]).encoded, Source.GOSSIP, NOW)
    gone = directory.expire(NOW + 10_000)
    assert [(type(e), e.reason) for e in gone] == [(RoomGone, "expired")]
    assert [listing.room for listing in directory.rooms(NOW + 10_000)] == [ROOMS[1].public]
    ended = directory.offer(make(room=ROOMS[1], now=NOW + 20, ended=True).encoded, Source.DHT,
                            NOW + 20)
    assert [(type(e), e.reason) for e in ended] == [(RoomGone, "ended")]
    # A late copy of an older announcement cannot bring the ended room back.
    assert directory.offer(make(room=ROOMS[1]).encoded, Source.LAN, NOW + 30) == []
    assert directory.rejections["announce-stale"] == 1
    assert len(directory) == 0


def test_bad_records_never_enter_and_are_counted():
    directory = Directory()
    record = bytearray(make().encoded)
    record[40] ^= 0xFF
    assert directory.offer(bytes(record), Source.GOSSIP, NOW) == []
    assert directory.offer(b"\x00" * 5000, Source.LAN, NOW) == []
    assert directory.offer(make().encoded, Source.DHT, NOW + 60_000) == []
    assert len(directory) == 0
    assert directory.rejections.total() == 3
    assert directory.rejections["announce-expired"] == 1
    assert directory.rejections["too-large"] == 1


def test_filters_and_capacity():
    directory = Directory(max_rooms=2)
    directory.offer(make(ROOMS[0], tags=("Music",), lang="fr-MA", listeners=5).encoded,
                    Source.GOSSIP, NOW)
    directory.offer(make(ROOMS[1], tags=("talk",), lang="en", listeners=9).encoded,
                    Source.LAN, NOW)
    assert [lst.listeners for lst in directory.rooms(NOW)] == [9, 5]
    assert [lst.lang for lst in directory.rooms(NOW, topic="music")] == ["fr-MA"]
    assert [lst.lang for lst in directory.rooms(NOW, lang="fr")] == ["fr-MA"]
    assert [lst.lang for lst in directory.rooms(NOW, sources=frozenset({Source.LAN}))] == ["en"]
    events = directory.offer(make(ROOMS[2], ttl=120_000).encoded, Source.DHT, NOW)
    assert len(directory) == 2 and any(isinstance(e, RoomGone) for e in events)


records = st.lists(
    st.tuples(
        st.integers(0, 2),  # room
        st.integers(0, 5),  # time offset (s)
        st.booleans(),  # ended
        st.sampled_from(list(Source)),
        st.integers(0, 50),  # listeners
    ),
    max_size=12,
)


@given(records, st.randoms(use_true_random=False))
def test_any_delivery_order_and_duplicates_give_the_same_directory(specs, rng):
    encoded = [
        (make(ROOMS[r], now=NOW + t * 1000, ended=e, listeners=n).encoded, source)
        for r, t, e, source, n in specs
    ]
    deliveries = encoded + encoded[: len(encoded) // 2]  # duplicates
    shuffled = list(deliveries)
    rng.shuffle(shuffled)
    now = NOW + 6000
    a, b = Directory(), Directory()
    for data, source in deliveries:
        a.offer(data, source, now)
    for data, source in shuffled:
        b.offer(data, source, now)
    view = lambda d: [(x.room, x.listeners, x.announced_ms) for x in d.rooms(now)]  # noqa: E731
    assert view(a) == view(b)
