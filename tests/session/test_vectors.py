"""Vectors of docs/protocol/discovery.md and session.md, checked both ways."""

import json
import pathlib

from p2pvoix.directory import exchange
from p2pvoix.directory.lan_txt import decode_txt
from p2pvoix.directory.records import dht_key, verify_announcement
from p2pvoix.room import Genesis
from p2pvoix.session import signalling, submit, sync
from p2pvoix.session.presence import verify_presence
from tests.vectors import generate_session as gen

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "vectors"
DISCOVERY = json.loads((VECTORS / "discovery.json").read_text())
SESSION = json.loads((VECTORS / "session.json").read_text())
T = DISCOVERY["time"]


def test_announcement_decodes_and_is_reproduced():
    vector = DISCOVERY["announce"]
    ann = verify_announcement(bytes.fromhex(vector["envelope"]), T + 1)
    assert (ann.title, list(ann.tags), ann.lang, ann.host_name, list(ann.addrs), ann.speakers,
            ann.listeners, ann.ttl_ms) == (vector["title"], vector["tags"], vector["lang"],
                                           vector["host_name"], vector["addrs"],
                                           vector["speakers"], vector["listeners"], vector["ttl"])
    assert ann.room == gen.ROOM.public and ann.host == gen.HOST.public
    assert gen.announcement().encoded.hex() == vector["envelope"]
    assert dht_key(ann.room) == DISCOVERY["dht_key"]


def test_txt_and_exchange():
    props = {k.encode(): v.encode() for k, v in DISCOVERY["txt"].items()}
    advert = decode_txt(props)
    assert advert.announcements[0].hex() == DISCOVERY["announce"]["envelope"]
    exchange.check_request(bytes.fromhex(DISCOVERY["exchange_request"]))
    rooms = exchange.decode_reply(bytes.fromhex(DISCOVERY["exchange_reply"]))
    assert [r.hex() for r in rooms] == [DISCOVERY["announce"]["envelope"]]
    assert gen.discovery_vectors() == DISCOVERY


def test_presence_offer_answer():
    room = gen.ROOM.public.raw
    presence = verify_presence(bytes.fromhex(SESSION["presence"]["envelope"]), room, T)
    assert (presence.name, list(presence.addrs), presence.relay_slots, presence.reach) == (
        "Youssef", SESSION["presence"]["addrs"], 4, "nat")
    assert presence.turn is False  # the field is absent: no TURN server
    with_turn = verify_presence(bytes.fromhex(SESSION["presence_turn"]["envelope"]), room, T)
    assert (with_turn.reach, with_turn.turn) == ("symmetric", True)
    offer = signalling.verify_offer(
        bytes.fromhex(SESSION["offer"]["envelope"]), room, peer=gen.LISTENER.public, now_ms=T,
        sdp_fingerprints=("sha-256 " + ":".join(["0A"] * 32),))
    assert offer.sdp == SESSION["offer"]["sdp"] and offer.nonce.hex() == SESSION["offer"]["nonce"]
    answer = signalling.verify_answer(
        bytes.fromhex(SESSION["answer"]["envelope"]), room, peer=gen.HOST.public, offer=offer,
        now_ms=T, sdp_fingerprints=("sha-256 " + ":".join(["0B"] * 32),))
    assert answer.accepted and answer.sdp == SESSION["answer"]["sdp"]


def test_sync_and_submit():
    room = gen.ROOM.public.raw
    assert sync.decode_request(bytes.fromhex(SESSION["sync_request"])).after is None
    assert sync.decode_request(bytes.fromhex(SESSION["sync_request_after"])).after == bytes(32)
    assert sync.decode_request(bytes.fromhex(SESSION["sync_request_entries_only"])) == \
        sync.SyncRequest(bytes(32), roster=False)
    reply = sync.decode_reply(bytes.fromhex(SESSION["sync_reply"]))
    assert Genesis.decode(reply.genesis, room).room == room
    assert reply.presence[0].hex() == SESSION["presence"]["envelope"]
    refused = submit.decode_reply(bytes.fromhex(SESSION["submit_reply_refused"]))
    assert (refused.ok, refused.reason, refused.sequencer) == (
        False, "not-sequencer", gen.HOST.public.raw)
    assert gen.session_vectors() == SESSION
