"""Regenerate tests/vectors/discovery.json and session.json from fixed seeds.

Run ``python -m tests.vectors.generate_session``; the vector tests check both directions.
"""

from __future__ import annotations

import json
import pathlib

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.directory import exchange
from p2pvoix.directory.lan_txt import LanAdvert, encode_txt
from p2pvoix.directory.records import announce, dht_key
from p2pvoix.room import create_room
from p2pvoix.session import signalling, submit, sync
from p2pvoix.session.presence import sign_presence

HERE = pathlib.Path(__file__).resolve().parent
ROOM = SigningKey(bytes([7] * 32))
HOST = SigningKey(bytes([9] * 32))
LISTENER = SigningKey(bytes([10] * 32))
T = 1_767_225_600_000
SDP_OFFER = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
             "a=fingerprint:sha-256 " + ":".join(["0A"] * 32) + "\r\n")
SDP_ANSWER = SDP_OFFER.replace("0A", "0B")
ADDR = "/ip4/192.168.1.20/tcp/40123"


def announcement():
    return announce(ROOM, title="Darija & français", host=HOST.public, host_name="Amina",
                    addrs=[ADDR], now_ms=T, ttl_ms=60_000, tags=("diaspora", "music"),
                    lang="ar-MA", speakers=2, listeners=14)


def discovery_vectors() -> dict:
    ann = announcement()
    txt = encode_txt(LanAdvert(HOST.public.peer_id, (ADDR,), (ann.encoded,)))
    return {
        "room_seed": ROOM.seed.hex(), "host_seed": HOST.seed.hex(), "time": T,
        "announce": {"envelope": ann.encoded.hex(), "title": ann.title, "tags": list(ann.tags),
                     "lang": ann.lang, "host_name": ann.host_name, "addrs": list(ann.addrs),
                     "speakers": ann.speakers, "listeners": ann.listeners, "ttl": ann.ttl_ms},
        "dht_key": dht_key(ROOM.public),
        "txt": {key.decode(): value.decode() for key, value in txt.items()},
        "exchange_request": exchange.REQUEST.hex(),
        "exchange_reply": exchange.encode_reply([ann.encoded]).hex(),
    }


def session_vectors() -> dict:
    room = ROOM.public.raw
    presence = sign_presence(LISTENER, room, name="Youssef", now_ms=T, addrs=(ADDR,),
                             relay_slots=4, reach="nat")
    presence_turn = sign_presence(LISTENER, room, name="Youssef", now_ms=T, addrs=(ADDR,),
                                  relay_slots=4, reach="symmetric", turn=True)
    offer = signalling.make_offer(LISTENER, room, sdp=SDP_OFFER,
                                  fingerprints=("sha-256 " + ":".join(["0A"] * 32),),
                                  nonce=bytes(range(16)), role="listen", now_ms=T)
    answer = signalling.make_answer(HOST, room, offer=offer, sdp=SDP_ANSWER,
                                    fingerprints=("sha-256 " + ":".join(["0B"] * 32),),
                                    now_ms=T + 5)
    genesis = create_room(ROOM, HOST.public, title="Darija & français", language="ar-MA",
                          now_ms=T, tags=("diaspora",))
    reply = sync.SyncReply(genesis=genesis.encoded, checkpoint=None, entries=(),
                           presence=(presence.envelope.encoded,), more=False)
    return {
        "room_seed": ROOM.seed.hex(), "host_seed": HOST.seed.hex(),
        "listener_seed": LISTENER.seed.hex(), "time": T,
        "presence": {"envelope": presence.envelope.encoded.hex(), "name": "Youssef",
                     "addrs": [ADDR], "relay": 4, "reach": "nat"},
        "presence_turn": {"envelope": presence_turn.envelope.encoded.hex(), "reach": "symmetric",
                          "turn": True},
        "offer": {"envelope": offer.encoded.hex(), "sdp": SDP_OFFER, "nonce": offer.nonce.hex()},
        "answer": {"envelope": answer.encoded.hex(), "sdp": SDP_ANSWER},
        "sync_request": sync.encode_request(sync.SyncRequest(None)).hex(),
        "sync_request_after": sync.encode_request(sync.SyncRequest(bytes(32))).hex(),
        "sync_request_entries_only": sync.encode_request(
            sync.SyncRequest(bytes(32), roster=False)).hex(),
        "sync_reply": sync.encode_reply(reply).hex(),
        "submit_reply_refused": submit.encode_reply(
            submit.SubmitReply(False, "not-sequencer", None, HOST.public.raw)).hex(),
    }


def main() -> None:
    for name, vectors in (("discovery", discovery_vectors()), ("session", session_vectors())):
        (HERE / f"{name}.json").write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
