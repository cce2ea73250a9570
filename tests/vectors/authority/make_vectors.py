"""Regenerate the authority test vectors: `.venv/bin/python tests/vectors/authority/make_vectors.py`.

Every key comes from a fixed seed and Ed25519 signatures are deterministic, so the same code always
writes the same bytes; tests/room/test_vectors.py checks them both ways. Regenerate only when the
protocol version changes, and say so in docs/protocol/authority.md.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.room import (
    Accepted,
    Op,
    RoomLog,
    RoomRejected,
    Settings,
    create_room,
    make_checkpoint,
    sign_action,
    sign_entry,
    state_digest,
)

HERE = pathlib.Path(__file__).parent
SEEDS = {"room": "01" * 32, "owner": "02" * 32, "moderator": "03" * 32, "listener": "0a" * 32}
CREATED_MS = 1_700_000_000_000
SETTINGS = Settings(hands=True, max_speakers=8, mods_appoint=False, hand_interval_ms=30_000,
                    hand_ttl_ms=600_000, invite_ttl_ms=300_000)


def keys() -> dict[str, SigningKey]:
    return {name: SigningKey(bytes.fromhex(seed)) for name, seed in SEEDS.items()}


# (signer, op, params, time offset from CREATED_MS) — the log every vector below comes from
SCRIPT: list[tuple[str, str, dict[str, Any], int]] = [
    ("listener", "raise_hand", {}, 1_000),
    ("owner", "invite", {"to": "moderator"}, 2_000),
    ("moderator", "accept_invite", {}, 3_000),
    ("owner", "promote_moderator", {"to": "moderator"}, 4_000),
    ("moderator", "invite", {"to": "listener"}, 5_000),
    ("listener", "accept_invite", {}, 6_000),
    ("moderator", "mute", {"to": "listener", "lock": True}, 7_000),
    ("owner", "set_info", {"title": "Late show", "tags": ["music"], "lang": "en"}, 8_000),
]


def build() -> dict[str, Any]:
    k = keys()
    genesis = create_room(k["room"], k["owner"].public, title="Morning show", language="en",
                          tags=["news", "talk"], settings=SETTINGS, now_ms=CREATED_MS)
    room = genesis.room
    log = RoomLog(genesis)
    actions, entries = [], []
    for index, (signer, op, params, offset) in enumerate(SCRIPT):
        nonce = bytes([index]) * 16
        kwargs: dict[str, Any] = {}
        if "to" in params:
            kwargs["target"] = k[params["to"]].public
        if "lock" in params:
            kwargs["lock"] = params["lock"]
        if op == "set_info":
            kwargs.update(title=params["title"], tags=params["tags"], language=params["lang"])
        action = sign_action(k[signer], room, Op(op), now_ms=CREATED_MS + offset, nonce=nonce,
                             **kwargs)
        state = log.state
        entry = sign_entry(k["owner"], room, seq=state.seq + 1, now_ms=CREATED_MS + offset,
                           prev=state.head, epoch=state.epoch, action=action)
        assert isinstance(log.receive(entry.encoded, CREATED_MS + offset), Accepted)
        actions.append({"signer": signer, "op": op, "params": params, "time_ms": CREATED_MS + offset,
                        "nonce": nonce.hex(), "encoded": action.encoded.hex(),
                        "digest": action.digest.hex()})
        entries.append({"signer": "owner", "seq": entry.seq, "time_ms": entry.time_ms,
                        "prev": entry.prev.hex(), "epoch": entry.epoch,
                        "action": action.encoded.hex(), "encoded": entry.encoded.hex(),
                        "digest": entry.digest.hex()})
    after_script = CREATED_MS + 60_000
    checkpoint = make_checkpoint(k["room"], log.state, after_script)
    takeover_time = after_script + 10_000
    state = log.state
    takeover = sign_entry(k["moderator"], room, seq=state.seq + 1, now_ms=takeover_time,
                          prev=state.head, epoch=state.epoch + 1, action=None)
    assert isinstance(log.receive(takeover.encoded, takeover_time), Accepted)
    # A refused entry: the listener (a muted speaker, not staff) signs the next position.
    bad_action = sign_action(k["listener"], room, Op.SELF_UNMUTE, now_ms=takeover_time,
                             nonce=bytes(16))
    refused = sign_entry(k["listener"], room, seq=log.state.seq + 1, now_ms=takeover_time,
                         prev=log.state.head, epoch=log.state.epoch, action=bad_action)
    rejection = log.receive(refused.encoded, takeover_time)
    assert isinstance(rejection, RoomRejected)
    return {
        "genesis": {
            "room_seed": SEEDS["room"], "owner_seed": SEEDS["owner"], "title": "Morning show",
            "tags": ["news", "talk"], "lang": "en", "settings": SETTINGS.to_wire(),
            "created_ms": CREATED_MS, "encoded": genesis.encoded.hex(),
            "digest": genesis.digest.hex(),
        },
        "actions": actions,
        "entries": entries,
        "takeover": {"signer": "moderator", "seq": takeover.seq, "time_ms": takeover_time,
                     "prev": takeover.prev.hex(), "epoch": takeover.epoch,
                     "encoded": takeover.encoded.hex(), "digest": takeover.digest.hex()},
        "checkpoint": {"seq": checkpoint.seq, "head": checkpoint.head.hex(),
                       "time_ms": after_script, "snapshot": checkpoint.snapshot.hex(),
                       "encoded": checkpoint.encoded.hex(), "digest": checkpoint.digest.hex(),
                       "state_digest": state_digest(_state_at_checkpoint(genesis, entries)).hex()},
        "log": {"head": log.head.hex(), "state_digest": state_digest(log.state).hex(),
                "sequencer": "moderator", "epoch": log.state.epoch,
                "refused": {"encoded": refused.encoded.hex(), "reason": rejection.reason}},
        "seeds": SEEDS,
    }


def _state_at_checkpoint(genesis: Any, entries: list[dict[str, Any]]) -> Any:
    log = RoomLog(genesis)
    for entry in entries:
        log.receive(bytes.fromhex(entry["encoded"]), entry["time_ms"])
    return log.state


def main() -> None:
    vectors = build()
    for name in ("genesis", "actions", "entries", "takeover", "checkpoint", "log"):
        path = HERE / f"{name}.json"
        payload = {"seeds": vectors["seeds"], name: vectors[name]}
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
