"""Valid messages to mutate: the protocol's test vectors, and messages the code's own encoders sign.

Keys come from fixed seeds and Ed25519 is deterministic, so every seed is the same on every run
(hypothesis can replay a failure from its database).
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.directory import exchange
from p2pvoix.directory.lan_txt import LanAdvert, encode_txt
from p2pvoix.directory.records import announce
from p2pvoix.identity.profile import Profile
from p2pvoix.mesh import wire
from p2pvoix.room import Op, Settings, make_checkpoint, sign_action
from p2pvoix.room.wire import Genesis
from p2pvoix.session import plan, signalling, submit, sync
from p2pvoix.session.presence import sign_presence

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "vectors"

# The discovery and session vectors share these seeds and this time (tests/vectors/*.json).
ROOM_KEY = SigningKey(bytes([7] * 32))
HOST = SigningKey(bytes([9] * 32))
LISTENER = SigningKey(bytes([10] * 32))
MALLORY = SigningKey(bytes([0x66] * 32))
ROOM = ROOM_KEY.public.raw
OTHER_ROOM = SigningKey(bytes([8] * 32)).public.raw
T = 1_767_225_600_000


def _vectors(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


# ---- crypto -----------------------------------------------------------------------------------

@functools.cache
def envelopes() -> list[bytes]:
    """The valid vectors of docs/protocol/envelope.md (a ``test.note`` and a ``profile``)."""
    return [_hex(v["envelope"]) for v in _vectors("envelope.json")["valid"]]


@functools.cache
def profiles() -> list[bytes]:
    """The profile vector, and two more (the envelope decoder of the vectors takes these too)."""
    vectors = [_hex(v["envelope"]) for v in _vectors("envelope.json")["valid"]
               if v["kind"] == "profile"]
    return vectors + [Profile.create(LISTENER, "Youssef", T).envelope.encoded,
                      Profile.create(HOST, "Amina ☕ مرحبا", T + 1).envelope.encoded]


@functools.cache
def room_key_texts() -> list[str]:
    return [v["text"] for v in _vectors("room-key.json")["valid"]]


# ---- the room authority ----------------------------------------------------------------------

@functools.cache
def authority() -> dict[str, Any]:
    """The authority vectors: seeds, genesis, actions, entries, checkpoint and takeover."""
    folder = VECTORS / "authority"
    out = {name: json.loads((folder / f"{name}.json").read_text())
           for name in ("genesis", "actions", "entries", "checkpoint", "takeover")}
    out["keys"] = {name: SigningKey(_hex(seed)) for name, seed in out["genesis"]["seeds"].items()}
    return out


@functools.cache
def genesis() -> Genesis:
    return Genesis.decode(_hex(authority()["genesis"]["genesis"]["encoded"]))


def authority_room() -> bytes:
    return genesis().room


def authority_time() -> int:
    """A clock at which every authority vector is current."""
    return authority()["takeover"]["takeover"]["time_ms"]


@functools.cache
def actions() -> list[bytes]:
    """The vector actions, and one fresh action of every parameter shape an op can take."""
    vectors = [_hex(a["encoded"]) for a in authority()["actions"]["actions"]]
    keys, room, now = authority()["keys"], authority_room(), authority_time()
    target = keys["listener"].public
    shapes: list[tuple[Op, dict[str, Any]]] = [
        (Op.RAISE_HAND, {}),
        (Op.BAN, {"target": target}),
        (Op.MUTE, {"target": target, "lock": False}),
        (Op.SET_INFO, {"title": "Nuit ✨", "tags": ("a", "b"), "language": "fr-CA"}),
        (Op.SET_SETTINGS, {"settings": Settings(hands=False, max_speakers=3)}),
        (Op.END_ROOM, {}),
    ]
    fresh = [sign_action(keys["owner"], room, op, now_ms=now + i, nonce=bytes([0xA0 + i]) * 16,
                         **params).encoded
             for i, (op, params) in enumerate(shapes)]
    return vectors + fresh


@functools.cache
def entries() -> list[bytes]:
    """The eight vector entries of the log, in order."""
    return [_hex(e["encoded"]) for e in authority()["entries"]["entries"]]


@functools.cache
def takeover() -> bytes:
    return _hex(authority()["takeover"]["takeover"]["encoded"])


@functools.cache
def checkpoint() -> bytes:
    return _hex(authority()["checkpoint"]["checkpoint"]["encoded"])


@functools.cache
def snapshots() -> list[bytes]:
    """The checkpoint vector's snapshot, and a bigger one (more rows in every table)."""
    from tests.fuzz.states import crowded_state

    small = _hex(authority()["checkpoint"]["checkpoint"]["snapshot"])
    room_key = authority()["keys"]["room"]
    crowded = make_checkpoint(room_key, crowded_state(), authority_time())
    return [small, crowded.snapshot]


@functools.cache
def room_messages() -> list[bytes]:
    """What the room topic carries into a log: entries, a takeover and checkpoints."""
    from tests.fuzz.states import crowded_state

    room_key = authority()["keys"]["room"]
    crowded = make_checkpoint(room_key, crowded_state(), authority_time()).encoded
    return entries() + [takeover(), checkpoint(), crowded]


# ---- discovery --------------------------------------------------------------------------------

@functools.cache
def announcements() -> list[bytes]:
    vector = _hex(_vectors("discovery.json")["announce"]["envelope"])
    ended = announce(ROOM_KEY, title="Fin", host=HOST.public, host_name="", addrs=[], now_ms=T,
                     ttl_ms=60_000, ended=True).encoded
    full = announce(ROOM_KEY, title="x" * 100, host=HOST.public, host_name="h" * 64,
                    addrs=[f"/ip4/10.0.0.{i}/tcp/4001" for i in range(8)], now_ms=T,
                    ttl_ms=3_600_000, tags=("t1", "t2", "t3", "t4", "t5"), lang="ar-MA",
                    speakers=10_000, listeners=10_000_000).encoded
    return [vector, ended, full]


@functools.cache
def txt_records() -> list[dict[bytes, bytes | None]]:
    vector = {k.encode(): v.encode() for k, v in _vectors("discovery.json")["txt"].items()}
    two_rooms = encode_txt(LanAdvert(HOST.public.peer_id, ("/ip4/10.0.0.1/tcp/1",),
                                     tuple(announcements()[:2])))
    bare = encode_txt(LanAdvert(LISTENER.public.peer_id, (), ()))
    return [vector, two_rooms, bare]


@functools.cache
def exchange_requests() -> list[bytes]:
    return [exchange.REQUEST]


@functools.cache
def exchange_replies() -> list[bytes]:
    vector = _hex(_vectors("discovery.json")["exchange_reply"])
    return [vector, exchange.encode_reply([]), exchange.encode_reply(announcements())]


# ---- sessions ---------------------------------------------------------------------------------

@functools.cache
def session() -> dict[str, Any]:
    return _vectors("session.json")


@functools.cache
def presences() -> list[bytes]:
    vector = _hex(session()["presence"]["envelope"])
    left = sign_presence(HOST, ROOM, name="Amina", now_ms=T, here=False).envelope.encoded
    public = sign_presence(MALLORY, ROOM, name="", now_ms=T, reach="public", relay_slots=1000,
                           addrs=tuple(f"/ip6/::{i}/tcp/1" for i in range(8)),
                           ttl_ms=600_000).envelope.encoded
    return [vector, left, public]


@functools.cache
def offer() -> signalling.Offer:
    return signalling.verify_offer(_hex(session()["offer"]["envelope"]), ROOM,
                                   peer=LISTENER.public, now_ms=T)


@functools.cache
def offers() -> list[bytes]:
    return [offer().encoded]


@functools.cache
def answers() -> list[bytes]:
    refusal = signalling.make_answer(HOST, ROOM, offer=offer(), now_ms=T, why="room full")
    return [_hex(session()["answer"]["envelope"]), refusal.encoded]


@functools.cache
def sync_requests() -> list[bytes]:
    return [_hex(session()["sync_request"]), _hex(session()["sync_request_after"])]


@functools.cache
def sync_replies() -> list[bytes]:
    full = sync.encode_reply(sync.SyncReply(
        genesis=_hex(authority()["genesis"]["genesis"]["encoded"]), checkpoint=checkpoint(),
        entries=tuple(entries()), presence=tuple(presences()), more=True))
    return [_hex(session()["sync_reply"]), full]


@functools.cache
def submit_replies() -> list[bytes]:
    ok = submit.encode_reply(submit.SubmitReply(True, "", entries()[0]))
    refused = submit.encode_reply(submit.SubmitReply(False, "stage-full", None))
    return [_hex(session()["submit_reply_refused"]), ok, refused]


def plan_entries() -> list[plan.Assignment]:
    keys = [SigningKey(bytes([0x30 + i] * 32)).public for i in range(4)]
    return [
        plan.Assignment(keys[0], 3, None, None, None),
        plan.Assignment(keys[1], 3, keys[0], None, 1),
        plan.Assignment(keys[2], 2, keys[1], keys[0], 2),
        plan.Assignment(keys[3], 1, None, keys[2], None),
    ]


@functools.cache
def plans() -> list[bytes]:
    tree = plan.sign_plan(HOST, ROOM, topology="tree", epoch=2, version=7, entries=plan_entries(),
                          now_ms=T)
    mesh = plan.sign_plan(HOST, ROOM, topology="mesh", epoch=0, version=1, entries=[], now_ms=T)
    return [tree.encoded, mesh.encoded]


@functools.cache
def plan_requests() -> list[bytes]:
    return [plan.encode_request(presences()[0]),
            plan.encode_request(presences()[2], lost_parent=HOST.public)]


# ---- media ------------------------------------------------------------------------------------

@functools.cache
def frames() -> list[bytes]:
    tag = wire.speaker_tag(ROOM, HOST.public.raw)
    return [
        wire.encode_audio(wire.AudioFrame(tag, 1, 2, 20, 0, b"\xfc\x00")),
        wire.encode_audio(wire.AudioFrame(tag, 2**32 - 1, 2**32 - 1, wire.SILENT_LEVEL,
                                          wire.MAX_HOPS, bytes(range(256)) * 4)),
        wire.encode_heartbeat(7),
    ] + [bytes([kind]) for kind in wire.FrameType if kind not in (wire.FrameType.AUDIO,
                                                                 wire.FrameType.HEARTBEAT)]


# An offer aiortc 1.16 made (create_offer on loopback): what a peer's SDP looks like.
AIORTC_OFFER = (
    "v=0\r\no=- 4004679454 4004679454 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic:WMS *\r\nm=audio 58829 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\n"
    "a=sendrecv\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=mid:0\r\n"
    "a=msid:ea906f07-ba5d-4317-8af4-de5533ecfc0c 2cafb948-1eb5-4907-a0bc-d2769479a79b\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=ssrc:2169671964 cname:1b790636-f709-4770-895b-"
    "bea6f2baee09\r\na=rtpmap:96 opus/48000/2\r\na=candidate:16572de626da4e5384a0ce2d0d93678a 1 "
    "udp 2130706431 127.0.0.1 58829 typ host\r\na=end-of-candidates\r\na=ice-ufrag:5V16\r\n"
    "a=ice-pwd:7KkQvlxGR4z9q7bXnDBZKH\r\na=fingerprint:sha-256 BA:B9:34:D7:A5:A2:AF:A1:97:72:D0:"
    "A0:36:25:F2:0A:12:13:6D:95:D8:1D:78:41:9B:EB:73:5B:74:4F:A1:0E\r\na=fingerprint:sha-384 2F:"
    "7C:71:B3:EF:EF:F6:51:C7:A7:B8:5C:F5:05:71:C9:99:54:D7:D9:24:0B:A6:8B:15:94:69:73:BF:FF:F0:FD:"
    "1D:DA:6A:45:FA:C0:78:AB:5B:34:A8:07:2E:58:E6:D7\r\na=fingerprint:sha-512 39:A3:4E:12:53:01:"
    "3E:01:62:B1:4E:99:0D:9C:93:D4:C9:F7:6D:B6:94:FB:78:7F:2B:D3:C9:97:32:66:08:E4:76:B7:EB:B0:15:"
    "E2:1A:18:4C:DE:90:BC:ED:1F:AC:D1:25:C6:94:9F:84:07:70:82:38:17:9F:9A:E9:5F:D6:11\r\n"
    "a=setup:actpass\r\n"
)


def sdps() -> list[str]:
    return [AIORTC_OFFER, session()["offer"]["sdp"], session()["answer"]["sdp"]]
