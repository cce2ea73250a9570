"""Regenerate tests/vectors/envelope.json and room-key.json from fixed seeds.

Run ``python -m tests.vectors.generate_crypto``. Ed25519 signatures are deterministic, so the
output never changes unless the format does — and then the vector tests fail until the spec, the
code and these files agree again.
"""

from __future__ import annotations

import json
import pathlib

from p2pvoix.crypto import cbor
from p2pvoix.crypto.envelope import CONTEXT, seal
from p2pvoix.crypto.keys import SigningKey
from p2pvoix.crypto.roomkey import RoomKey, TcpAddress
from tests.vectors.kinds import NOTE, PROFILE

HERE = pathlib.Path(__file__).resolve().parent
ALICE_SEED = bytes(range(32))
ROOM_SEED = bytes([7] * 32)
HOST_SEED = bytes([9] * 32)


def envelope_vectors() -> dict:
    alice = SigningKey(ALICE_SEED)
    room = SigningKey(ROOM_SEED).public.raw
    valid = []
    cases = [
        ("profile", PROFILE, {"name": "Amina"}, {"time": 1_767_225_600_000}),
        ("room-bound note", NOTE, {"text": "Salam, bonjour", "n": 3}, {"room": room, "time": 1}),
    ]
    for name, spec, body, extra in cases:
        envelope = seal(spec, alice, body, **extra)
        unsigned = {k: v for k, v in cbor.decode(envelope.encoded, max_size=4096).items()
                    if k != "x"}
        valid.append({
            "name": name,
            "kind": spec.name,
            "signer_seed": ALICE_SEED.hex(),
            "signer": alice.public.raw.hex(),
            "room": extra.get("room", b"").hex() or None,
            "time": extra.get("time"),
            "body_cbor": cbor.encode(body).hex(),
            "signed_bytes": (CONTEXT + cbor.encode(unsigned)).hex(),
            "envelope": envelope.encoded.hex(),
            "digest": envelope.digest.hex(),
        })
    good = cbor.decode(bytes.fromhex(valid[1]["envelope"]), max_size=4096)
    invalid = [
        {"name": "one bit flipped in the signature", "kind": NOTE.name, "reason": "bad-signature",
         "envelope": _flip(bytes.fromhex(valid[1]["envelope"]), -1).hex()},
        {"name": "kind changed, signature kept", "kind": NOTE.name, "reason": "unknown-kind",
         "envelope": cbor.encode({**good, "k": "test.other"}).hex()},
        {"name": "room changed, signature kept", "kind": NOTE.name, "reason": "bad-signature",
         "envelope": cbor.encode({**good, "r": SigningKey(HOST_SEED).public.raw}).hex()},
        {"name": "non-canonical integer", "kind": NOTE.name, "reason": "not-canonical",
         "envelope": _long_form_time(bytes.fromhex(valid[1]["envelope"])).hex()},
        {"name": "unknown envelope field", "kind": NOTE.name, "reason": "unknown-field",
         "envelope": cbor.encode({**good, "z": 0}).hex()},
    ]
    return {"context": CONTEXT.hex(), "valid": valid, "invalid": invalid}


def room_key_vectors() -> dict:
    room = SigningKey(ROOM_SEED).public
    host = SigningKey(HOST_SEED).public
    keys = [
        ("bare", RoomKey(room)),
        ("with host and IPv4 hint", RoomKey(room, host, (TcpAddress("192.168.1.20", 40123),))),
        ("with IPv4 and IPv6 hints",
         RoomKey(room, host, (TcpAddress("10.0.0.2", 4001), TcpAddress("fe80::1", 4001)))),
    ]
    valid = [{
        "name": name,
        "room_seed": ROOM_SEED.hex(),
        "room_key": key.raw.hex(),
        "host": key.host.raw.hex() if key.host else None,
        "addresses": [[a.host, a.port] for a in key.addresses],
        "text": key.text(),
    } for name, key in keys]
    bare = valid[0]["text"]
    invalid = [
        {"name": "one character mistyped", "text": bare[:20] + "z" + bare[21:],
         "reason": "bad-checksum", "position": 20},
        {"name": "one character dropped", "text": bare[:20] + bare[21:], "reason": "bad-checksum"},
        {"name": "letter o is not in the alphabet", "text": bare[:20] + "o" + bare[21:],
         "reason": "bad-character", "position": 20},
        {"name": "mixed case", "text": bare[:10] + bare[10].upper() + bare[11:],
         "reason": "mixed-case", "position": 10},
        {"name": "a peer ID is not a room key", "text": host.peer_id, "reason": "not-a-room-key"},
    ]
    return {"valid": valid, "invalid": invalid}


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 1
    return bytes(out)


def _long_form_time(data: bytes) -> bytes:
    # "t": 1 is 0x61 0x74 0x01; the same number as a one-byte-argument integer is 0x18 0x01.
    return data.replace(b"\x61\x74\x01", b"\x61\x74\x18\x01", 1)


def main() -> None:
    for name, vectors in (("envelope", envelope_vectors()), ("room-key", room_key_vectors())):
        (HERE / f"{name}.json").write_text(json.dumps(vectors, indent=2) + "\n")


if __name__ == "__main__":
    main()
